"""Flat-field and drift biases of the contrast, and the estimators that remove them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from xsvs_bluesky.core.estimators import fit_grouped_mle, fit_mle, nbinom_pmf
from xsvs_bluesky.core.flatfield import (
    apparent_contrast,
    corrected_contrast,
    divide_round,
    efficiency_variance,
)
from xsvs_bluesky.core.synthetic import speckle_frames

SHAPE = (256, 256)


def efficiency_map(rng: np.random.Generator, low_fraction: float = 0.0) -> np.ndarray:
    """Mean-1 efficiency, sigma_w ~ 0.1, plus a few weak (w ~ 0.55) pixels."""
    w = np.clip(rng.normal(1.0, 0.1, SHAPE), 0.6, 1.4)
    weak = rng.random(SHAPE) < low_fraction
    w[weak] = rng.uniform(0.5, 0.6, int(weak.sum()))
    return w / w.mean()


def efficiency_groups(
    w: np.ndarray, n_groups: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Quantile group label of every pixel and the group weights (mean w)."""
    flat = w.ravel()
    edges = np.quantile(flat, np.linspace(0, 1, n_groups + 1)[1:-1])
    label = np.searchsorted(edges, flat, side="right")
    weight = np.bincount(label, weights=flat) / np.bincount(label) / flat.mean()
    return label, weight


def group_histograms(
    frames: np.ndarray, label: np.ndarray, n_groups: int
) -> np.ndarray:
    flat = frames.reshape(frames.shape[0], -1)
    k_max = int(flat.max()) + 1
    codes = np.broadcast_to(label, flat.shape) * k_max + flat
    return np.bincount(codes.ravel(), minlength=n_groups * k_max).reshape(
        n_groups, k_max
    )


def divide_round_histogram(w: np.ndarray, kbar: float, m_modes: float) -> np.ndarray:
    """Exact expected histogram of round(k / w) over pixels of efficiency w."""
    k = np.arange(40)
    p = nbinom_pmf(k[None, :], kbar * w[:, None], m_modes)
    rounded = np.around(k[None, :] / w[:, None]).astype(np.int64)
    return np.bincount(rounded.ravel(), weights=p.ravel()) / w.size


# ------------------------------------------------------------------ helpers
def test_divide_round_is_the_legacy_operation() -> None:
    rng = np.random.default_rng(0)
    frame = rng.poisson(3.0, (2, 8, 8)).astype(np.uint16)
    flat = rng.uniform(0.4, 1.6, (8, 8))
    np.testing.assert_array_equal(divide_round(frame, flat), np.around(frame / flat))
    reference = np.around(frame / flat)
    flat[0, 0] = 0.0
    out = divide_round(frame, flat, dtype=np.int32)
    assert out.dtype == np.int32
    assert np.all(out[:, 0, 0] == 0)  # the masked (flat = 0) pixel
    np.testing.assert_array_equal(out[:, 1:], reference[:, 1:])
    # numpy.around rounds halves to even
    np.testing.assert_array_equal(divide_round([1, 3, 5], [2.0, 2.0, 2.0]), [0, 2, 2])


def test_efficiency_variance_and_bias_formula() -> None:
    rng = np.random.default_rng(1)
    flat = 3.0 * efficiency_map(rng)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, :10] = True
    flat[:, :10] = 100.0  # excluded by the mask
    w = flat[:, 10:] / flat[:, 10:].mean()
    assert efficiency_variance(flat, mask) == pytest.approx(w.var(), rel=1e-12)
    b = np.array([0.0, 0.1, 0.5])
    app = apparent_contrast(b, 0.0115)
    np.testing.assert_allclose(app, b + 0.0115 * (1 + b))
    np.testing.assert_allclose(corrected_contrast(app, 0.0115), b, atol=1e-15)
    # the moments of a pooled mixture follow the formula exactly
    kbar, beta = 0.7, 0.2
    wv = w.ravel()
    k = np.arange(80)
    pooled = nbinom_pmf(k[None, :], kbar * wv[:, None], 1 / beta).mean(axis=0)
    mean = pooled @ k
    var = pooled @ (k - mean) ** 2
    assert var / mean**2 - 1 / mean == pytest.approx(
        apparent_contrast(beta, wv.var()), rel=1e-9
    )


# -------------------------------------------------------------- flat field
def test_raw_counts_biased_weighted_mle_unbiased() -> None:
    rng = np.random.default_rng(2)
    w = efficiency_map(rng)
    s2 = float(w.var())
    assert 0.008 < s2 < 0.012
    kbar, beta = 2.0, 0.25
    frames = speckle_frames(30, SHAPE, kbar, beta, efficiency=w, rng=rng)
    label, weight = efficiency_groups(w)
    counts = group_histograms(frames, label, weight.size)
    raw = fit_mle(counts.sum(axis=0))
    predicted_bias = s2 * (1 + beta)
    assert raw.beta - beta == pytest.approx(predicted_bias, rel=0.3)
    assert raw.beta - beta > 5 * raw.beta_err
    fixed = fit_grouped_mle(counts, weight)
    assert fixed.estimator == "mle-weighted"
    assert abs(fixed.beta - beta) < 3 * fixed.beta_err
    assert abs(fixed.beta - beta) < 0.25 * predicted_bias
    assert fixed.kbar == pytest.approx(kbar, rel=0.005)


