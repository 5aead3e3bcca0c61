"""The intensity-aware contrast ("mle-intensity") against pixel-level truth.

The series come from :class:`xsvs_bluesky.sim.pixel_speckle.PixelSpeckle`:
every pixel has its mean ``A / (q^2 + q0^2) t w`` and its contrast
``beta0 k(D q^2 t)`` at its own q, so the mean changes across each ring,
and the truth of a ring is ``sum(mu^2 beta) / sum(mu^2)`` (computed by the
simulator).  Seeds are fixed here once; the windows are the issue's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xsvs_bluesky.core.dynamics import fit_dynamics
from xsvs_bluesky.core.estimators import (
    ESTIMATORS,
    EstimatorError,
    IntensityGroups,
    estimate_contrast,
    fit_grouped_mle,
    fit_intensity,
    fit_intensity_mle,
    intensity_groups,
    nbinom_pmf,
)
from xsvs_bluesky.core.geometry import Partitions
from xsvs_bluesky.core.histogram import HistogramAccumulator
from xsvs_bluesky.sim.pixel_speckle import PixelSpeckle

CENTERS = 0.002 + 0.001 * np.arange(9)  # 1/Angstrom, as the example series
HALF_WIDTH = 0.0005
N_FRAMES = 120
SEEDS = (101, 102, 103, 104)  # fixed before looking at any result
D_SEED = 201


def _mask(sector_deg: float) -> np.ndarray:
    geo = PixelSpeckle().geometry
    dy, dx = geo.pixel_offsets()
    return np.asarray(~(np.abs(np.degrees(np.arctan2(dy, dx))) < sector_deg / 2))


def _series(
    sim: PixelSpeckle, n_frames: int, block: int = 60
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], Partitions]:
    """8 exposures, kbar from 0.02 (outer ring, shortest) to 8 (inner, longest).

    Frames are drawn and histogrammed block by block (memory stays small).
    Returns the exposure times and, per exposure, the estimates and truths.
    """
    mask = sim.mask
    parts = Partitions.from_centers(sim.q_map, CENTERS, HALF_WIDTH, mask=mask)
    k_outer = sim.ring_kbar(parts.pixels[-1], 1.0)
    k_inner = sim.ring_kbar(parts.pixels[0], 1.0)
    times = np.geomspace(0.02 / k_outer, 8.0 / k_inner, 8)
    flat = sim.flat_field if sim.efficiency_var > 0 else None
    groups = intensity_groups(parts, sim.q_map, flat_field=flat)
    template = HistogramAccumulator(groups, parents=parts)
    rows = []
    for t in times:
        acc = template.spawn()
        for b in range(math.ceil(n_frames / block)):
            acc.update(sim.frames(t, min(block, n_frames - b * block), block=b))
        fits = fit_intensity(acc)
        assert acc.parents is not None
        pooled = estimate_contrast(acc.parents, "mle")
        rows.append(
            {
                "beta": np.array([f.estimate.beta for f in fits]),
                "err": np.array([f.estimate.beta_err for f in fits]),
                "q_eff": np.array([f.q_eff for f in fits]),
                "kbar": np.array([f.estimate.kbar for f in fits]),
                "mle": np.array([e.beta for e in pooled]),
                "mle_err": np.array([e.beta_err for e in pooled]),
                "truth": np.array([sim.ring_beta(p, t) for p in parts.pixels]),
                "pooled": np.array([sim.pooled_beta(p, t) for p in parts.pixels]),
            }
        )
    return times, rows, parts


@pytest.fixture(scope="module", params=[0.0, 0.01], ids=["no-flat", "flat-0.01"])
def seeded_series(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """Every (seed, exposure, ring) of one configuration, stacked."""
    mask = _mask(90.0)
    out: dict[str, list[np.ndarray]] = {}
    for seed in SEEDS:
        sim = PixelSpeckle(mask=mask, efficiency_var=request.param, seed=seed)
        _, rows, _ = _series(sim, N_FRAMES)
        for row in rows:
            for key, value in row.items():
                out.setdefault(key, []).append(value)
    return {key: np.concatenate(v) for key, v in out.items()}


def test_contrast_is_unbiased_against_the_ring_truth(
    seeded_series: dict[str, np.ndarray],
) -> None:
    s = seeded_series
    assert s["beta"].size == len(SEEDS) * 8 * 9
    assert s["kbar"].min() < 0.03 and s["kbar"].max() > 7.0
    z = (s["beta"] - s["truth"]) / s["err"]
    assert np.all(np.isfinite(z))
    assert abs(float(np.mean(z))) <= 0.15, np.mean(z)
    assert 0.60 <= float(np.mean(np.abs(z) < 1.0)) <= 0.78, np.mean(np.abs(z) < 1)
    assert float(np.max(np.abs(z))) <= 4.0


def test_pooled_mle_shows_the_predicted_bias(
    seeded_series: dict[str, np.ndarray],
) -> None:
    s = seeded_series
    z = (s["mle"] - s["truth"]) / s["mle_err"]
    assert float(np.mean(z)) > 0.5  # biased upwards, well outside +-0.15
    bright = s["kbar"] > 2.0
    assert float(np.mean(z[bright])) > 3.0
    # it converges to the predicted pooled value, not to the ring truth
    zp = (s["mle"] - s["pooled"]) / s["mle_err"]
    assert abs(float(np.mean(zp[bright]))) < 1.0
    # the new estimator removes it where it is largest
    zi = (s["beta"] - s["truth"]) / s["err"]
    assert abs(float(np.mean(zi[bright]))) < 0.5


def test_diffusion_coefficient_of_a_brownian_series() -> None:
    sim = PixelSpeckle(mask=_mask(360.0), seed=D_SEED)
    times, rows, _ = _series(sim, 240)
    beta = np.array([r["beta"] for r in rows])
    err = np.array([r["err"] for r in rows])
    q_eff = np.mean([r["q_eff"] for r in rows], axis=0)
    _, diffusion = fit_dynamics(times, q_eff, beta, err)
    rel = diffusion.D / sim.diffusion - 1.0
    assert abs(rel) < 0.03, (diffusion.D, diffusion.D_err)
    assert abs(diffusion.D - sim.diffusion) < 2.0 * diffusion.D_err


# ---------------------------------------------------------------- units
def _ring_setup() -> tuple[Partitions, np.ndarray, np.ndarray]:
    sim = PixelSpeckle(mask=_mask(90.0), efficiency_var=0.01, seed=5)
    parts = Partitions.from_centers(sim.q_map, CENTERS[:3], HALF_WIDTH, sim.mask)
    return parts, sim.q_map, sim.flat_field


def test_intensity_groups_tile_the_partitions() -> None:
    parts, q_map, flat = _ring_setup()
    groups = intensity_groups(parts, q_map, flat_field=flat, n_rings=4, n_groups=8)
    assert isinstance(groups, IntensityGroups)
    for j, pix in enumerate(parts.pixels):
        idx = groups.members(j)
        joined = np.sort(np.concatenate([groups.pixels[g] for g in idx]))
        assert np.array_equal(joined, pix)
        assert len(idx) <= 4 * 8
        assert np.all(np.diff(groups.ring[idx]) >= 0)
        q = groups.q_pixels(j)
        assert q.min() >= CENTERS[j] - HALF_WIDTH - 1e-12
        # per-pixel arrays follow the groups in order
        sizes = np.bincount(groups.label[j])
        assert np.array_equal(sizes, groups.n_pixels[idx])
        mean_w = [flat.ravel()[groups.pixels[g]].mean() for g in idx]
        assert np.allclose(groups.weight[idx], mean_w / flat.ravel()[pix].mean())
    # a plain accumulator is refused with a message that says what to do
    acc = HistogramAccumulator(parts)
    acc.update(np.zeros((1, *parts.shape), np.uint16))
    with pytest.raises(EstimatorError, match="intensity_groups"):
        estimate_contrast(acc, "mle-intensity")
    assert "mle-intensity" in ESTIMATORS


def test_exact_histograms_give_the_exact_contrast() -> None:
    """Expected histograms of 6 groups of different means, one contrast."""
    k = np.arange(80)
    beta = 0.25
    x = np.repeat(np.linspace(-0.9, 0.9, 6), 50)
    label = np.repeat(np.arange(6), 50)
    w = np.ones(x.size)
    shape = np.exp(-0.4 * x - 0.1 * x * x)  # the groups' relative means
    means = 1.5 * shape[::50]
    counts = np.array([1e9 * nbinom_pmf(k, m, 1 / beta) for m in means])
    fit = fit_intensity_mle(counts, x, w, label, center=0.005, half_width=0.0005)
    assert fit.estimate.beta == pytest.approx(beta, abs=1e-6)
    assert fit.shape == pytest.approx((-0.4, -0.1), abs=1e-6)
    assert fit.estimate.kbar == pytest.approx(means.mean(), rel=1e-6)
    # without spread inside groups and one contrast it agrees with mle-weighted
    weighted = fit_grouped_mle(counts, means / means.mean())
    assert fit.estimate.beta == pytest.approx(weighted.beta, abs=1e-6)
    assert fit.estimate.beta_err == pytest.approx(weighted.beta_err, rel=0.05)
    assert fit.spread == pytest.approx(np.var(shape) / np.mean(shape) ** 2, rel=1e-6)


def test_no_photons_and_bad_input() -> None:
    x = np.zeros(4)
    fit = fit_intensity_mle(np.zeros((2, 3)), x, np.ones(4), [0, 0, 1, 1])
    assert "no-data" in fit.estimate.flags
    with pytest.raises(EstimatorError, match="label"):
        fit_intensity_mle(np.ones((2, 3)), x, np.ones(4), [0, 0, 1, 2])
    with pytest.raises(EstimatorError, match="one entry per pixel"):
        fit_intensity_mle(np.ones((2, 3)), x, np.ones(3), [0, 0, 1, 1])


def test_group_moments_are_the_bincounts_bit_for_bit():
    from xsvs_bluesky.core._mle_kernels import _group_moments

    rng = np.random.default_rng(7)
    for n_groups, n_pixels in ((1, 1), (3, 50), (16, 4500)):
        label = np.sort(rng.integers(0, n_groups, n_pixels)).astype(np.intp)
        u = rng.lognormal(0.0, 0.5, n_pixels)
        x = rng.uniform(-1.0, 1.0, n_pixels)
        factors = np.vstack([x, x**2])
        got = _group_moments(label, u, factors, n_groups + 2)  # two empty groups
        want = [np.bincount(label, weights=u, minlength=n_groups + 2)] + [
            np.bincount(label, weights=u * f, minlength=n_groups + 2) for f in factors
        ]
        assert got.tobytes() == np.array(want).tobytes()
