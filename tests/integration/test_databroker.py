"""databroker 2 over our catalogs, and our reanalysis of a run kept in MongoDB.

Two ways a databroker user meets xsvs-bluesky (docs/how-to/databroker.md):

- databroker's v1 API (``databroker.v1.Broker``) over the CatalogOfBlueskyRuns
  containers our commands write: ``db[-1]``, ``db(sample_name=...)``,
  ``header.table("results")`` of a derived run;
- a raw run kept in MongoDB, served by a real ``tiled serve config`` process
  through databroker's ``MongoAdapter`` (mongomock-backed: no MongoDB server
  can run here), analysed again by ``xsvs-bluesky reanalyze --tiled-uri``;
  its derived runs go to a SQL catalog served by the same server.

The MongoDB run is the synthetic series of ``test_replay`` (known contrast
0.25) with its frames referenced as an ophyd area detector did before
StreamResource: Resource (spec ``AD_HDF5``) and one Datum per frame, posted
through the v1 shim's ``insert`` as a RunEngine subscribed to ``db.insert``
would.  databroker is in the ``dev`` extra only; without it these tests are
skipped with the reason, unless the environment variable ``CI`` is set.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h5py
import hdf5plugin
import numpy as np
import pytest
from helpers import close_pipes, drain, free_port
from legacy_series import BETA, N_FRAMES, TIMES, write_series
from test_replay import fresh_catalogs, run_cli

from xsvs_bluesky.callback import uri_to_path
from xsvs_bluesky.reanalyze import fetch_documents
from xsvs_bluesky.replay import LegacyReplay
from xsvs_bluesky.results import load_results

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVER_MEMORY = 4 << 30  # address-space cap of the Tiled server process, bytes
NUMERIC = ("q", "exposure_time", "kbar", "beta", "beta_err", "n_frames", "partition")


def _missing() -> str | None:
    for module in ("databroker.v1", "databroker.mongo_normalized", "mongomock"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return (
                f"{module} is not installed (pip install -e '.[dev]' installs "
                "databroker 2 and mongomock)"
            )
    return None


@pytest.fixture(scope="module", autouse=True)
def _databroker() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the databroker tests must run, but: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def replayed(tiled_server, tmp_path_factory):
    """The synthetic series replayed into fresh SQL catalogs (raw + derived)."""
    ini = write_series(tmp_path_factory.mktemp("legacy"))
    with fresh_catalogs(tiled_server) as cats:
        result = LegacyReplay(ini, frames_per_datum=16).run(cats)
        yield cats, result


# ------------------------------------------------------- v1 over our catalogs
def test_v1_broker_finds_our_runs_and_tables_the_results(replayed):
    from databroker.v1 import Broker

    cats, result = replayed
    (derived_uid,) = result.derived_uids
    db = Broker(cats.processed)
    header = db[-1]
    assert header.start["uid"] == derived_uid
    assert header.start["original_run_uid"] == result.raw_uid
    assert "results" in header.stream_names and "dynamics" in header.stream_names
    assert [h.start["uid"] for h in db(sample_name="latex_")] == [derived_uid]
    assert list(db(sample_name="no such sample")) == []
    estimator = header.start["xsvs"]["estimator"]
    assert [h.start["uid"] for h in db(**{"xsvs.estimator": estimator})] == [
        derived_uid
    ]
    assert [h.start["uid"] for h in db(since="2000-01-01")] == [derived_uid]
    assert list(db(until="2000-01-01")) == []
    assert cats.processed.v1[-1].start["uid"] == derived_uid  # the same shim

    table = header.table("results")
    assert len(table) == len(TIMES) * 3  # 3 exposures x 3 partitions
    for column in NUMERIC:
        assert np.issubdtype(table[column].dtype, np.number), column
    ours = load_results(cats.processed[derived_uid]).table
    got = table.sort_values(["exposure_index", "partition"]).reset_index(drop=True)
    want = ours.sort_values(["exposure", "partition"]).reset_index(drop=True)
    for column in ("q", "exposure_time", "beta", "beta_err", "kbar", "n_frames"):
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy())
    assert np.all(np.abs(got["beta"] - BETA) < 4.5 * got["beta_err"])
    dynamics = header.table("dynamics")
    assert np.issubdtype(dynamics["gamma"].dtype, np.floating)
    assert np.issubdtype(dynamics["flags"].dtype, np.integer)


def test_v1_broker_on_raw_runs_gives_frames_only_when_filled(replayed):
    from databroker.v1 import Broker

    cats, result = replayed
    raw = Broker(cats.raw)
    header = raw[-1]
    assert header.start["uid"] == result.raw_uid
    assert raw[result.raw_uid[:8]] == header
    assert raw[header.start["scan_id"]] == header
    assert [h.start["uid"] for h in raw(sample_name="latex_")] == [result.raw_uid]
    assert list(header.table("exposure_0").columns) == ["time"]  # frames external
    assert len(header.table("exposure_0")) == 0  # without fill: nothing
    frames = np.stack(header.table("exposure_0", fill=True)["maxipix"].to_list())
    dataset = header.xarray("exposure_0")
    np.testing.assert_array_equal(dataset["maxipix"].to_numpy(), frames)
    names = [name for name, _ in header.documents()]
    assert {"stream_resource", "stream_datum"} <= set(names)
    np.testing.assert_array_equal(
        frames.reshape(-1, *frames.shape[-2:]), file_frames(cats, result, 0)
    )


def file_frames(cats: Any, result: Any, exposure: int) -> np.ndarray:
    """Frames of one exposure read from the replay's HDF5 file with h5py."""
    docs = fetch_documents(cats.raw[result.raw_uid])
    (desc,) = [
        d["uid"]
        for n, d in docs
        if n == "descriptor" and d["name"] == f"exposure_{exposure}"
    ]
    (res,) = {
        d["stream_resource"]
        for n, d in docs
        if n == "stream_datum" and d["descriptor"] == desc
    }
    (uri,) = [d["uri"] for n, d in docs if n == "stream_resource" and d["uid"] == res]
    assert hdf5plugin  # imported: it decodes the replay's Blosc frames
    with h5py.File(uri_to_path(uri), "r", swmr=True) as f:
        return np.asarray(f["/entry/data/data"][:])