def test_divide_round_is_biased_at_low_counts() -> None:
    # SCIENCE.md: beta 0.25 reads ~0.32 at kbar 0.05 with a MAXIPIX-like flat,
    # whose few weak pixels (w < 2/3) turn single photons into 2s
    rng = np.random.default_rng(3)
    w = efficiency_map(rng, low_fraction=0.002)
    kbar, beta = 0.05, 0.25
    predicted = fit_mle(1e9 * divide_round_histogram(w.ravel(), kbar, 1 / beta)).beta
    assert 0.29 < predicted < 0.36
    frames = speckle_frames(60, SHAPE, kbar, beta, efficiency=w, rng=rng)
    legacy = fit_mle(np.bincount(divide_round(frames, w, dtype=np.int64).ravel()))
    assert abs(legacy.beta - predicted) < 3.5 * legacy.beta_err
    assert legacy.beta - beta > 3 * legacy.beta_err  # biased upwards
    # the flat-field-aware MLE on the integer counts is not
    label, weight = efficiency_groups(w)
    fixed = fit_grouped_mle(group_histograms(frames, label, weight.size), weight)
    assert abs(fixed.beta - beta) < 3 * fixed.beta_err


@pytest.mark.realdata
def test_divide_round_bias_with_the_real_flat_field(example_dir: Path) -> None:
    fabio = pytest.importorskip("fabio")
    analysis = example_dir / "analysis"
    flat = fabio.open(str(analysis / "maxipix1_flatfield_2013.edf")).data.astype(float)
    bad = fabio.open(str(analysis / "mask.edf")).data.astype(bool)
    bad |= fabio.open(str(analysis / "maxipix1_mask_2013.edf")).data.astype(bool)
    bad |= ~(flat > 0)
    w = flat[~bad] / flat[~bad].mean()
    assert efficiency_variance(flat, bad) == pytest.approx(0.0115, abs=0.0005)
    predicted = fit_mle(1e9 * divide_round_histogram(w, 0.05, 4.0)).beta
    assert predicted == pytest.approx(0.32, abs=0.015)  # the SCIENCE.md claim


# ------------------------------------------------------------------- drift
def test_frame_drift_biases_pooled_mle_and_mle_frames_removes_it() -> None:
    rng = np.random.default_rng(4)
    n_frames, n_pix, beta = 200, 2_000, 0.2
    kbar_f = np.exp(rng.normal(0.0, 0.2, n_frames))
    frames = speckle_frames(n_frames, (40, 50), kbar_f, beta, rng=rng)
    flat = frames.reshape(n_frames, n_pix)
    k_max = int(flat.max()) + 1
    per_frame = np.stack([np.bincount(f, minlength=k_max) for f in flat])
    pooled = fit_mle(per_frame.sum(axis=0))
    drift_var = float(np.var(kbar_f / kbar_f.mean()))
    assert pooled.beta - beta == pytest.approx(
        apparent_contrast(beta, drift_var) - beta, rel=0.3
    )
    frames_fit = fit_grouped_mle(per_frame)
    assert frames_fit.estimator == "mle-frames"
    assert abs(frames_fit.beta - beta) < 3 * frames_fit.beta_err
    assert frames_fit.kbar == pytest.approx(flat.mean(), rel=1e-12)


def test_free_means_bias_is_removed_by_the_adjustment() -> None:
    # G free means cost ~(1/kbar + beta) G/N in the plain profile MLE
    rng = np.random.default_rng(5)
    n_frames, n_pix, kbar, beta = 100, 300, 0.2, 0.2
    p = nbinom_pmf(np.arange(60), kbar, 1 / beta)
    p /= p.sum()
    plain, adjusted = [], []
    for _ in range(200):
        per_frame = rng.multinomial(n_pix, p, size=n_frames)
        plain.append(fit_grouped_mle(per_frame, adjust=False).beta)
        adjusted.append(fit_grouped_mle(per_frame).beta)
    plain_a, adjusted_a = np.array(plain), np.array(adjusted)
    se_mean = adjusted_a.std(ddof=1) / math.sqrt(adjusted_a.size)
    expected_bias = -(1 / kbar + beta) * n_frames / (n_frames * n_pix)
    assert plain_a.mean() - beta == pytest.approx(expected_bias, abs=3 * se_mean)
    assert plain_a.mean() - beta < -3 * se_mean
    assert abs(adjusted_a.mean() - beta) < 3 * se_mean
