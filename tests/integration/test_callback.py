"""XSVSCallback on a real RunEngine, simulated MAXIPIX detectors and Tiled.

Fixtures ``RE`` (raw runs already go to ``catalogs.raw``) and ``catalogs``
come from ``tests/integration/conftest.py``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiled.queries import Key

from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.results import RunResults, load_results
from xsvs_bluesky.sim import (
    InlineMaxipix,
    SimMaxipix,
    SpeckleModel,
    directory_path_provider,
    xsvs_series,
)
from xsvs_bluesky.storage import make_tiled_writer

pytestmark = pytest.mark.tiled

GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (64, 64))
TIMES = [1e-3, 4e-3, 1.6e-2]
Docs = list[tuple[str, dict[str, Any]]]


def recorder() -> tuple[Docs, Any]:
    docs: Docs = []
    return docs, lambda name, doc: docs.append((name, doc))


def fly_detector(directory: Path, efficiency_sigma: float = 0.1) -> SimMaxipix:
    from ophyd_async.core import init_devices

    model = SpeckleModel(geometry=GEO, efficiency_sigma=efficiency_sigma, seed=3)
    with init_devices():
        det = SimMaxipix(directory_path_provider(directory), model, name="maxipix")
    return det


def z_scores(data: dict[str, Any], model: SpeckleModel, t_e: float) -> np.ndarray:
    truth = model.beta_true(np.asarray(data["q"]), t_e)
    return (np.asarray(data["beta"]) - truth) / np.asarray(data["beta_err"])


def check_truth(results: list[dict[str, Any]], model: SpeckleModel) -> None:
    z = np.concatenate(
        [z_scores(r, model, t) for r, t in zip(results, TIMES, strict=True)]
    )
    assert np.all(np.abs(z) < 4.5), z
    assert np.mean(np.abs(z) < 1) > 0.45, z  # errors cover the truth ~68%


def test_fly_scan_results_in_tiled_agree_with_truth(RE, catalogs):
    det = fly_detector(catalogs.external_dir)
    model = det.model
    parts = model.partitions(0.0015, 0.0030)  # single rings: exact truth
    raw_docs, raw_record = recorder()
    writer = make_tiled_writer(catalogs.processed)
    cb = XSVSCallback(
        partitions=parts, flat_field=("efficiency", model.efficiency), emit=writer
    )
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        RE(xsvs_series(det, TIMES, 200, sample_name="latex"))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    kinds = Counter(name for name, _ in raw_docs)
    assert kinds["event"] == 0 and kinds["stream_datum"] >= 3  # a fly scan
    raw_uid = raw_docs[0][1]["uid"]
    assert raw_uid in catalogs.raw
    found = catalogs.processed.search(Key("original_run_uid") == raw_uid)
    assert len(found) == 1
    run = found.values().first()
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert start["plan_name"] == "xsvs_analysis" and start["sample_name"] == "latex"
    assert start["xsvs"]["estimator"] == "mle-weighted"
    assert stop["exit_status"] == "success"
    res = load_results(run)
    keys = ("q", "beta", "beta_err")
    results = [{k: res.matrix(k)[i] for k in keys} for i in range(3)]
    for i, t_e in enumerate(TIMES):
        results[i]["exposure_time"] = t_e
    np.testing.assert_allclose(res.exposure_times, TIMES)
    assert list(res.n_frames) == [200, 200, 200]
    raw_streams = run["results"].read()["raw_stream"].values
    assert sorted(set(raw_streams)) == ["exposure_0", "exposure_1", "exposure_2"]
    check_truth(results, model)
    assert res.histograms.shape[:2] == (3, len(parts))
    assert res.images is not None and res.images.shape == (3, *GEO.shape)


def test_step_scan_with_inline_frames(RE):
    model = SpeckleModel(geometry=GEO, efficiency_sigma=0.0, seed=4)
    det = InlineMaxipix(model, name="maxipix")
    parts = model.partitions(0.0015, 0.0030)
    out, record = recorder()
    raw, raw_record = recorder()
    cb = XSVSCallback(partitions=parts, emit=record)
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        RE(xsvs_series(det, TIMES, 100, sample_name="latex", fly=False))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    assert Counter(n for n, _ in raw)["event"] == 300
    res = RunResults.from_documents(out)
    assert list(res.exposure_times) == TIMES
    results = [
        {k: res.matrix(k)[i] for k in ("q", "beta", "beta_err")} for i in range(3)
    ]
    check_truth(results, model)


def test_analysis_exception_lets_the_scan_finish_and_fails_the_derived_run(
    RE, catalogs
):
    det = fly_detector(catalogs.external_dir, efficiency_sigma=0.0)
    small = Geometry(1.53, 2140.0, 0.055, 16.5, 16.5, (32, 32))
    cb = XSVSCallback(
        geometry=small,
        partitions={"q1": 0.001, "q2": 0.002, "qs": 0.0005, "dq": 0.0002},
        detector_key="maxipix",  # 64x64 frames: every update raises
        emit=make_tiled_writer(catalogs.processed),
    )
    raw, raw_record = recorder()
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        RE(xsvs_series(det, TIMES[:2], 20, sample_name="broken"))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    assert raw[-1][0] == "stop" and raw[-1][1]["exit_status"] == "success"
    found = catalogs.processed.search(Key("original_run_uid") == raw[0][1]["uid"])
    stop = found.values().first().metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "GeometryError" in stop["reason"]


def test_a_derived_run_is_never_reanalysed(RE, catalogs):
    det = fly_detector(catalogs.external_dir, efficiency_sigma=0.0)
    parts = det.model.partitions(0.0015, 0.0030)
    cb = XSVSCallback(partitions=parts, emit=make_tiled_writer(catalogs.processed))
    cb.emit_targets.append(cb)  # its own output comes straight back
    raw, raw_record = recorder()
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        RE(xsvs_series(det, TIMES[:1], 30, sample_name="loop"))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    raw_uid = raw[0][1]["uid"]
    found = catalogs.processed.search(Key("original_run_uid") == raw_uid)
    assert len(found) == 1
    derived_uid = found.values().first().metadata["start"]["uid"]
    assert len(catalogs.processed.search(Key("original_run_uid") == derived_uid)) == 0
    assert list(cb.records) == [raw_uid]


def test_ophyd_async_step_scan_reads_one_datum_per_event(RE, catalogs):
    det = fly_detector(catalogs.external_dir, efficiency_sigma=0.0)
    parts = det.model.partitions(0.0015, 0.0030)
    out, record = recorder()
    raw, raw_record = recorder()
    cb = XSVSCallback(partitions=parts, emit=record)
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        RE(xsvs_series(det, TIMES[:2], 100, sample_name="step", fly=False))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    kinds = Counter(n for n, _ in raw)
    assert kinds["event"] == kinds["stream_datum"] == 200
    res = RunResults.from_documents(out)
    keys = ("q", "beta", "beta_err", "exposure_time")
    results = [
        {k: res.table[k].to_numpy().reshape(2, -1)[i] for k in keys} for i in range(2)
    ]
    for r in results:
        r["exposure_time"] = float(r["exposure_time"][0])
    assert list(res.n_frames) == [100, 100]
    z = np.concatenate(
        [z_scores(r, det.model, t) for r, t in zip(results, TIMES, strict=False)]
    )
    assert np.all(np.abs(z) < 4.5), z


def test_results_stream_reads_as_one_dataset_with_no_warning(RE, catalogs):
    det = fly_detector(catalogs.external_dir, efficiency_sigma=0.0)
    parts = det.model.partitions(0.0015, 0.0030)
    cb = XSVSCallback(partitions=parts, emit=make_tiled_writer(catalogs.processed))
    raw, raw_record = recorder()
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        RE(xsvs_series(det, TIMES[:2], 30, sample_name="dims"))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    found = catalogs.processed.search(Key("original_run_uid") == raw[0][1]["uid"])
    run = found.values().first()
    n_q = len(parts)
    # layout 2: rows of scalars; warnings are errors in this test suite
    table = run["results"].read()
    assert table.sizes["time"] == 2 * n_q
    assert list(table["n_frames"].values) == [30] * (2 * n_q)
    np.testing.assert_allclose(
        np.unique(table["exposure_time"].values), sorted(TIMES[:2])
    )
    hist = run["histograms"].read()
    counts = hist["counts"].values.reshape(-1)
    for e in range(2):
        for j in range(n_q):
            rows = (hist["exposure_index"].values == e) & (
                hist["partition"].values == j
            )
            n_pix = table["n_pixels"].values[
                (table["exposure_index"].values == e) & (table["partition"].values == j)
            ]
            assert counts[rows].sum() == n_pix[0] * 30  # every pixel, every frame
    images = run["images"].read()
    assert images["mean_image"].dims == ("time", "col")
    assert images["mean_image"].shape == (2 * GEO.shape[0], GEO.shape[1])
    run["trace"].read()


def test_hostile_start_documents_fail_their_derived_runs_and_the_scan_goes_on(RE):
    """Limits reached from a run's start document inside the RunEngine process."""
    import resource

    model = SpeckleModel(geometry=GEO, efficiency_sigma=0.0, seed=5)
    det = InlineMaxipix(model, name="maxipix")
    out, record = recorder()
    raw, raw_record = recorder()
    cb = XSVSCallback(emit=record)  # geometry and partitions from each run
    good = {"q1": 0.0015, "q2": 0.003, "qs": 0.0005, "dq": 0.0002}
    huge = dict(GEO.to_dict(), shape=[8192, 8192])  # 67 Mpx: a 0.5 GB q map
    plans: list[tuple[dict[str, float], Geometry | dict[str, Any], str | None]] = [
        ({"q1": 0.002, "q2": 1e6, "qs": 0.001, "dq": 4e-4}, GEO, "max_partitions"),
        (good, huge, "max_pixels"),
        (good, GEO, None),
    ]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = [RE.subscribe(raw_record), RE.subscribe(cb)]
    try:
        for partitions, geometry, _ in plans:
            RE(
                xsvs_series(
                    det,
                    TIMES[:1],
                    10,
                    sample_name="hostile",
                    fly=False,
                    geometry=geometry,
                    partitions=partitions,
                )
            )
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, grown_mb
    raw_stops = [d for n, d in raw if n == "stop"]
    assert [d["exit_status"] for d in raw_stops] == ["success"] * 3  # scan went on
    records = list(cb.records.values())
    for rec, (_, _, limit) in zip(records, plans, strict=True):
        if limit is None:
            assert rec.exit_status == "success" and rec.results
            continue
        assert rec.exit_status == "fail"
        assert rec.reason.startswith("LimitError: ")
        assert f"Limits.{limit}" in rec.reason
    derived_stops = [d for n, d in out if n == "stop"]
    assert [d["exit_status"] for d in derived_stops] == ["fail", "fail", "success"]
    assert "1e+09 q partitions" in derived_stops[0]["reason"]
    assert "(8192, 8192) = 67108864 pixels" in derived_stops[1]["reason"]
