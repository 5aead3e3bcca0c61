"""pyxsvs-compatible least squares: integer-histogram route vs literal transcription."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import leastsq
from scipy.special import gammaln

from xsvs_bluesky.core.estimators import EstimatorError
from xsvs_bluesky.core.flatfield import divide_round
from xsvs_bluesky.core.legacy_fit import (
    fit_pyxsvs_lsq,
    legacy_bin_edges,
    legacy_densities,
    legacy_fit,
    legacy_frame_density,
    legacy_histogram,
)
from xsvs_bluesky.core.synthetic import speckle_frames


def nb_gamma_formula(x: np.ndarray, m_modes: float, kbar: float) -> np.ndarray:
    """SCIENCE.md section 1 formula, with the gamma-function ratio in logs."""
    ratio = np.exp(gammaln(x + m_modes) - gammaln(x + 1) - gammaln(m_modes))
    return (
        ratio * (m_modes / (kbar + m_modes)) ** m_modes * (kbar / (kbar + m_modes)) ** x
    )


def nb_scipy(x: np.ndarray, m_modes: float, kbar: float) -> np.ndarray:
    return stats.nbinom.pmf(x, m_modes, m_modes / (m_modes + kbar))


def reference_pyxsvs(
    frames: list[np.ndarray],
    m: float,
    pmf: Callable[..., np.ndarray] = nb_gamma_formula,
) -> dict[str, float]:
    """SCIENCE.md section 6 followed literally, on float pixel values per frame."""
    edges = np.arange(2 * int(m)) if m > 20 else np.arange(20)
    n = len(frames)
    dens_sum = np.zeros(edges.size - 1)
    sq_sum = np.zeros(edges.size - 1)
    trace = np.zeros(n)
    for i, values in enumerate(frames):
        d, _ = np.histogram(values, edges, density=True)
        dens_sum += d
        sq_sum += d**2
        trace[i] = np.mean(values)
    hist = dens_sum / n
    std = np.sqrt(sq_sum / n - hist**2)
    kbar, kbar_err = np.mean(trace), np.std(trace)
    x = edges[:-1]
    roi = np.where(hist > 1e-5)[0]
    if len(roi) > len(hist) - 2:
        roi = roi[:-2]
    else:
        roi = np.where(hist > 0)[0]
    y = np.log10(hist[roi])
    sigma = std[roi] / (hist[roi] * np.log(10))

    def res(p: np.ndarray) -> np.ndarray:
        model = pmf(x[roi], p, kbar)  # p is leastsq's shape-(1,) parameter array
        return (y - np.log10(model)) / sigma

    sol, cov, info, _, _ = leastsq(res, [5.0], full_output=True)
    s_sq = np.sum(info["fvec"] ** 2) / (len(roi) - 1)
    m_fit = sol[0]
    m_err = math.sqrt(cov[0, 0] * s_sq)
    return {
        "M": m_fit,
        "M_err": m_err,
        "beta": 1 / m_fit,
        "beta_err": m_err / m_fit**2,
        "K": kbar,
        "K_err": kbar_err,
        "r1": 2 * hist[2] * (1 - hist[1]) / hist[1] ** 2 - 1,
        "n_roi": len(roi),
    }


def partition_frames(
    kbar: float, beta: float, n_frames: int, seed: int, flat: bool
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Per-frame partition values (floats, legacy), their integer histograms, m."""
    rng = np.random.default_rng(seed)
    shape = (40, 60)
    w = np.clip(rng.normal(1.0, 0.08, shape), 0.6, 1.4) if flat else np.ones(shape)
    frames = speckle_frames(n_frames, shape, kbar, beta, efficiency=w, rng=rng)
    raw = frames.astype(float)
    values = divide_round(raw, w) if flat else raw
    pix = rng.permutation(w.size)[:1500]  # a 'partition'
    per_frame = [v.ravel()[pix] for v in values]
    m = float(np.mean((raw / w)[:200].reshape(n_frames, -1)[:, pix]))
    k_max = int(max(v.max() for v in per_frame)) + 1
    fc = np.stack([np.bincount(v.astype(np.int64), minlength=k_max) for v in per_frame])
    return per_frame, fc, m


def test_legacy_bin_edges() -> None:
    np.testing.assert_array_equal(legacy_bin_edges(0.04), np.arange(20))
    np.testing.assert_array_equal(legacy_bin_edges(20.0), np.arange(20))
    np.testing.assert_array_equal(legacy_bin_edges(20.5), np.arange(40))
    np.testing.assert_array_equal(legacy_bin_edges(33.7), np.arange(66))
    with pytest.raises(EstimatorError, match="finite"):
        legacy_bin_edges(math.nan)


