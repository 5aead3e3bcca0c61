"""The raw-run writer of a replay against ``bluesky_tiled_plugins.TiledWriter``.

A replay of the small synthetic series (``legacy_series.write_series``, 3
exposures of 40 frames, 16 frames per StreamDatum) writes its raw run with
:mod:`xsvs_bluesky.storage._raw_writer`; the same documents, given to
TiledWriter 2.0 (as the replay did before), go to a second catalog of the
session's server.  The two runs must be the same node by node (keys,
structure family, specs, metadata, data sources: structure, parameters,
mimetype, assets), the frames read back the same (and equal the HDF5
files), and a re-analysis of either gives the same numbers.  Also: the
writer's requests per run, Events (the table and array nodes TiledWriter
makes for them), and that a replay's process imports neither
``bluesky_tiled_plugins`` nor dask.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import fresh_catalogs
from legacy_series import write_series

import xsvs_bluesky
from xsvs_bluesky.reanalyze import reanalyze
from xsvs_bluesky.replay import LegacyReplay, stream_names
from xsvs_bluesky.replay._feed import ExposureFeed
from xsvs_bluesky.storage import make_tiled_writer

pytestmark = pytest.mark.tiled

Doc = tuple[str, dict[str, Any]]


def tiled_writer(container: Any, batch_size: int = 1_000_000) -> Any:
    """TiledWriter as the replay configured it before (one write at the stop)."""
    from bluesky_tiled_plugins import TiledWriter

    return TiledWriter(container, batch_size=batch_size, max_array_size=0)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series(tmp_path_factory.mktemp("legacy"))


@pytest.fixture(scope="module")
def replayed(tiled_server: Any, series: Path) -> Any:
    """One replay (new writer) and its documents also written by TiledWriter."""
    docs: list[Doc] = []
    with fresh_catalogs(tiled_server) as cats, fresh_catalogs(tiled_server) as old:
        job = LegacyReplay(series, frames_per_datum=16)
        result = job.run(
            cats, extra_targets=[lambda n, d: docs.append((n, copy.deepcopy(d)))]
        )
        writer = tiled_writer(old.raw)
        for name, doc in docs:
            writer(name, copy.deepcopy(doc))
        yield cats, old, result, docs


def _container(node: Any) -> Any:
    return getattr(node, "base", node)  # a composite's own nodes


def _data_sources(node: Any) -> list[dict[str, Any]]:
    """The node's data sources; asset paths from the run's folder on.

    Data Tiled writes itself (the Event table and arrays) lies in a folder
    named by the catalog, which differs between the two catalogs; the Event
    rows of a table have an id there, left out as uids are.
    """
    run = node.path_parts[-3] if len(node.path_parts) >= 3 else ""
    out = []
    for source in node.data_sources():
        item = asdict(source)
        item.pop("id")
        item["parameters"].pop("dataset_id", None)  # the rows' id in a SQL table
        item["assets"] = [
            {**a, "id": None, "data_uri": a["data_uri"].split(f"/{run}/")[-1]}
            if item["management"] == "writable"
            else {**a, "id": None}
            for a in item["assets"]
        ]
        out.append(item)
    return out


def assert_same_nodes(new: Any, old: Any, path: str = "") -> int:
    """Compare two Tiled subtrees node by node; return the nodes compared."""
    a, b = new.item["attributes"], old.item["attributes"]
    for key in ("structure_family", "specs", "metadata", "structure"):
        assert a.get(key) == b.get(key), (path, key)
    if a["structure_family"] != "container":
        for one, other in zip(_data_sources(new), _data_sources(old), strict=True):
            for key in one:
                assert one[key] == other[key], (path, key)
        return 1
    new, old = _container(new), _container(old)
    assert list(new) == list(old), path
    return 1 + sum(assert_same_nodes(new[k], old[k], f"{path}/{k}") for k in new)


def test_replayed_raw_run_equals_tiled_writers_node_by_node(replayed, series):
    cats, old, result, _ = replayed
    new_run, old_run = cats.raw[result.raw_uid], old.raw[result.raw_uid]
    assert list(new_run) == stream_names(3)
    assert assert_same_nodes(new_run, old_run) == 1 + 3 * 2
    node = _container(new_run["exposure_1"])["maxipix"]
    (source,) = node.data_sources()
    assert source.mimetype == "application/x-hdf5"
    assert source.parameters == {
        "dataset": "/entry/data/data",
        "swmr": True,
        "locking": None,
    }
    assert source.structure["shape"] == [40, 1, 32, 40]
    (asset,) = source.assets
    assert asset.data_uri.endswith(f"/{result.raw_uid}/exposure_1.h5")
    assert new_run.metadata["stop"]["exit_status"] == "success"


def test_frames_read_back_identical_to_tiled_writers_and_the_files(replayed):
    cats, old, result, _ = replayed
    new_run, old_run = cats.raw[result.raw_uid], old.raw[result.raw_uid]
    for stream, path in zip(stream_names(3), result.files, strict=True):
        frames = new_run[stream]["maxipix"].read()
        np.testing.assert_array_equal(frames, old_run[stream]["maxipix"].read())
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(frames[:, 0], f["/entry/data/data"][()])


def _requests() -> tuple[collections.Counter[str], Any]:
    """Count the HTTP requests of this process by method (restore: call it)."""
    import httpx

    counts: collections.Counter[str] = collections.Counter()
    send = httpx.Client.send

    def counting(client: Any, request: Any, **kwargs: Any) -> Any:
        counts[request.method] += 1
        return send(client, request, **kwargs)

    httpx.Client.send = counting  # type: ignore[method-assign,assignment]

    def restore() -> None:
        httpx.Client.send = send  # type: ignore[method-assign]

    return counts, restore


def test_one_registration_per_exposure_and_no_data_source_update(
    tiled_server, replayed
):
    _, _, result, docs = replayed
    with fresh_catalogs(tiled_server) as cats:
        writer = make_tiled_writer(cats.raw, batch_size=1_000_000)
        feed = ExposureFeed(writer)  # as the replay: one StreamDatum per exposure
        counts, restore = _requests()
        try:
            for name, doc in docs:
                feed(name, copy.deepcopy(doc))
        finally:
            restore()
        assert writer._tiled_writer is None  # no TiledWriter was made
        # start, a stream node and a registration per exposure, stop, its close
        assert counts == {"POST": 1 + 3 + 3, "PATCH": 1, "DELETE": 1}
        stop = cats.raw[result.raw_uid].metadata["stop"]
        assert stop["exit_status"] == "success"


def test_more_stream_datum_of_a_registered_key_update_its_data_source(
    tiled_server, replayed
):
    """Documents not joined per exposure (a backup of another writer): same run."""
    cats0, _, result, docs = replayed
    with fresh_catalogs(tiled_server) as cats:
        writer = make_tiled_writer(cats.raw)
        for name, doc in docs:
            writer(name, copy.deepcopy(doc))
        assert writer._tiled_writer is None
        assert_same_nodes(cats.raw[result.raw_uid], cats0.raw[result.raw_uid])


def _with_events(docs: list[Doc]) -> list[Doc]:
    """The run's documents plus a stream of Events (scalars and small arrays)."""
    from event_model import compose_descriptor

    start: Any = docs[0][1]
    bundle = compose_descriptor(
        start=start,
        streams={},
        event_counters={},
        name="baseline",
        data_keys={
            "temperature": {"source": "sim", "dtype": "number", "shape": []},
            "counts": {"source": "sim", "dtype": "integer", "shape": []},
            "roi": {
                "source": "sim",
                "dtype": "array",
                "shape": [4],
                "dtype_numpy": "<f8",
            },
            "label": {"source": "sim", "dtype": "string", "shape": []},
        },
        object_keys={"sim": ["temperature", "counts", "roi", "label"]},
    )
    descriptor = bundle.descriptor_doc
    events = [
        bundle.compose_event(
            data={
                "temperature": 20.0 + i,
                "counts": 10 * i,
                "roi": np.arange(4.0) + i,
                "label": f"point {i}",
            },
            timestamps=dict.fromkeys(("temperature", "counts", "roi", "label"), 1e9),
            seq_num=i + 1,
        )
        for i in range(3)
    ]
    # the stream's configuration changes: a second descriptor, then a page
    again = compose_descriptor(
        start=start,
        streams={},
        event_counters={},
        name="baseline",
        data_keys=descriptor["data_keys"],
        object_keys=descriptor["object_keys"],
        configuration={
            "sim": {
                "data": {"sim-gain": 2.0},
                "timestamps": {"sim-gain": 1e9},
                "data_keys": {
                    "sim-gain": {"source": "sim", "dtype": "number", "shape": []}
                },
            }
        },
    )
    page = again.compose_event_page(
        data={
            "temperature": [23.0, 24.0],
            "counts": [30, 40],
            "roi": [np.arange(4.0) + 3, np.arange(4.0) + 4],
            "label": ["point 3", "point 4"],
        },
        timestamps={k: [1e9, 1e9] for k in ("temperature", "counts", "roi", "label")},
        seq_num=[4, 5],
    )
    out = list(docs[:-1]) + [("descriptor", dict(descriptor))]
    out += [("event", dict(e)) for e in events]
    out += [("descriptor", dict(again.descriptor_doc)), ("event_page", dict(page))]
    return [*out, docs[-1]]


