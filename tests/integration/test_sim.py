"""Simulated MAXIPIX detectors and the xsvs_series plan, through Tiled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.sim import (
    DATA_PATH,
    InlineMaxipix,
    SimMaxipix,
    SpeckleModel,
    directory_path_provider,
    stream_names,
    xsvs_series,
)

GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 30.2, (64, 64))
TIMES = [1e-4, 1e-3, 4e-3]
Docs = list[tuple[str, dict[str, Any]]]


def _model(**kw: Any) -> SpeckleModel:
    return SpeckleModel(
        geometry=GEO, beamstop_radius=3.0, count_rate=2000.0, seed=5, **kw
    )


def _record(RE) -> Docs:
    docs: Docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def _sim_maxipix(directory: Path, model: SpeckleModel) -> SimMaxipix:
    from ophyd_async.core import init_devices

    with init_devices():
        det = SimMaxipix(directory_path_provider(directory), model, name="maxipix")
    return det


def _hdf5_frames(uri: str) -> np.ndarray:
    path = uri.removeprefix("file://localhost")
    # swmr=True like the Tiled server in this process (HDF5 refuses mixed flags)
    with h5py.File(path, "r", swmr=True) as f:
        return f[DATA_PATH][()]


@pytest.mark.tiled
def test_fly_series_stores_streams_frames_and_exposure_times(RE, catalogs):
    model = _model()
    det = _sim_maxipix(catalogs.external_dir, model)
    docs = _record(RE)
    (uid,) = RE(xsvs_series(det, TIMES, 20, sample_name="silica"))
    kinds = Counter(name for name, _ in docs)
    assert kinds["event"] == 0 and kinds["event_page"] == 0  # fly: no events
    assert kinds["descriptor"] == 3 and kinds["stream_resource"] == 3
    assert kinds["stream_datum"] >= 3
    start = docs[0][1]
    assert start["xsvs_exposure_times"] == TIMES
    assert start["xsvs_streams"] == ["exposure_0", "exposure_1", "exposure_2"]
    assert start["xsvs_geometry"] == GEO.to_dict()
    assert start["xsvs_acquisition"] == "fly"
    assert start["xsvs_simulation"]["seed"] == 5
    resources = [doc for name, doc in docs if name == "stream_resource"]

    run = catalogs.raw[uid]
    assert catalogs.raw[-1].start["uid"] == uid
    assert list(run) == start["xsvs_streams"]
    for name, t_e, resource in zip(run, TIMES, resources, strict=True):
        stream = run[name]
        config = stream.descriptors[0]["configuration"]["maxipix"]["data"]
        assert config["maxipix-acquire_time"] == t_e
        assert stream.descriptors[0]["data_keys"]["maxipix"]["dtype_numpy"] == "<u2"
        frames = np.asarray(stream["maxipix"].read())
        assert frames.dtype == np.uint16
        assert frames.shape == (20, 1, 64, 64)  # ophyd-async: 1 frame per event
        np.testing.assert_array_equal(frames[:, 0], _hdf5_frames(resource["uri"]))
        mean = frames[:, 0][:, ~model.mask].mean()
        assert mean == pytest.approx(model.mean_counts(t_e), rel=0.05)


@pytest.mark.tiled
def test_step_series_with_inline_frames(RE, catalogs):
    model = _model(efficiency_sigma=0.0)
    det = InlineMaxipix(model, name="imaxipix")
    docs = _record(RE)
    (uid,) = RE(xsvs_series(det, TIMES[:2], [5, 3], sample_name="latex"))
    kinds = Counter(name for name, _ in docs)
    assert kinds["event"] == 8 and kinds["descriptor"] == 2
    assert kinds["stream_resource"] == 0
    data_key = docs[1][1]["data_keys"]["imaxipix_image"]
    assert data_key["shape"] == [64, 64] and data_key["dtype_numpy"] == "<u2"
    events = [doc for name, doc in docs if name == "event"]
    sent = np.stack([e["data"]["imaxipix_image"] for e in events[5:]])
    run = catalogs.raw.uid[uid[:8]]
    assert run.start["xsvs_acquisition"] == "step"
    stream = run["exposure_1"]
    config = stream.descriptors[0]["configuration"]["imaxipix"]["data"]
    assert config["imaxipix_acquire_time"] == TIMES[1]
    frames = np.asarray(stream["imaxipix_image"].read())
    assert frames.dtype == np.uint16 and frames.shape == (3, 64, 64)
    np.testing.assert_array_equal(frames, sent)


@pytest.mark.tiled
def test_step_series_with_ophyd_async_detector(RE, catalogs):
    det = _sim_maxipix(catalogs.external_dir, _model())
    docs = _record(RE)
    (uid,) = RE(xsvs_series(det, TIMES[:2], 3, sample_name="latex", fly=False))
    kinds = Counter(name for name, _ in docs)
    assert kinds["event"] == 6 and kinds["stream_resource"] == 2
    frames = np.asarray(catalogs.raw[uid]["exposure_1"]["maxipix"].read())
    assert frames.shape == (3, 1, 64, 64) and frames.dtype == np.uint16


def test_plan_checks_its_arguments():
    det = InlineMaxipix(_model(), name="imaxipix")
    with pytest.raises(ValueError, match="exposure_times"):
        xsvs_series(det, [1e-3, -1.0], 5, sample_name="x")
    with pytest.raises(ValueError, match="frames_per_exposure"):
        xsvs_series(det, [1e-3, 2e-3], [5], sample_name="x")
    with pytest.raises(ValueError, match="cannot fly"):
        xsvs_series(det, [1e-3], 5, sample_name="x", fly=True)
    with pytest.raises(ValueError, match=r"'a\.b'"):
        xsvs_series(det, [1e-3], 5, sample_name="x", md={"a.b": 1})
    assert stream_names(3) == ["exposure_0", "exposure_1", "exposure_2"]
    assert (
        stream_names(12)[0] == "exposure_00" and stream_names(12)[-1] == "exposure_11"
    )


def test_frames_are_reproducible_and_chunk_independent():
    model = _model()
    sampler = model.sampler(1e-3)
    frames = sampler.sample(12, first_frame=100)
    np.testing.assert_array_equal(sampler.sample(5, first_frame=103), frames[3:8])
    np.testing.assert_array_equal(
        _model().sampler(1e-3).sample(12, 100, threads=2), frames
    )
    assert not np.array_equal(sampler.sample(12, first_frame=0), frames)
    assert frames.dtype == np.uint16 and frames.shape == (12, 64, 64)
    assert np.all(frames[:, model.mask] == 0)


def _moment_contrast(frames: np.ndarray, pixels: np.ndarray) -> tuple[float, float]:
    counts = frames.reshape(len(frames), -1)[:, pixels].astype(float)
    mean = counts.mean()
    return mean, counts.var() / mean**2 - 1.0 / mean


def test_frames_have_the_intended_statistics():
    model = _model(efficiency_sigma=0.0)
    t_e = 1e-3
    frames = model.frames(3000, t_e)
    assert frames[:, ~model.mask].mean() == pytest.approx(
        model.mean_counts(t_e), rel=0.01
    )
    assert model.mean_counts(t_e) == pytest.approx(2000.0 * t_e, rel=1e-9)
    parts = model.partitions(0.0015, 0.0032)  # single rings: one q each
    assert len(parts) == 17
    for q, pixels in zip(parts.centers, parts.pixels, strict=True):
        mean, beta = _moment_contrast(frames, pixels)
        assert mean == pytest.approx(float(model.kbar_true(q, t_e)), rel=0.03)
        # moment estimator SE ~ sqrt(2 (1 + beta) / N) / kbar (N pixel samples)
        se = np.sqrt(2 * (1 + beta) / (len(frames) * pixels.size)) / mean
        assert abs(beta - float(model.beta_true(q, t_e))) < 5 * se + 1e-3
    expected = model.beta0 * np.array([0.99336653, 0.73575888, 0.095])
    x = np.array([0.01, 0.5, 10.0])
    q = 0.005
    np.testing.assert_allclose(model.beta_true(q, x / model.gamma(q)), expected)


def test_flat_field_inflates_pooled_contrast_as_expected():
    model = _model(efficiency_sigma=0.1)
    t_e = 2e-3
    eff = model.efficiency[~model.mask]
    assert eff.mean() == pytest.approx(1.0, abs=1e-12)
    assert eff.std() == pytest.approx(0.1, rel=0.1)
    assert np.unique(eff).size <= model.efficiency_levels
    parts = model.partitions(0.002, 0.004, rings_per_partition=4)
    frames = model.frames(2000, t_e)
    for q, pixels in zip(parts.centers, parts.pixels, strict=True):
        _, beta = _moment_contrast(frames, pixels)
        pooled = model.beta_pooled(pixels, t_e)
        assert beta == pytest.approx(pooled, abs=0.006)
        assert pooled > float(model.beta_true(q, t_e)) + 0.005  # s_w^2 bias


def test_alias_sampler_matches_gamma_poisson_reference():
    model = _model()
    t_e = 4e-3
    fast = model.frames(400, t_e)
    slow = model.frames(400, t_e, method="gamma-poisson")
    pixels = np.flatnonzero(~model.mask.ravel())
    top = 12
    hist_fast = np.bincount(fast.reshape(400, -1)[:, pixels].ravel(), minlength=top)
    hist_slow = np.bincount(slow.reshape(400, -1)[:, pixels].ravel(), minlength=top)
    p_fast = hist_fast[:top] / hist_fast.sum()
    p_slow = hist_slow[:top] / hist_slow.sum()
    n = pixels.size * 400
    se = np.sqrt(p_slow * (1 - p_slow) / n) * np.sqrt(2)
    assert np.all(np.abs(p_fast - p_slow) < 5 * se + 1e-5)
    with pytest.raises(ValueError, match="method"):
        model.frames(1, t_e, method="bogus")