# --------------------------------------- a raw run in MongoDB, served by Tiled
BEAMLINE_ROOT = "/beamline/xsvs"  # where the detector wrote, as the run says
JSON_SEQ = "bluesky_tiled_plugins.exporters:json_seq_exporter"
Doc = tuple[str, Any]


@dataclass
class MongoServer:
    """A ``tiled serve config`` process: two MongoDB catalogs and one SQL."""

    proc: subprocess.Popen[str]
    uri: str
    api_key: str
    out: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.out)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SERVER_MEMORY, SERVER_MEMORY))


def tiled_config(root: Path, api_key: str, files: Path) -> str:
    """Tiled's configuration: the layout docs/how-to/databroker.md recommends.

    ``/here`` and ``/elsewhere`` are MongoDB catalogs (mongomock here; at a
    facility ``MongoAdapter.from_uri`` with ``uri: mongodb://HOST/DB``);
    ``/elsewhere`` maps the detector's folder ``BEAMLINE_ROOT``, which this
    host does not have, to ``files``.  ``/xsvs`` is the SQL catalog our
    derived runs go to.
    """
    mongo = "databroker.mongo_normalized:MongoAdapter.from_mongomock"
    config = {
        "authentication": {"single_user_api_key": api_key},
        "trees": [
            {"path": "/here", "tree": mongo},
            {
                "path": "/elsewhere",
                "tree": mongo,
                "args": {"root_map": {BEAMLINE_ROOT: str(files)}},
            },
            {
                "path": "/xsvs",
                "tree": "catalog",
                "args": {
                    "uri": f"sqlite:///{root / 'catalog.db'}",
                    "writable_storage": [
                        str(root / "data"),
                        f"duckdb:///{root / 'tables.duckdb'}",
                    ],
                    "init_if_not_exists": True,
                },
            },
        ],
        "media_types": {"BlueskyRun": {"application/json-seq": JSON_SEQ}},
    }
    return json.dumps(config, indent=2)  # JSON is YAML


@pytest.fixture(scope="module")
def mongo_server(tmp_path_factory, tiled_server) -> Iterator[MongoServer]:
    root = tmp_path_factory.mktemp("mongo-tiled")
    (root / "data").mkdir()
    api_key = uuid.uuid4().hex
    config = root / "config.yml"
    config.write_text(tiled_config(root, api_key, tiled_server.external_dir))
    config.chmod(0o600)
    port = free_port()
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiled", "serve", "config", str(config)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_cap_memory,
    )
    server = MongoServer(proc, f"http://127.0.0.1:{port}/api/v1", api_key)
    drains = drain(proc, server.out)  # stderr goes to stdout
    import httpx

    deadline = time.monotonic() + 240
    with httpx.Client(trust_env=False) as client:
        while True:
            assert proc.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            try:
                if client.get(f"http://127.0.0.1:{port}/healthz").is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        close_pipes(proc, drains)