def test_event_streams_are_stored_as_tiled_writer_stores_them(tiled_server, replayed):
    _, _, result, docs = replayed
    docs = _with_events(docs)
    with fresh_catalogs(tiled_server) as new, fresh_catalogs(tiled_server) as old:
        writer = make_tiled_writer(new.raw, batch_size=2)
        reference = tiled_writer(old.raw, batch_size=2)  # rows: 2, then 1
        for name, doc in docs:
            writer(name, copy.deepcopy(doc))
            reference(name, copy.deepcopy(doc))
        assert writer._tiled_writer is None
        new_run, old_run = new.raw[result.raw_uid], old.raw[result.raw_uid]
        assert assert_same_nodes(new_run, old_run) == 1 + 3 * 2 + 3
        baseline = _container(new_run["baseline"])
        table = baseline["internal"].read()
        assert list(table["temperature"]) == [20.0, 21.0, 22.0, 23.0, 24.0]
        assert list(table["label"]) == [f"point {i}" for i in range(5)]
        roi = baseline["roi"].read()
        np.testing.assert_array_equal(roi, np.arange(4.0) + np.arange(5)[:, None])
        (update,) = baseline.metadata["_config_updates"]
        assert update["configuration"]["sim"]["data"] == {"sim-gain": 2.0}


