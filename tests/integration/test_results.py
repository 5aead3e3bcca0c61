"""Query, load, print and export derived runs stored by a real Tiled server.

Two simulated fly scans (ophyd-async MAXIPIX, HDF5, RunEngine) analysed live
by XSVSCallback into the session's Tiled server, then read back through
``xsvs_bluesky.results`` and the ``results``/``export`` subcommands.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import processed_options
from raw_docs import inline_descriptor

from xsvs_bluesky import cli
from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.results import (
    RECORD_KEYS,
    RunNotFoundError,
    RunResults,
    find_run,
    load_results,
    records,
    search_runs,
)
from xsvs_bluesky.sim import SimMaxipix, SpeckleModel, directory_path_provider
from xsvs_bluesky.sim import xsvs_series as series_plan
from xsvs_bluesky.storage import Catalogs, make_tiled_writer, open_catalogs

pytestmark = pytest.mark.tiled

GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (64, 64))
TIMES_A = [1e-3, 4e-3, 1.6e-2]
TIMES_B = [1e-3, 4e-3]


@dataclass
class Stored:
    cats: Catalogs
    docs_a: list[tuple[str, dict[str, Any]]]
    uid_a: str
    raw_a: str
    uid_b: str
    between: float
    model: SpeckleModel


def _acquire(RE, cats, det, times, frames, sample, **options):
    docs: list[tuple[str, dict[str, Any]]] = []
    cb = XSVSCallback(
        partitions=det.model.partitions(0.0015, 0.0030),
        emit=[make_tiled_writer(cats.processed), lambda n, d: docs.append((n, d))],
        **options,
    )
    token = RE.subscribe(cb)
    try:
        (raw_uid,) = RE(series_plan(det, times, frames, sample_name=sample))
    finally:
        RE.unsubscribe(token)
    return docs, raw_uid


@pytest.fixture(scope="module")
def stored(tiled_server: Catalogs) -> Iterator[Stored]:
    """Two analysed runs: silica (mle, 3 exposures), then latex (moments)."""
    from bluesky import RunEngine
    from ophyd_async.core import init_devices

    name = uuid.uuid4().hex[:10]
    assert tiled_server.external_dir is not None
    cats = open_catalogs(
        tiled_uri=tiled_server.uri,
        api_key=tiled_server.api_key,
        raw=f"raw-{name}",
        processed=f"processed-{name}",
        external_dir=tiled_server.external_dir / name,
    )
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(cats.raw))
    try:
        model = SpeckleModel(geometry=GEO, efficiency_sigma=0.0, seed=5)
        assert cats.external_dir is not None
        with init_devices():
            det = SimMaxipix(
                directory_path_provider(cats.external_dir), model, name="maxipix"
            )
        docs_a, raw_a = _acquire(RE, cats, det, TIMES_A, 80, "silica")
        time.sleep(0.05)
        between = time.time()
        time.sleep(0.05)
        docs_b, _ = _acquire(RE, cats, det, TIMES_B, 40, "latex", estimator="moments")
        yield Stored(
            cats,
            docs_a,
            docs_a[0][1]["uid"],
            raw_a,
            docs_b[0][1]["uid"],
            between,
            model,
        )
    finally:
        loop = RE.loop
        loop.call_soon_threadsafe(loop.stop)
        RE._th.join(timeout=10)
        loop.close()
        cats.close()


def uids(runs: list[Any]) -> list[str]:
    return [r.metadata["start"]["uid"] for r in runs]


def test_search_runs_by_sample_raw_uid_estimator_and_time(stored):
    processed = stored.cats.processed
    a, b = stored.uid_a, stored.uid_b
    assert uids(search_runs(processed)) == [a, b]
    assert uids(search_runs(processed, sample_name="silica")) == [a]
    assert uids(search_runs(processed, sample_name="nothing")) == []
    assert uids(search_runs(processed, original_run_uid=stored.raw_a)) == [a]
    assert uids(search_runs(processed, original_run_uid=stored.raw_a[:8])) == [a]
    assert uids(search_runs(processed, estimator="moments")) == [b]
    assert uids(search_runs(processed, since=stored.between)) == [b]
    assert uids(search_runs(processed, until=stored.between)) == [a]
    iso = datetime.fromtimestamp(stored.between).isoformat()
    assert uids(search_runs(processed, since=iso, estimator="mle")) == []
    assert uids(search_runs(processed, until=iso, sample_name="silica")) == [a]


def test_find_run_latest_partial_and_raw_uid(stored):
    processed = stored.cats.processed
    assert uids([find_run(processed)]) == [stored.uid_b]
    assert uids([find_run(processed, stored.uid_a[:7])]) == [stored.uid_a]
    assert uids([find_run(processed, stored.raw_a)]) == [stored.uid_a]
    with pytest.raises(RunNotFoundError, match="ffffffff"):
        find_run(processed, "ffffffff")
    with pytest.raises(RunNotFoundError, match="too short"):
        find_run(processed, "ab")


def test_loaded_results_equal_the_live_documents(stored):
    res = load_results(find_run(stored.cats.processed, stored.uid_a))
    live = RunResults.from_documents(stored.docs_a)
    assert tuple(res.table.columns) == RECORD_KEYS
    assert res.uid == stored.uid_a and res.raw_uid == stored.raw_a
    assert res.exit_status == "success"
    assert len(res.table) == len(TIMES_A) * res.q.size
    pd.testing.assert_frame_equal(res.table, live.table)
    np.testing.assert_array_equal(res.histograms.values, live.histograms.values)
    np.testing.assert_array_equal(res.trace.values, live.trace.values)
    assert res.images is not None and live.images is not None
    np.testing.assert_array_equal(res.images.values, live.images.values)
    pd.testing.assert_frame_equal(res.dynamics, live.dynamics)
    assert res.metadata == live.metadata
    truth = stored.model.beta_true(res.table["q"], res.table["exposure_time"])
    z = (res.table["beta"] - truth) / res.table["beta_err"]
    assert np.all(np.abs(z) < 4.5), z
    assert records(res.table)[0]["raw_uid"] == stored.raw_a


def test_light_clients_read_the_same_results_without_dask(stored):
    """``open_catalogs(light=True)``: plain containers, numpy, the same numbers."""
    from tiled.client.container import Container

    cats = stored.cats
    with open_catalogs(
        tiled_uri=cats.uri,
        api_key=cats.api_key,
        raw=cats.raw.item["id"],
        processed=cats.processed.item["id"],
        light=True,
    ) as light:
        assert type(light.processed) is Container  # no Bluesky client class
        processed = light.processed
        assert uids([find_run(processed)]) == [stored.uid_b]
        assert uids([find_run(processed, stored.uid_a[:7])]) == [stored.uid_a]
        assert uids([find_run(processed, stored.uid_a)]) == [stored.uid_a]
        assert uids([find_run(processed, stored.raw_a[:9])]) == [stored.uid_a]
        scan_id = stored.docs_a[0][1]["scan_id"]
        found = find_run(processed, str(scan_id))
        assert found.metadata["start"]["scan_id"] == scan_id
        with pytest.raises(RunNotFoundError, match="scan_id 9999"):
            find_run(processed, "9999")
        res = load_results(find_run(processed, stored.uid_a)).fetch()
    full = load_results(find_run(cats.processed, stored.uid_a))
    pd.testing.assert_frame_equal(res.table, full.table)
    pd.testing.assert_frame_equal(res.dynamics, full.dynamics)
    assert res.diffusion == full.diffusion
    for name in ("histograms", "counts", "trace", "images", "intensity"):
        got, want = getattr(res, name), getattr(full, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got.values, want.values)
    assert res.streams.keys() == full.streams.keys()


@pytest.fixture
def run_cli(stored, monkeypatch, capsys):
    """``main([...])`` against the stored catalogs; returns (code, out, err)."""
    where = processed_options(stored.cats)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, *where])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_results_json_equals_the_records(stored, run_cli):
    code, out, _ = run_cli("results", stored.uid_a[:8], "--format", "json")
    assert code == 0
    expected = records(
        load_results(find_run(stored.cats.processed, stored.uid_a)).table
    )
    assert json.loads(out) == expected
    code, out, _ = run_cli("results")  # latest: the latex run
    assert code == 0 and f"derived run {stored.uid_b}" in out
    n_q = load_results(find_run(stored.cats.processed, stored.uid_b)).q.size
    rows = [ln for ln in out.splitlines() if ln[:5] in ("   0 ", "   1 ")]
    assert len(rows) == len(TIMES_B) * n_q


def test_cli_results_dynamics_list_and_missing_run(stored, run_cli):
    code, out, _ = run_cli("results", stored.uid_a, "--dynamics", "--format", "json")
    dyn = json.loads(out)
    assert code == 0 and [d["partition"] for d in dyn] == list(range(len(dyn)))
    assert all(d["gamma"] > 0 for d in dyn)
    code, out, _ = run_cli("results", stored.uid_a, "--dynamics")
    assert code == 0
    head = next(ln for ln in out.splitlines() if ln.strip().startswith("part"))
    assert head.rstrip().endswith("flags")  # the flags column
    assert "; status " in out  # what the D fit says of itself, or why no D
    code, out, _ = run_cli("results", "--list", "--sample", "latex", "--format", "csv")
    listed = pd.read_csv(io.StringIO(out))
    assert code == 0 and list(listed["uid"]) == [stored.uid_b]
    assert list(listed["exposures"]) == [len(TIMES_B)]
    code, out, err = run_cli("results", "0123456789abcdef")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "0123456789abcdef" in err


def test_cli_export_csv_and_hdf5_round_trip(stored, run_cli, tmp_path):
    res = load_results(find_run(stored.cats.processed, stored.uid_a))
    code, out, _ = run_cli(
        "export", stored.uid_a, "--to", "csv", "--out", str(tmp_path / "a.csv")
    )
    assert code == 0 and out.strip() == str(tmp_path / "a.csv")
    back = pd.read_csv(tmp_path / "a.csv", float_precision="round_trip")
    np.testing.assert_array_equal(back["beta"], res.table["beta"])
    assert list(back.columns) == list(RECORD_KEYS)
    code, out, _ = run_cli(
        "export", stored.uid_a, "--to", "hdf5", "--out", str(tmp_path / "a.h5")
    )
    assert code == 0
    with h5py.File(out.strip(), "r") as f:
        np.testing.assert_array_equal(f["entry/beta/beta"], res.matrix("beta"))
        np.testing.assert_array_equal(
            f["entry/histograms/probability_std"], res.histograms_std.values
        )
        assert res.dynamics is not None
        np.testing.assert_array_equal(f["entry/dynamics/beta0"], res.dynamics["beta0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.h5"]


def test_cli_without_data_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    code = cli.main(["results", "--data-dir", str(tmp_path / "empty")])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "holds no Tiled data" in err
    assert not (tmp_path / "empty").exists()  # no server was started there


def test_readers_never_pick_an_open_run_unless_asked(stored):
    """A derived run with a start and no stop (a crash, an outage) is not "the
    result": latest, scan_id and raw-uid look-ups skip it; its own uid finds it."""
    from xsvs_bluesky.results import search_runs

    processed = stored.cats.processed
    start = dict(load_results(find_run(processed, stored.uid_b)).start)
    start.update(uid=str(uuid.uuid4()), time=time.time(), sample_name="unfinished")
    writer = make_tiled_writer(processed)
    writer("start", start)  # never stopped
    assert find_run(processed).metadata["start"]["uid"] == stored.uid_b
    raw_uid = start["original_run_uid"]
    assert find_run(processed, raw_uid).metadata["start"]["uid"] == stored.uid_b
    scan = str(start["scan_id"])
    assert find_run(processed, scan).metadata["start"]["uid"] == stored.uid_b
    assert (
        find_run(processed, start["uid"][:8]).metadata["start"]["uid"] == (start["uid"])
    )  # named: found whatever its status
    latest_any = find_run(processed, any_status=True)
    assert latest_any.metadata["start"]["uid"] == start["uid"]
    every = {r.metadata["start"]["uid"] for r in search_runs(processed)}
    ok = {
        r.metadata["start"]["uid"]
        for r in search_runs(processed, exit_status="success")
    }
    assert start["uid"] in every and start["uid"] not in ok
    assert {stored.uid_a, stored.uid_b} <= ok