def legacy_documents(docs: list[Doc], root: str, files: Path) -> list[Doc]:
    """The replayed run as an ophyd area detector recorded it before StreamResource.

    Each StreamResource becomes a Resource (spec ``AD_HDF5``, the file's path
    relative to ``files`` under ``root``), each frame a Datum
    (``point_number``) referenced by one Event; pages keep the requests few.
    """
    from event_model import compose_resource, pack_datum_page, pack_event_page

    out: list[Doc] = []
    resources: dict[str, Any] = {}
    for name, doc in docs:
        if name == "descriptor":
            doc = copy.deepcopy(doc)
            for data_key in doc["data_keys"].values():
                if str(data_key.get("external", "")).startswith("STREAM"):
                    data_key["external"] = "FILESTORE:"
            out.append((name, doc))
        elif name == "stream_resource":
            path = uri_to_path(doc["uri"]).relative_to(files)
            bundle = compose_resource(
                start=cast(Any, {"uid": doc["run_start"]}),
                spec="AD_HDF5",
                root=root,
                resource_path=str(path),
                resource_kwargs={"frame_per_point": 1},
            )
            resources[doc["uid"]] = (bundle.compose_datum, doc["data_key"])
            out.append(("resource", bundle.resource_doc))
        elif name == "stream_datum":
            compose_datum, key = resources[doc["stream_resource"]]
            lo, hi = doc["indices"]["start"], doc["indices"]["stop"]
            datums = [
                compose_datum(datum_kwargs={"point_number": i}) for i in range(lo, hi)
            ]
            events = [
                {
                    "uid": str(uuid.uuid4()),
                    "descriptor": doc["descriptor"],
                    "seq_num": i + 1,
                    "time": time.time(),
                    "data": {key: d["datum_id"]},
                    "timestamps": {key: time.time()},
                    "filled": {key: False},
                }
                for i, d in zip(range(lo, hi), datums, strict=True)
            ]
            out.append(("datum_page", pack_datum_page(*datums)))
            out.append(("event_page", pack_event_page(*events)))  # type: ignore[arg-type]
        else:
            out.append((name, doc))
    return out


@pytest.fixture(scope="module")
def mongo_runs(replayed, mongo_server, tiled_server):
    """The replayed raw run posted into both MongoDB catalogs (v1 ``insert``)."""
    from databroker.v1 import Broker
    from tiled.client import from_uri

    cats, result = replayed
    docs = fetch_documents(cats.raw[result.raw_uid])
    files = tiled_server.external_dir
    client = from_uri(mongo_server.uri, api_key=mongo_server.api_key)
    for tree, root in (("here", str(files)), ("elsewhere", BEAMLINE_ROOT)):
        db = Broker(client[tree])
        for name, doc in legacy_documents(docs, root, files):
            db.insert(name, doc)
    try:
        yield cats, result, client
    finally:
        client.context.close()


def reanalyze_cli(
    server: MongoServer, raw: str, catalog: str, *extra: str
) -> tuple[int, str, str]:
    return run_cli(
        "reanalyze",
        raw,
        "--tiled-uri",
        server.uri,
        "--api-key",
        server.api_key,
        "--raw-catalog",
        catalog,
        "--processed-catalog",
        "xsvs/processed",
        "--format",
        "json",
        "--no-progress",
        *extra,
    )


def same_results(records: list[dict[str, Any]], cats: Any, derived_uid: str) -> None:
    """The records equal those of the replay's own analysis of the same frames."""
    want = load_results(cats.processed[derived_uid]).table
    want = want.sort_values(["exposure", "partition"])
    got = sorted(records, key=lambda r: (r["exposure"], r["partition"]))
    for key in ("exposure_time", "q", "n_frames", "kbar", "beta", "beta_err"):
        np.testing.assert_allclose(
            [r[key] for r in got], want[key].to_numpy(), rtol=1e-12, err_msg=key
        )


def test_reanalyze_a_raw_run_kept_in_mongodb(mongo_runs, mongo_server):
    from databroker.v1 import Broker

    cats, result, client = mongo_runs
    raw = client["here"][result.raw_uid]
    assert "BlueskyRun" in {spec.name for spec in raw.specs}
    names = {name for name, _ in raw.documents()}
    assert {"resource", "datum_page", "event_page"} <= names  # stored as sent
    code, out, err = reanalyze_cli(mongo_server, result.raw_uid[:8], "here")
    assert code == 0, err
    records = json.loads(out)
    assert [r["n_frames"] for r in records[::3]] == [N_FRAMES] * len(TIMES)
    assert {r["raw_uid"] for r in records} == {result.raw_uid}
    same_results(records, cats, result.derived_uids[0])
    beta = np.array([r["beta"] for r in records])
    assert np.all(
        np.abs(beta - BETA) < 4.5 * np.array([r["beta_err"] for r in records])
    )
    # the derived run is in the SQL catalog of the same server, for v1 too
    header = Broker(client["xsvs"]["processed"])[-1]
    assert header.start["uid"] == records[0]["run_uid"]
    assert header.start["original_run_uid"] == result.raw_uid
    table = header.table("results")
    for column in NUMERIC:
        assert np.issubdtype(table[column].dtype, np.number), column


def test_frames_not_on_this_host_are_read_through_tiled(mongo_runs, mongo_server):
    cats, result, client = mongo_runs
    start = client["elsewhere"][result.raw_uid]
    resources = [d for n, d in start.documents() if n == "resource"]
    assert {d["root"] for d in resources} == {BEAMLINE_ROOT}
    assert not Path(BEAMLINE_ROOT).exists()
    code, out, err = reanalyze_cli(
        mongo_server, result.raw_uid, "elsewhere", "--frames", "file"
    )
    assert code == 2 and out == ""
    assert "not readable here" in err and BEAMLINE_ROOT in err
    code, out, err = reanalyze_cli(mongo_server, result.raw_uid, "elsewhere")
    assert code == 0, err
    same_results(json.loads(out), cats, result.derived_uids[0])
