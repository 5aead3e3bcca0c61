"""XSVSCallback fed with hand-made documents (inline, HDF5 stream, legacy)."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from event_model import compose_run

from xsvs_bluesky.analysis import ExposureResult
from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.dynamics import exponential_kernel
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.core.histogram import HistogramAccumulator
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.results import RunResults, pivot_results

GEO = Geometry(1.5, 5000.0, 0.055, 32.5, 32.5, (64, 64))
PARTS = {"q1": 0.0004, "q2": 0.0016, "qs": 0.0004, "dq": 0.0002}
SHAPE = (64, 64)
KEY = "det_image"

# (name, document): event-model's TypedDicts from compose_run and the
# callback's plain dicts, which DocumentRouter takes as ``dict``.
Docs = list[tuple[str, Any]]


def frames_for(beta: float, n: int = 200, kbar: float = 0.5, seed: int = 1):
    return speckle_frames(n, SHAPE, kbar, beta, rng=seed)


def callback(docs: Docs, **kwargs: Any) -> XSVSCallback:
    options: dict[str, Any] = {
        "geometry": GEO,
        "partitions": PARTS,
        "progress_interval_s": 0,
        "progress_every_frames": 50,
    }
    options.update(kwargs)
    return XSVSCallback(emit=lambda n, d: docs.append((n, d)), **options)


def config(t_e: float) -> dict[str, Any]:
    return {
        "det": {
            "data": {"det_acquire_time": t_e, "det_acquire_period": 1.0},
            "timestamps": {"det_acquire_time": 0.0, "det_acquire_period": 0.0},
            "data_keys": {
                "det_acquire_time": {"source": "sim", "dtype": "number", "shape": []},
                "det_acquire_period": {"source": "sim", "dtype": "number", "shape": []},
            },
        }
    }


def image_key(external: str | None = None, shape=SHAPE) -> dict[str, Any]:
    key = {
        "source": "sim",
        "dtype": "array",
        "shape": list(shape),
        "dtype_numpy": "<u2",
        "object_name": "det",
    }
    if external is not None:
        key["external"] = external
    return key


def inline_run(
    exposures: Sequence[tuple[float | None, np.ndarray]],
    *,
    start_md: dict[str, Any] | None = None,
    page: bool = False,
    event_time_key: bool = False,
) -> Docs:
    """Documents of a step scan with inline frames, one descriptor per t_e."""
    bundle = compose_run(
        metadata={"scan_id": 7, "sample_name": "silica", **(start_md or {})}
    )
    out: Docs = [("start", bundle.start_doc)]
    for t_e, frames in exposures:
        data_keys = {KEY: image_key()}
        if event_time_key:
            data_keys["det_exposure_time"] = {
                "source": "s",
                "dtype": "number",
                "shape": [],
            }
        desc = bundle.compose_descriptor(
            name="primary",
            data_keys=data_keys,
            object_keys={"det": list(data_keys)},
            configuration=config(t_e)
            if (t_e is not None and not event_time_key)
            else {},
        )
        out.append(("descriptor", desc.descriptor_doc))
        rows = [{KEY: f} for f in frames]
        if event_time_key:
            for row in rows:
                row["det_exposure_time"] = t_e
        if page:
            data = {k: [r[k] for r in rows] for k in rows[0]}
            ts = {k: [0.0] * len(rows) for k in rows[0]}
            out.append(
                ("event_page", desc.compose_event_page(data=data, timestamps=ts))
            )
        else:
            for row in rows:
                event = desc.compose_event(data=row, timestamps=dict.fromkeys(row, 0.0))
                out.append(("event", event))
    out.append(("stop", bundle.compose_stop()))
    return out


def feed(cb: XSVSCallback, docs: Docs) -> None:
    for name, doc in docs:
        cb(name, doc)


def pages(docs: Docs, name: str) -> list[dict[str, Any]]:
    """One dict per EventPage of stream ``name``, rows ordered by partition.

    Columns equal on every row of the page (exposure, frames, model, ...)
    become scalars.
    """
    descs = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == name}
    out = []
    for n, d in docs:
        if n != "event_page" or d["descriptor"] not in descs:
            continue
        cols = {k: np.asarray(v) for k, v in d["data"].items()}
        order = np.argsort(cols.get("partition", np.zeros(1)), kind="stable")
        row: dict[str, Any] = {}
        for key, col in cols.items():
            same = col.ndim == 1 and np.all(col == col[0]) and key != "partition"
            row[key] = col[0].item() if same else col[order]
        out.append(row)
    return out


def stream(docs: Docs, name: str) -> list[dict[str, Any]]:
    """Per-exposure dicts of ``results`` (pivoted rows); pages of other streams."""
    if name != "results":
        return pages(docs, name)
    source = RunResults.from_documents(docs).source
    cols = {s: dict(source.view(s)) for s in source.stream_names}
    arrays = pivot_results(
        cols.get("results", {}),
        cols.get("histograms"),
        cols.get("trace"),
        cols.get("images"),
    )
    n = len(arrays.get("exposure_index", ()))
    return [{k: v[i] for k, v in arrays.items()} for i in range(n)]


def descriptor(docs: Docs, name: str) -> dict[str, Any]:
    return next(d for n, d in docs if n == "descriptor" and d["name"] == name)


def stop_doc(docs: Docs) -> dict[str, Any]:
    (stop,) = [d for n, d in docs if n == "stop"]
    return stop


def assert_beta(data: dict[str, Any], truth: float) -> None:
    beta, err = np.asarray(data["beta"]), np.asarray(data["beta_err"])
    assert np.all(err > 0) and np.all(err < 0.05)
    assert np.all(np.abs(beta - truth) < 4 * err), (beta, err, truth)


def test_inline_events_recover_known_contrast_per_exposure():
    out: Docs = []
    cb = callback(out)
    feed(cb, inline_run([(0.001, frames_for(0.3)), (0.01, frames_for(0.15, seed=2))]))
    start = out[0][1]
    assert start["plan_name"] == "xsvs_analysis" and start["plan_type"] == "analysis"
    assert start["scan_id"] == 7 and start["sample_name"] == "silica"
    assert start["xsvs"]["partitions"]["n_pixels"] == [480, 944, 1408, 1044]
    results = stream(out, "results")
    assert [r["exposure_time"] for r in results] == [0.001, 0.01]
    assert [r["n_frames"] for r in results] == [200, 200]
    assert_beta(results[0], 0.3)
    assert_beta(results[1], 0.15)
    np.testing.assert_allclose(results[0]["kbar"], 0.5, atol=0.01)
    assert stop_doc(out)["exit_status"] == "success"
    record = cb.records[start["original_run_uid"]]
    assert record.derived_uid == start["uid"] and len(record.results) == 2


def test_event_page_gives_the_same_histograms_as_events():
    frames = frames_for(0.25, n=60)
    by_event: Docs = []
    by_page: Docs = []
    feed(callback(by_event), inline_run([(0.002, frames)]))
    feed(callback(by_page), inline_run([(0.002, frames)], page=True))
    (a,) = stream(by_event, "results")
    (b,) = stream(by_page, "results")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    np.testing.assert_array_equal(a["beta"], b["beta"])
    assert a["n_frames"] == b["n_frames"] == 60


def test_exposure_time_from_start_metadata_and_from_event_data():
    frames = frames_for(0.2, n=20)
    out: Docs = []
    feed(callback(out), inline_run([(None, frames)], start_md={"exposure_time": 0.004}))
    assert stream(out, "results")[0]["exposure_time"] == 0.004
    out = []
    feed(
        callback(out),
        inline_run([(0.5, frames), (0.25, frames)], event_time_key=True),
    )
    assert [r["exposure_time"] for r in stream(out, "results")] == [0.5, 0.25]


def test_configuration_wins_over_start_metadata_and_ignores_acquire_period():
    out: Docs = []
    docs = inline_run([(0.003, frames_for(0.2, n=10))], start_md={"exposure_time": 9.0})
    feed(callback(out), docs)
    assert stream(out, "results")[0]["exposure_time"] == 0.003


def test_derived_runs_are_never_analysed():
    out: Docs = []
    cb = callback(out)
    feed(cb, inline_run([(0.001, frames_for(0.3, n=50))]))
    n_docs = len(out)
    feed(cb, list(out))  # the callback's own output comes back
    again: Docs = []
    feed(callback(again), list(out))
    assert len(out) == n_docs and again == []


def test_run_without_frames_makes_no_derived_run():
    bundle = compose_run()
    desc = bundle.compose_descriptor(
        name="primary", data_keys={"x": {"source": "m", "dtype": "number", "shape": []}}
    )
    out: Docs = []
    feed(
        callback(out),
        [
            ("start", bundle.start_doc),
            ("descriptor", desc.descriptor_doc),
            ("event", desc.compose_event(data={"x": 1.0}, timestamps={"x": 0.0})),
            ("stop", bundle.compose_stop()),
        ],
    )
    assert out == []


@pytest.mark.filterwarnings("ignore::xsvs_bluesky.analysis.EmptyPartitionWarning")
def test_analysis_failure_marks_derived_run_failed_and_never_raises(caplog):
    out: Docs = []
    small = Geometry(1.5, 5000.0, 0.055, 16.5, 16.5, (32, 32))
    cb = callback(out, geometry=small)
    docs = inline_run([(0.001, frames_for(0.3, n=5))])
    with caplog.at_level(logging.ERROR, logger="xsvs_bluesky"):
        feed(cb, docs)  # 64x64 frames on a 32x32 geometry
    stop = stop_doc(out)
    assert stop["exit_status"] == "fail"
    assert "GeometryError" in stop["reason"] and "(32, 32)" in stop["reason"]
    assert stream(out, "results") == []
    assert any("failed" in r.message for r in caplog.records)


def test_missing_geometry_fails_the_derived_run_with_the_reason():
    out: Docs = []
    cb = XSVSCallback(emit=lambda n, d: out.append((n, d)))
    feed(cb, inline_run([(0.001, frames_for(0.3, n=3))]))
    assert [n for n, _ in out] == ["start", "stop"]
    assert "no geometry" in stop_doc(out)["reason"]


def test_geometry_and_partitions_from_start_metadata():
    out: Docs = []
    cb = XSVSCallback(emit=lambda n, d: out.append((n, d)))
    md = {"xsvs_geometry": GEO.to_dict(), "xsvs_partitions": PARTS}
    feed(cb, inline_run([(0.001, frames_for(0.3))], start_md=md))
    assert out[0][1]["xsvs"]["geometry"] == GEO.to_dict()
    assert_beta(stream(out, "results")[0], 0.3)


def test_progress_events_are_throttled_by_frames_and_time():
    frames = frames_for(0.3, n=200)
    out: Docs = []
    feed(callback(out, progress_every_frames=50), inline_run([(0.001, frames)]))
    assert [p["n_frames"] for p in stream(out, "progress")] == [50, 100, 150, 200]
    out = []
    feed(
        callback(out, progress_interval_s=3600),
        inline_run([(t, frames) for t in (1e-3, 2e-3, 4e-3)]),
    )
    # no throttle point: the end of each exposure is its results rows
    assert stream(out, "progress") == []
    # dynamics: a live refit when the third exposure starts, then the final fit
    n_q = len(stream(out, "results")[0]["q"])
    assert len(pages(out, "dynamics")) == 2
    events = stop_doc(out)["num_events"]
    assert "progress" not in events and events["results"] == 3 * n_q
    assert events["dynamics"] == 2 * n_q


def test_dynamics_stream_recovers_the_relaxation_rate():
    gamma, beta0 = 200.0, 0.3
    times = (1e-3, 5e-3, 2e-2)
    betas = beta0 * exponential_kernel(gamma * np.asarray(times))
    runs = [
        (t, frames_for(b, seed=i))
        for i, (t, b) in enumerate(zip(times, betas, strict=True))
    ]
    out: Docs = []
    feed(callback(out), inline_run(runs))
    live, dyn = stream(out, "dynamics")
    # refit live on the two completed exposures, final fit on all three
    assert np.all(np.asarray(live["n_points"]) == 2) and live["n_exposures"] == 2
    assert np.all(np.asarray(dyn["n_points"]) == 3) and dyn["n_exposures"] == 3
    assert (live["fit_index"], dyn["fit_index"]) == (0, 1)
    assert dyn["model"] == "exponential"
    z_gamma = (np.asarray(dyn["gamma"]) - gamma) / np.asarray(dyn["gamma_err"])
    z_beta0 = (np.asarray(dyn["beta0"]) - beta0) / np.asarray(dyn["beta0_err"])
    assert np.all(np.abs(z_gamma) < 4) and np.all(np.abs(z_beta0) < 4)
    desc = descriptor(out, "dynamics")
    assert desc["data_keys"]["gamma"]["units"] == "1/s"
    # one exposure time: nothing to fit
    out = []
    feed(callback(out), inline_run([(1e-3, frames_for(0.3, n=20))]))
    assert stream(out, "dynamics") == []


def test_results_layout_rows_of_scalars_and_their_pivot_pads():
    out: Docs = []
    low = frames_for(0.3, n=40, kbar=0.05)
    high = frames_for(0.1, n=25, kbar=6.0, seed=3)
    feed(callback(out, n_bins=2), inline_run([(0.001, low), (0.1, high)]))
    descs = [d for n, d in out if n == "descriptor"]
    names = [d["name"] for d in descs]
    assert names == ["results", "histograms", "trace", "images", "dynamics"]
    for desc in descs:
        name = desc["name"]
        assert desc["hints"]["xsvs"]["fields"]
        for key, spec in desc["data_keys"].items():
            assert "." not in key and "/" not in key
            assert "units" in spec, (name, key)
            if spec["dtype"] == "array":  # one 1-d array: one image row
                assert (name, key, spec["dims"]) == ("images", "mean_image", ["col"])
                assert spec["shape"] == [SHAPE[1]]
            else:
                assert spec["shape"] == []
    first, second = stream(out, "results")
    n_k = np.asarray(first["probability"]).shape[1]
    assert np.asarray(first["trace"]).shape == (40, 4)
    assert first["n_bins"] < second["n_bins"] <= n_k
    for data in (first, second):
        assert np.asarray(data["probability"]).shape == (4, n_k)
        np.testing.assert_allclose(np.sum(data["probability"], axis=1), 1.0)
        assert np.all(np.asarray(data["counts"])[:, data["n_bins"] :] == 0)
        counts = np.asarray(data["counts"])
        np.testing.assert_array_equal(
            counts.sum(axis=1), data["n_pixels"] * data["n_frames"]
        )
    trace = np.asarray(second["trace"])
    assert np.all(np.isnan(trace[25:])) and np.all(np.isfinite(trace[:25]))
    np.testing.assert_allclose(np.mean(trace[:25], axis=0), second["kbar"])
    assert np.asarray(second["mean_image"]).shape == SHAPE
    assert {"beta_moments", "beta_low_count", "beta_r_1", "M", "M_err"} <= set(first)
    # kbar of mle-intensity (the default) is a fitted mean, not the sample mean
    np.testing.assert_allclose(second["intensity"], second["kbar"], rtol=1e-6)


def write_h5(path: Path, frames: np.ndarray, dataset: str = "/entry/data/data") -> None:
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset(dataset, data=frames, chunks=(1, *SHAPE))


def stream_run(path: Path, frames_per_datum: list[int], t_e: float = 0.002) -> Docs:
    """A fly scan: StreamResource/StreamDatum only, no Event documents."""
    bundle = compose_run(metadata={"scan_id": 9})
    desc = bundle.compose_descriptor(
        name="primary",
        data_keys={KEY: image_key("STREAM:", (1, *SHAPE))},
        object_keys={"det": [KEY]},
        configuration=config(t_e),
    )
    assert bundle.compose_stream_resource is not None  # optional in event-model
    res = bundle.compose_stream_resource(
        mimetype="application/x-hdf5",
        uri=f"file://localhost{path}",
        data_key=KEY,
        parameters={"dataset": "/entry/data/data", "chunk_shape": [1, *SHAPE]},
    )
    out: Docs = [
        ("start", bundle.start_doc),
        ("descriptor", desc.descriptor_doc),
        ("stream_resource", res.stream_resource_doc),
    ]
    i = 0
    for n in frames_per_datum:
        datum = res.compose_stream_datum(
            indices={"start": i, "stop": i + n},
            seq_nums={"start": i + 1, "stop": i + n + 1},
            descriptor=desc.descriptor_doc,
        )
        out.append(("stream_datum", datum))
        i += n
    out.append(("stop", bundle.compose_stop()))
    return out


def test_stream_datum_hdf5_fly_scan_matches_inline(tmp_path):
    frames = frames_for(0.3)
    write_h5(tmp_path / "det.h5", frames)
    from_file: Docs = []
    feed(callback(from_file), stream_run(tmp_path / "det.h5", [50, 70, 80]))
    inline: Docs = []
    feed(callback(inline), inline_run([(0.002, frames)]))
    (a,) = stream(from_file, "results")
    (b,) = stream(inline, "results")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    np.testing.assert_array_equal(a["trace"], b["trace"])
    assert a["n_frames"] == 200 and a["exposure_time"] == 0.002
    assert_beta(a, 0.3)


def test_stream_resource_before_the_file_has_data(tmp_path):
    """SWMR: datums may arrive before their frames are flushed to the file."""
    frames = frames_for(0.2, n=30)
    path = tmp_path / "growing.h5"
    docs = stream_run(path, [10, 10, 10])
    out: Docs = []
    cb = callback(out, read_timeout_s=0.5)
    feed(cb, docs[:3])  # start, descriptor, stream_resource: no file yet
    writer = h5py.File(path, "w", libver="latest")
    ds = writer.create_dataset(
        "/entry/data/data", shape=(0, *SHAPE), maxshape=(None, *SHAPE), dtype="<u2"
    )
    writer.swmr_mode = True
    try:
        cb(*docs[3])  # first datum: no data yet, kept pending
        for k in range(3):
            ds.resize((10 * (k + 1), *SHAPE))
            ds[10 * k :] = frames[10 * k : 10 * (k + 1)]
            ds.flush()
            if k < 2:
                cb(*docs[4 + k])
        feed(cb, docs[6:])
    finally:
        writer.close()
    (result,) = stream(out, "results")
    assert result["n_frames"] == 30 and stop_doc(out)["exit_status"] == "success"


def test_unreadable_frames_are_reported_in_the_stop_reason(tmp_path):
    write_h5(tmp_path / "short.h5", frames_for(0.2, n=10))
    out: Docs = []
    feed(
        callback(out, read_timeout_s=0.05), stream_run(tmp_path / "short.h5", [10, 10])
    )
    assert stream(out, "results")[0]["n_frames"] == 10
    reason = stop_doc(out)["reason"]
    assert f"10 frames of {tmp_path / 'short.h5'} could not be read within 0.05 s" in (
        reason
    )
    assert "holds 10 of the 20 frames needed" in reason  # why


def test_frames_of_a_missing_file_name_the_file_and_the_reason(tmp_path):
    out: Docs = []
    feed(callback(out, read_timeout_s=0.05), stream_run(tmp_path / "gone.h5", [10]))
    reason = stop_doc(out)["reason"]
    assert f"10 frames of {tmp_path / 'gone.h5'} could not be read" in reason
    assert "the file does not exist" in reason


def test_legacy_resource_and_datum_are_normalised(tmp_path):
    frames = frames_for(0.25, n=40)
    write_h5(tmp_path / "legacy.h5", frames)
    bundle = compose_run()
    desc = bundle.compose_descriptor(
        name="primary",
        data_keys={KEY: image_key("FILESTORE:")},
        object_keys={"det": [KEY]},
        configuration=config(0.005),
    )
    res = bundle.compose_resource(
        spec="AD_HDF5",
        root=str(tmp_path),
        resource_path="legacy.h5",
        resource_kwargs={"frame_per_point": 1},
    )
    docs: Docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc)]
    docs.append(("resource", res.resource_doc))
    for i in range(40):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        docs.append(("datum", datum))
        event = desc.compose_event(data={KEY: datum["datum_id"]}, timestamps={KEY: 0.0})
        docs.append(("event", event))
    docs.append(("stop", bundle.compose_stop()))
    out: Docs = []
    feed(callback(out), docs)
    inline: Docs = []
    feed(callback(inline), inline_run([(0.005, frames)]))
    (a,) = stream(out, "results")
    (b,) = stream(inline, "results")
    assert a["n_frames"] == 40 and a["exposure_time"] == 0.005
    np.testing.assert_array_equal(a["counts"], b["counts"])


def test_a_failing_consumer_does_not_stop_the_others():
    good: Docs = []

    def bad(name: str, doc: dict[str, Any]) -> None:
        if name == "event_page":
            raise RuntimeError("disk full")

    def failing(result: ExposureResult) -> None:
        raise ZeroDivisionError("division by zero")

    cb = XSVSCallback(
        geometry=GEO,
        partitions=PARTS,
        emit=[bad, lambda n, d: good.append((n, d))],
        on_result=failing,
        progress_interval_s=0,
        progress_every_frames=10,
    )
    feed(cb, inline_run([(0.001, frames_for(0.3, n=20))]))
    names = Counter(n for n, _ in good)
    assert names["start"] == names["stop"] == 1
    # progress at 10 and 20 frames, then the rows of the complete exposure
    assert names["descriptor"] == 5 and names["event_page"] == 6
    assert stop_doc(good)["exit_status"] == "success"


def test_mask_and_flat_field_identity_in_start(tmp_path):
    mask = np.zeros(SHAPE, dtype=np.int8)
    mask[:, 40] = 1
    flat = np.ones(SHAPE, dtype=np.float32)
    out: Docs = []
    cb = callback(
        out,
        masks=[("mask.edf", mask, "abc123")],
        flat_field=("flat.edf", flat),
        flat_field_mode="record-only",
        estimator="mle",
    )
    feed(cb, inline_run([(0.001, frames_for(0.3, n=20))]))
    xsvs = out[0][1]["xsvs"]
    assert xsvs["masks"][0]["sha256"] == hashlib.sha256(mask.tobytes()).hexdigest()
    assert xsvs["masks"][0]["file_sha256"] == "abc123"
    assert xsvs["flat_field"]["name"] == "flat.edf"
    assert xsvs["flat_field"]["sha256"] == hashlib.sha256(flat.tobytes()).hexdigest()
    # the masked column is excluded from every partition
    assert sum(xsvs["partitions"]["n_pixels"]) < 480 + 944 + 1408 + 1044


def test_flat_field_weighted_estimator_removes_efficiency_bias():
    rng = np.random.default_rng(5)
    efficiency = rng.gamma(25.0, 1 / 25.0, size=SHAPE)  # s_w^2 = 0.04
    efficiency /= efficiency.mean()
    frames = speckle_frames(200, SHAPE, 0.5, 0.2, efficiency=efficiency, rng=6)
    out: Docs = []
    cb = callback(out, flat_field=efficiency)
    feed(cb, inline_run([(0.001, frames[:120]), (0.002, frames[120:])]))
    first, second = stream(out, "results")
    assert out[0][1]["xsvs"]["estimator"] == "mle-intensity"  # the default
    assert_beta(first, 0.2)
    # the naive estimate is biased by ~s_w^2 (1 + beta)
    assert np.all(np.asarray(first["beta_moments"]) > 0.2 + 0.02)
    # one pass over the efficiency groups also gives the partitions' P(k),
    # its per-frame std and the trace, exactly; exposures share no state
    parts = cb.setup_for({}).partitions
    for result, part in ((first, frames[:120]), (second, frames[120:])):
        ref = HistogramAccumulator(parts, n_bins=result["n_bins"])
        ref.update(part)
        mean, std = ref.probability()
        k = ref.n_bins
        np.testing.assert_array_equal(np.asarray(result["counts"])[:, :k], ref.counts)
        np.testing.assert_array_equal(np.asarray(result["probability"])[:, :k], mean)
        np.testing.assert_array_equal(np.asarray(result["probability_std"])[:, :k], std)
        trace = np.asarray(result["trace"])[: result["n_frames"]]
        np.testing.assert_array_equal(trace, ref.trace)


def mappable(path: Path) -> bool:
    """Whether the HDF5 reader can map this file (callback._chunk_map)."""
    from xsvs_bluesky.callback import _chunk_map

    local = _chunk_map.filesystem_type(path) in _chunk_map.LOCAL_FILESYSTEMS
    return local and _chunk_map.chunk_iter_available()


def test_hdf5_frame_reader_returns_the_file_data_exactly(tmp_path):
    from xsvs_bluesky.callback._hdf5 import HDF5FrameReader

    rng = np.random.default_rng(11)
    frames = rng.integers(0, 2**16, size=(40, *SHAPE), dtype=np.uint16)
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=frames, chunks=(1, *SHAPE))
        f.create_dataset("gz", data=frames, chunks=(4, *SHAPE), compression="gzip")
        part = f.create_dataset(
            "part",
            shape=(0, *SHAPE),
            maxshape=(None, *SHAPE),
            chunks=(1, *SHAPE),
            dtype=np.uint16,
        )
        part.resize((3, *SHAPE))
        part[:2] = frames[:2]  # the third chunk is never allocated
    for name in ("raw", "gz"):
        res: dict[str, Any] = {"uid": name, "mimetype": "application/x-hdf5"}
        res |= {"uri": path.as_uri(), "parameters": {"dataset": name}}
        reader = HDF5FrameReader(res, SHAPE)
        # slices of every size; an earlier result is not touched by later reads
        first = reader.read(0, 1)
        for a, b in ((0, 1), (3, 7), (39, 40), (5, 37), (0, 40), (2, 3)):
            np.testing.assert_array_equal(reader.read(a, b), frames[a:b])
        np.testing.assert_array_equal(first, frames[0:1])
        assert reader.read(38, 41) is None  # not written yet
        reader.close()
        # reusing one buffer: the same data; a read overwrites the one before
        reader = HDF5FrameReader(res, SHAPE, reuse_buffer=True)
        for a, b in ((0, 8), (3, 7), (39, 40), (0, 40), (30, 40)):
            np.testing.assert_array_equal(reader.read(a, b), frames[a:b])
        if name == "raw":
            first, second = reader.read(0, 4), reader.read(10, 14)
            if mappable(path):  # views of the mapped file: none overwritten
                assert not np.shares_memory(first, second)
                np.testing.assert_array_equal(first, frames[0:4])
            else:  # one reused buffer: the second read overwrote the first
                assert np.shares_memory(first, second)
                np.testing.assert_array_equal(first, frames[10:14])
        reader.close()
    res = {"uid": "p", "mimetype": "application/x-hdf5", "uri": path.as_uri()}
    reader = HDF5FrameReader(res | {"parameters": {"dataset": "part"}}, SHAPE)
    got = reader.read(0, 3)
    assert got is not None
    np.testing.assert_array_equal(got[:2], frames[:2])
    np.testing.assert_array_equal(got[2], 0)  # the fill value, as h5py reads it
    reader.close()


def test_every_derived_document_is_valid_against_the_event_model_schema():
    # the derived run composes its descriptors and events unvalidated (cost);
    # this is where their layout is checked, every stream included
    from event_model import DocumentNames, schema_validators

    out: Docs = []
    cb = callback(out)
    exposures = [
        (t, frames_for(0.3, n=60, seed=i)) for i, t in enumerate([1e-3, 2e-3, 4e-3])
    ]
    feed(cb, inline_run(exposures))
    names = Counter(name for name, _ in out)
    assert names["start"] == names["stop"] == 1
    assert {d["name"] for n, d in out if n == "descriptor"} >= {
        "progress",
        "results",
        "histograms",
        "trace",
        "images",
        "dynamics",
    }
    for name, doc in out:
        schema_validators[getattr(DocumentNames, name)].validate(doc)