def _interleaved_raw_run(frames: np.ndarray) -> list[tuple[str, Any]]:
    """A step scan with inline frames: t_e = 1 ms, then 2 ms, then 1 ms again.

    The third block belongs to the first exposure (same stream, same
    exposure time): the callback writes that exposure's rows a second time.
    """
    from event_model import compose_run

    bundle = compose_run(metadata={"scan_id": 3, "sample_name": "again"})
    docs: list[tuple[str, Any]] = [("start", bundle.start_doc)]
    for t_e, block in ((1e-3, frames[:30]), (2e-3, frames[30:60]), (1e-3, frames[60:])):
        desc = inline_descriptor(bundle, t_e, GEO.shape).descriptor_doc
        docs.append(("descriptor", desc))
        data = {"det_image": list(block)}
        docs.append(
            (
                "event_page",
                {
                    "descriptor": desc["uid"],
                    "uid": [str(uuid.uuid4()) for _ in block],
                    "seq_num": list(range(1, len(block) + 1)),
                    "time": [time.time()] * len(block),
                    "data": data,
                    "timestamps": {"det_image": [0.0] * len(block)},
                    "filled": {},
                },
            )
        )
    docs.append(("stop", bundle.compose_stop()))
    return docs


def test_list_counts_an_exposure_written_twice_once(catalogs, capsys):
    """Rows of an exposure re-written (more frames after it closed) count once."""
    from xsvs_bluesky.core.synthetic import speckle_frames
    from xsvs_bluesky.results import count_exposures

    frames = speckle_frames(90, GEO.shape, 0.5, 0.2, rng=11)
    cb = XSVSCallback(
        geometry=GEO,
        partitions={"q1": 0.0015, "q2": 0.003, "qs": 0.0005, "dq": 0.0002},
        emit=make_tiled_writer(catalogs.processed),
    )
    for name, doc in _interleaved_raw_run(frames):
        cb(name, doc)
    (run,) = search_runs(catalogs.processed)
    n_q = len(run.metadata["start"]["xsvs"]["partitions"]["centers"])
    assert run.metadata["stop"]["num_events"]["results"] == 3 * n_q  # rows
    assert count_exposures(run) == 2
    res = load_results(run)
    assert list(res.n_frames) == [60, 30]  # the rewritten rows supersede
    code = cli.main(
        ["results", "--list", "--format", "json", *processed_options(catalogs)]
    )
    out, _ = capsys.readouterr()
    assert code == 0 and [r["exposures"] for r in json.loads(out)] == [2]