@pytest.mark.parametrize("kbar", [0.4, 8.0, 27.0])
def test_integer_route_equals_numpy_histogram_density(kbar: float) -> None:
    values, fc, m = partition_frames(kbar, 0.3, 12, seed=1, flat=True)
    edges = legacy_bin_edges(m)
    ours = legacy_densities(fc, edges)
    direct = np.stack([legacy_frame_density(v, edges) for v in values])
    np.testing.assert_allclose(ours, direct, rtol=1e-12, atol=1e-15)
    # the closed last bin holds two values; values beyond are dropped
    last = edges[-1]
    v = values[0]
    inside = np.sum(v <= last)
    assert ours[0, -1] == pytest.approx(np.sum((v == last) | (v == last - 1)) / inside)


def test_last_bin_and_dropped_values_by_hand() -> None:
    values = np.array([0, 0, 1, 18, 19, 19, 25, 40], dtype=float)
    fc = np.bincount(values.astype(int))[None, :]
    edges = legacy_bin_edges(1.0)
    ours = legacy_densities(fc, edges)[0]
    assert ours.size == 19
    assert ours[0] == pytest.approx(2 / 6) and ours[1] == pytest.approx(1 / 6)
    assert ours[-1] == pytest.approx(3 / 6)  # 18, 19, 19 share the closed bin
    np.testing.assert_array_equal(ours, legacy_frame_density(values, edges))


CASES = [(0.3, 0.25, False), (0.3, 0.25, True), (4.0, 0.15, True), (26.0, 0.2, False)]


@pytest.mark.parametrize(("kbar", "beta", "flat"), CASES)
def test_pyxsvs_lsq_equals_literal_transcription(
    kbar: float, beta: float, flat: bool
) -> None:
    values, fc, m = partition_frames(kbar, beta, 30, seed=2, flat=flat)
    ref = reference_pyxsvs(values, m)
    fit = legacy_fit(fc, m)
    assert fit.M == pytest.approx(ref["M"], rel=1e-8)
    assert fit.M_err == pytest.approx(ref["M_err"], rel=1e-8)
    assert fit.beta == pytest.approx(ref["beta"], rel=1e-8)
    assert fit.beta_err == pytest.approx(ref["beta_err"], rel=1e-8)
    assert fit.histogram.kbar == pytest.approx(ref["K"], rel=1e-12)
    assert fit.histogram.kbar_err == pytest.approx(ref["K_err"], rel=1e-10)
    assert fit.r_minus_1 == pytest.approx(ref["r1"], rel=1e-10)
    assert fit.fitted_bins.size == ref["n_roi"]
    est = fit_pyxsvs_lsq(fc, m)
    assert est.estimator == "pyxsvs-lsq"
    assert est.beta == fit.beta and est.kbar == fit.histogram.kbar
    assert est.n_samples == fc.sum()
    assert abs(est.beta - beta) < 0.1  # a fit of the same law


@pytest.mark.parametrize(("kbar", "beta", "flat"), CASES)
def test_pyxsvs_lsq_within_leastsq_tolerance_of_any_pmf_arithmetic(
    kbar: float, beta: float, flat: bool
) -> None:
    # leastsq stops at ~1e-8 relative steps with a finite-difference Jacobian,
    # so another (equally exact) pmf arithmetic moves M by up to ~1e-7
    values, fc, m = partition_frames(kbar, beta, 30, seed=2, flat=flat)
    ref = reference_pyxsvs(values, m, pmf=nb_scipy)
    fit = legacy_fit(fc, m)
    assert fit.M == pytest.approx(ref["M"], rel=1e-6)
    assert fit.M_err == pytest.approx(ref["M_err"], rel=1e-5)


def test_fallback_rule_is_flagged() -> None:
    _, fc, m = partition_frames(0.3, 0.25, 30, seed=3, flat=False)
    fit = legacy_fit(fc, m)  # at kbar 0.3 most of the 19 bins are empty
    assert "fallback-bins" in fit.flags
    np.testing.assert_array_equal(
        fit.fitted_bins, np.flatnonzero(fit.histogram.histogram > 0)
    )
    _, fc, m = partition_frames(26.0, 0.2, 30, seed=3, flat=False)
    assert "fallback-bins" not in legacy_fit(fc, m).flags


def test_legacy_histogram_statistics() -> None:
    _, fc, m = partition_frames(2.0, 0.2, 25, seed=4, flat=False)
    hist = legacy_histogram(fc, m)
    dens = legacy_densities(fc, hist.edges)
    np.testing.assert_allclose(hist.histogram, dens.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(hist.hist_std, dens.std(axis=0), rtol=1e-6, atol=1e-12)
    k = np.arange(fc.shape[1])
    np.testing.assert_allclose(hist.trace, fc @ k / fc.sum(axis=1), rtol=1e-15)
    np.testing.assert_array_equal(hist.bins, hist.edges[:-1])
    assert hist.n_samples == fc.sum()


def test_legacy_input_errors() -> None:
    with pytest.raises(EstimatorError, match=r"\(F, K\)"):
        legacy_histogram(np.ones(5), 1.0)
    with pytest.raises(EstimatorError, match="edges"):
        legacy_densities(np.ones((2, 5)), np.array([0.0, 2.0, 4.0]))