def test_reanalysis_of_the_new_run_gives_the_old_runs_results(replayed):
    cats, old, result, _ = replayed
    new = reanalyze(cats, result.raw_uid)
    before = reanalyze(old, result.raw_uid)
    assert new.exit_status == before.exit_status == "success"
    assert len(new.results) == len(before.results) == 3
    for a, b, c in zip(new.results, before.results, result.results, strict=True):
        for name in ("beta", "beta_err", "kbar"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            np.testing.assert_allclose(getattr(a, name), getattr(c, name), rtol=1e-12)


_REPORT = """
import json, sys
from xsvs_bluesky.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {
    "bluesky_tiled_plugins", "dask", "xarray", "pandas"})
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_a_replay_process_imports_no_bluesky_tiled_plugins_dask_or_pandas(
    tiled_server, series
):
    name = uuid.uuid4().hex[:10]
    package = str(Path(xsvs_bluesky.__file__).parents[1])
    env = dict(os.environ, TILED_API_KEY=tiled_server.api_key)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package, os.environ.get("PYTHONPATH", "")) if p
    )
    command = [
        sys.executable,
        "-c",
        _REPORT,
        "replay",
        str(series),
        "--no-progress",
        "--format",
        "json",
        "--tiled-uri",
        tiled_server.uri,
        "--raw-catalog",
        f"raw-{name}",
        "--processed-catalog",
        f"processed-{name}",
        "--output-dir",
        str(tiled_server.external_dir / name),
        "--backup-dir",
        str(tiled_server.backup_dir / name),
    ]
    t0 = time.monotonic()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, (report, time.monotonic() - t0)