def renamed(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The documents of a derived run under new uids (a second copy of the run)."""
    new: dict[str, str] = {}

    def fresh(old: str) -> str:
        return new.setdefault(old, str(uuid.uuid4()))

    out = []
    for name, doc in docs:
        doc = dict(doc)
        if name in ("start", "descriptor"):
            doc["uid"] = fresh(doc["uid"])
        if "run_start" in doc:
            doc["run_start"] = fresh(doc["run_start"])
        if name in ("event_page", "event") and "descriptor" in doc:
            doc["descriptor"] = fresh(doc["descriptor"])
            if name == "event_page":
                doc["uid"] = [str(uuid.uuid4()) for _ in doc["uid"]]
            else:
                doc["uid"] = str(uuid.uuid4())
        if name == "stop":
            doc["uid"] = str(uuid.uuid4())
        out.append((name, doc))
    return out


def test_export_and_report_of_an_open_or_aborted_run_say_so(stored, run_cli, tmp_path):
    """An open derived run (no stop: a crash mid-analysis, half its pages
    stored) and an aborted one: export and report refuse each in one line
    naming the run, its state and --any-status (exit 2); with --any-status
    export writes what there is."""
    docs = renamed(stored.docs_a)
    pages = [i for i, (n, _) in enumerate(docs) if n == "event_page"]
    cut = pages[len(pages) // 2]  # stops in the middle of the run's pages
    writer = make_tiled_writer(stored.cats.processed)
    for name, doc in docs[:cut]:
        writer(name, doc)
    assert writer.flush(60)  # its pages stored before the next run is written
    open_uid = docs[0][1]["uid"]
    aborted = renamed(stored.docs_a)
    name, stop = aborted[-1]
    assert name == "stop"
    aborted[-1] = ("stop", {**stop, "exit_status": "abort", "reason": "Ctrl-C"})
    writer = make_tiled_writer(stored.cats.processed)
    for name, doc in aborted:
        writer(name, doc)
    abort_uid = aborted[0][1]["uid"]
    for command in (["export", "--to", "csv"], ["export", "--to", "hdf5"], ["report"]):
        for uid, state in ((open_uid, "is still open"), (abort_uid, "'abort': Ctrl-C")):
            out_path = str(tmp_path / f"{uid[:8]}-{command[-1]}")
            code, out, err = run_cli(*command, uid[:8], "--out", out_path)
            assert code == 2 and out == "", err
            assert err.count("\n") == 1 and "Traceback" not in err
            assert f"derived run {uid} " in err and state in err, err
            assert "--any-status" in err
    assert not list(tmp_path.iterdir())  # nothing written
    # --any-status: what there is, as it is
    out_path = str(tmp_path / "open.h5")
    code, out, err = run_cli(
        "export", open_uid, "--to", "hdf5", "--any-status", "--out", out_path
    )
    assert code == 0 and out.strip() == out_path, err
    with h5py.File(out_path, "r") as f:
        assert f["entry/exit_status"][()] == b""  # open: no stop document
        assert 0 < f["entry/beta/beta"].shape[0] < len(TIMES_A)
    code, out, _ = run_cli(
        "export", abort_uid, "--to", "csv", "--any-status", "--out", str(tmp_path / "x")
    )
    assert code == 0
    back = pd.read_csv(out.strip(), float_precision="round_trip")
    res = load_results(find_run(stored.cats.processed, stored.uid_a))
    np.testing.assert_array_equal(back["beta"], res.table["beta"])
    # listed with their state; an open run says so
    code, out, _ = run_cli("results", "--list", "--format", "json")
    status = {r["uid"]: r["exit_status"] for r in json.loads(out)}
    assert status[open_uid] is None and status[abort_uid] == "abort"
    code, out, _ = run_cli("results", "--list")
    rows = out.splitlines()
    assert any(ln.startswith(open_uid[:8]) and ln.endswith("open") for ln in rows)
