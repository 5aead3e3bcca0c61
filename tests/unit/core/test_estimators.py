"""Contrast estimators: exact check values, MLE correctness, error bars, dispatch."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import optimize, stats

from xsvs_bluesky.core.estimators import (
    ESTIMATORS,
    FLAGS,
    ContrastEstimate,
    EstimatorError,
    estimate_contrast,
    fit_grouped_mle,
    fit_low_count,
    fit_mle,
    fit_moments,
    legacy_r_minus_1,
    nbinom_logpmf,
    nbinom_pmf,
)
from xsvs_bluesky.errors import XSVSError

K_MAX = 400  # bins of the expected histograms (tail mass < 1e-30)

# SCIENCE.md section 4: (kbar, M) -> beta, and the legacy R-1 of the same law
CHECKS = [
    (0.05, 5.0, 0.2, 0.201806),
    (0.5, 4.0, 0.25, 0.446703),
    (2.0, 2.0, 0.5, 3.5),
    (7.0, 50.0, 0.02, 706.97),
]


def expected_histogram(kbar: float, m_modes: float, n: float = 1e9) -> np.ndarray:
    """Exact NB pmf times n, as float 'counts'."""
    return n * nbinom_pmf(np.arange(K_MAX), kbar, m_modes)


def sample_histogram(
    rng: np.random.Generator, kbar: float, m_modes: float, n: int
) -> np.ndarray:
    """Histogram of n iid NB samples, drawn exactly as Multinomial(n, pmf)."""
    p = nbinom_pmf(np.arange(K_MAX), kbar, m_modes)
    return rng.multinomial(n, p / p.sum())


# ----------------------------------------------------------------- the law
def test_nbinom_pmf_scikit_beam_check_values() -> None:
    # scikit-beam's test evaluates the pmf at x = 0, 0.4, ..., 2.0
    # (gamma-function continuation), K = 3.15, M = 1.9
    x = np.linspace(0.0, 2.0, 6)
    expected = [0.15609113, 0.17669628, 0.18451672, 0.1837303, 0.17729389, 0.16731627]
    np.testing.assert_allclose(nbinom_pmf(x, 3.15, 1.9), expected, atol=5e-9)


@pytest.mark.parametrize(
    ("kbar", "m_modes"), [(0.05, 5.0), (3.15, 1.9), (7, 50), (40, 3)]
)
def test_nbinom_pmf_equals_scipy(kbar: float, m_modes: float) -> None:
    k = np.arange(2000)
    ref = stats.nbinom(n=m_modes, p=m_modes / (m_modes + kbar)).pmf(k)
    np.testing.assert_allclose(
        nbinom_pmf(k, kbar, m_modes), ref, rtol=1e-11, atol=1e-300
    )
    assert nbinom_pmf(k, kbar, m_modes).sum() == pytest.approx(1.0, abs=1e-12)


def test_nbinom_poisson_limit_and_edges() -> None:
    k = np.arange(30)
    np.testing.assert_allclose(
        nbinom_pmf(k, 2.5, np.inf), stats.poisson(2.5).pmf(k), rtol=1e-12
    )
    # NB/Poisson = 1 + O(k^2/M): M = 1e9 and 1e15 are Poisson to 1e-6 and 1e-12
    np.testing.assert_allclose(
        nbinom_pmf(k, 2.5, 1e9), stats.poisson(2.5).pmf(k), rtol=1e-6
    )
    np.testing.assert_allclose(
        nbinom_pmf(k, 2.5, 1e15), stats.poisson(2.5).pmf(k), rtol=1e-12
    )
    # across the switch to Stirling's series (M = 1e4) the pmf stays smooth
    for m_modes in (9_999.999, 10_000.001, 3e4, 1e6):
        ref = stats.nbinom(n=m_modes, p=m_modes / (m_modes + 2.5)).pmf(k[:15])
        np.testing.assert_allclose(nbinom_pmf(k[:15], 2.5, m_modes), ref, rtol=1e-9)
    assert nbinom_pmf(-1, 1.0, 2.0) == 0.0
    np.testing.assert_array_equal(nbinom_pmf([0, 1, 2], 0.0, 3.0), [1.0, 0.0, 0.0])
    # large k and M neither overflow nor underflow to nonsense
    assert np.isfinite(nbinom_logpmf(5000, 4000.0, 1e6))


# --------------------------------------------------------- exact check values
@pytest.mark.parametrize(("kbar", "m_modes", "beta", "r1"), CHECKS)
def test_exact_pmf_gives_beta(
    kbar: float, m_modes: float, beta: float, r1: float
) -> None:
    h = expected_histogram(kbar, m_modes)
    assert fit_mle(h).beta == pytest.approx(beta, abs=1e-6)
    assert fit_mle(h).M == pytest.approx(m_modes, rel=1e-6)
    assert fit_low_count(h, "p0p1").beta == pytest.approx(beta, abs=1e-6)
    assert fit_low_count(h, "p0p2").beta == pytest.approx(beta, abs=1e-6)
    assert fit_low_count(h).beta == pytest.approx(beta, abs=1e-6)
    assert fit_moments(h).beta == pytest.approx(beta, abs=1e-6)
    assert fit_grouped_mle(h[None, :], None, adjust=False).beta == pytest.approx(
        beta, abs=1e-6
    )
    r = legacy_r_minus_1(h)
    assert r.beta == pytest.approx(r1, rel=1e-5)
    assert r.estimator == "r-1"
    assert "legacy-r-1" in r.flags


def test_estimator_names_on_results() -> None:
    h = expected_histogram(0.5, 4.0, 1e5)
    assert fit_mle(h).estimator == "mle"
    assert fit_moments(h).estimator == "moments"
    assert fit_low_count(h).estimator == "low-count"
    assert fit_low_count(h, "p0p1").estimator == "low-count-p0p1"
    assert fit_low_count(h, "p0p2").estimator == "low-count-p0p2"
    assert fit_grouped_mle(np.stack([h, h])).estimator == "mle-frames"
    assert fit_grouped_mle(np.stack([h, h]), [1.0, 1.0]).estimator == "mle-weighted"


# ------------------------------------------------------------- MLE is the MLE
def test_mle_maximises_the_nb_likelihood() -> None:
    rng = np.random.default_rng(11)
    worst = 0.0
    for _ in range(40):
        kbar = math.exp(rng.uniform(math.log(0.03), math.log(8.0)))
        m_modes = 1.0 / rng.uniform(0.05, 0.6)
        h = sample_histogram(rng, kbar, m_modes, int(rng.uniform(5e3, 1e5)))
        est = fit_mle(h)
        k = np.arange(h.size)
        mean = (h @ k) / h.sum()
        assert est.kbar == pytest.approx(mean, rel=1e-14)

        def nll(
            b: float, h: np.ndarray = h, k: np.ndarray = k, mean: float = mean
        ) -> float:
            return -float(h @ stats.nbinom.logpmf(k, 1 / b, 1 / (1 + b * mean)))

        if "boundary" in est.flags:
            assert nll(1e-7) <= nll(1e-3)
            continue
        ref = optimize.minimize_scalar(
            nll,
            bounds=(0.3 * est.beta, 3 * est.beta),
            method="bounded",
            options={"xatol": 1e-10},
        )
        worst = max(worst, abs(ref.x - est.beta) / est.beta_err)
    assert worst < 1e-3


def test_mle_observed_information_matches_formula() -> None:
    # SCIENCE.md: I(M) = N psi'(M) - sum h psi'(k+M) - N kbar/(M(M+kbar))
    from scipy.special import polygamma

    rng = np.random.default_rng(3)
    h = sample_histogram(rng, 1.3, 3.0, 50_000)
    est = fit_mle(h)
    k = np.arange(h.size)
    n, m_hat, kbar = h.sum(), est.M, est.kbar
    info = (
        n * polygamma(1, m_hat)
        - h @ polygamma(1, k + m_hat)
        - n * kbar / (m_hat * (m_hat + kbar))
    )
    assert est.M_err == pytest.approx(info**-0.5, rel=1e-7)
    assert est.beta_err == pytest.approx(est.M_err / est.M**2, rel=1e-12)
    var = (h @ (k - kbar) ** 2) / (n - 1)
    assert est.kbar_err == pytest.approx(math.sqrt(var / n), rel=1e-10)


# ---------------------------------------------------------- standard errors
# SCIENCE.md: (kbar, M, N): empirical sd, Fisher SE of beta (300 replicates)
SE_CHECKS = [
    (0.5, 4.0, 20_000, 0.0240, 0.0249),
    (0.05, 4.0, 200_000, 0.0722, 0.0714),
    (3.0, 20.0, 20_000, 0.00389, 0.00391),
]


@pytest.mark.parametrize(("kbar", "m_modes", "n", "emp_ref", "fisher_ref"), SE_CHECKS)
def test_mle_standard_error(
    kbar: float, m_modes: float, n: int, emp_ref: float, fisher_ref: float
) -> None:
    # Fisher SE at the truth: the observed information of the expected histogram
    fisher = fit_mle(expected_histogram(kbar, m_modes, n)).beta_err
    assert fisher == pytest.approx(fisher_ref, rel=0.01)
    rng = np.random.default_rng(2024)
    reps = 1500
    fits = [fit_mle(sample_histogram(rng, kbar, m_modes, n)) for _ in range(reps)]
    beta = np.array([f.beta for f in fits])
    err = np.array([f.beta_err for f in fits])
    sd = beta.std(ddof=1)
    tol = 4.0 / math.sqrt(2 * (reps - 1))  # 4 sigma of a sample sd
    assert sd / fisher == pytest.approx(1.0, abs=tol)
    assert np.mean(err) / fisher == pytest.approx(1.0, abs=tol)
    assert sd == pytest.approx(emp_ref, rel=tol + 4.0 / math.sqrt(2 * 299))
    assert abs(beta.mean() - 1 / m_modes) < 4 * sd / math.sqrt(reps)


def test_error_bars_cover_the_truth() -> None:
    # Poisson-gamma samples over kbar 0.02 .. 8: +-1 SE covers beta ~68 %
    rng = np.random.default_rng(7)
    n_cases = 300
    kbars = np.exp(rng.uniform(math.log(0.02), math.log(8.0), n_cases))
    betas = rng.uniform(0.05, 0.5, n_cases)
    hits = {"mle": 0, "moments": 0, "low-count": 0}
    for kbar, beta in zip(kbars, betas, strict=True):
        pairs_per_sample = 0.5 * kbar**2 * (1 + beta)
        n = int(max(5_000, 1_500 / pairs_per_sample))
        h = sample_histogram(rng, kbar, 1 / beta, n)
        for name, fit in (("mle", fit_mle), ("moments", fit_moments)):
            e = fit(h)
            hits[name] += abs(e.beta - beta) <= e.beta_err
        if kbar < 1.0:
            e = fit_low_count(h)
            hits["low-count"] += abs(e.beta - beta) <= e.beta_err
    coverage = hits["mle"] / n_cases
    assert 0.55 <= coverage <= 0.80, hits
    assert 0.55 <= hits["moments"] / n_cases <= 0.80, hits
    n_low = int(np.sum(kbars < 1.0))
    assert 0.55 <= hits["low-count"] / n_low <= 0.80, hits


def test_coverage_on_speckle_frames() -> None:
    # end to end with the synthetic frame generator (gamma intensities, Poisson)
    from xsvs_bluesky.core.synthetic import speckle_frames

    rng = np.random.default_rng(5)
    hits = 0
    total = 0
    for kbar in np.exp(np.linspace(math.log(0.1), math.log(6.0), 8)):
        for beta in np.linspace(0.1, 0.45, 25):
            pairs_per_frame = 0.5 * kbar**2 * (1 + beta) * 64 * 64
            n_frames = max(1, round(600 / pairs_per_frame))
            fr = speckle_frames(n_frames, (64, 64), kbar, beta, rng=rng)
            est = fit_mle(np.bincount(fr.ravel()))
            hits += abs(est.beta - beta) <= est.beta_err
            total += 1
    assert 0.55 <= hits / total <= 0.80


# ------------------------------------------------------------------ boundary
def test_boundary_on_under_dispersed_and_poisson_data() -> None:
    est = fit_mle([50, 50])  # k in {0, 1}: variance 0.25 < mean 0.5
    assert est.beta == 0.0
    assert est.M == math.inf
    assert "boundary" in est.flags
    poisson = 1e7 * stats.poisson(0.7).pmf(np.arange(60))
    est = fit_mle(poisson)  # variance == mean: boundary or a negligible beta
    assert est.beta < 1e-8
    rng = np.random.default_rng(1)
    n = 50_000
    fits = [fit_mle(np.bincount(rng.poisson(0.7, n))) for _ in range(200)]
    frac = np.mean(["boundary" in f.flags for f in fits])
    assert 0.35 < frac < 0.65  # half the samples are under-dispersed
    betas = np.array([f.beta for f in fits])
    assert np.all(betas >= 0)
    # the boundary error bar is the information bound sqrt(2/N)/kbar
    at_zero = next(f for f in fits if "boundary" in f.flags)
    assert at_zero.beta_err == pytest.approx(math.sqrt(2 / n) / 0.7, rel=0.03)
    assert np.mean(betas < 2 * at_zero.beta_err) > 0.9


def test_no_data_and_low_statistics_flags() -> None:
    for fit in (fit_mle, fit_moments, fit_low_count):
        empty = fit(np.zeros(5))
        assert "no-data" in empty.flags
        assert math.isnan(empty.beta)
        dark = fit([1000.0])  # samples but no photons
        assert "no-data" in dark.flags
    sparse = fit_mle([10_000, 30, 2])
    assert "low-statistics" in sparse.flags  # 2 photon pairs
    assert "low-statistics" not in fit_mle(expected_histogram(0.5, 4, 1e5)).flags


def test_grouped_mle_consistency() -> None:
    rng = np.random.default_rng(4)
    groups = np.stack([sample_histogram(rng, 0.8, 5.0, 20_000) for _ in range(5)])
    pooled = fit_mle(groups.sum(axis=0))
    # equal weights: one shared mean, identical to the pooled MLE
    same = fit_grouped_mle(groups, np.ones(5))
    assert same.beta == pytest.approx(pooled.beta, rel=1e-9)
    assert same.beta_err == pytest.approx(pooled.beta_err, rel=1e-6)
    assert same.kbar == pytest.approx(pooled.kbar, rel=1e-12)
    # one group with a free mean and no adjustment is the plain MLE
    single = fit_grouped_mle(groups[:1], None, adjust=False)
    assert single.beta == pytest.approx(fit_mle(groups[0]).beta, rel=1e-12)


def test_weighted_mle_maximises_joint_likelihood() -> None:
    rng = np.random.default_rng(8)
    w = np.array([0.7, 0.9, 1.0, 1.1, 1.4])
    counts = np.stack([sample_histogram(rng, 1.5 * wi, 4.0, 30_000) for wi in w])
    est = fit_grouped_mle(counts, w)
    k = np.arange(counts.shape[1])
    n_g = counts.sum(axis=1)

    def nll(p: np.ndarray) -> float:
        scale, b = p
        mu = scale * w
        return -float(
            np.sum(counts * stats.nbinom.logpmf(k, 1 / b, 1 / (1 + b * mu[:, None])))
        )

    ref = optimize.minimize(
        nll, [1.4, 0.2], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-9}
    )
    assert est.beta == pytest.approx(ref.x[1], abs=1e-4 * est.beta_err + 1e-7)
    assert est.kbar == pytest.approx(ref.x[0] * (n_g @ w) / n_g.sum(), rel=1e-6)
    assert abs(est.beta - 0.25) < 4 * est.beta_err


# ----------------------------------------------------------- the result type
def test_contrast_estimate_round_trip() -> None:
    est = fit_mle(expected_histogram(0.5, 4.0, 1e5))
    d = est.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert ContrastEstimate.from_dict(d) == est
    assert isinstance(d["flags"], list)
    assert set(d) == {
        "beta", "beta_err", "M", "M_err", "kbar", "kbar_err",
        "estimator", "flags", "n_samples",
    }  # fmt: skip
    assert est.n_samples == 100_000
    with pytest.raises(AttributeError):
        est.beta = 1.0  # type: ignore[misc]
    assert set(FLAGS) >= {"boundary", "low-statistics", "no-convergence"}


def test_invalid_input_raises() -> None:
    with pytest.raises(EstimatorError, match="shape"):
        fit_mle(np.ones((2, 3)))
    with pytest.raises(EstimatorError, match="non-negative"):
        fit_mle([1.0, -1.0])
    with pytest.raises(EstimatorError, match="identity"):
        fit_low_count([1, 2, 3], "p1p2")
    with pytest.raises(EstimatorError, match="one entry per group"):
        fit_grouped_mle(np.ones((3, 4)), [1.0, 1.0])
    with pytest.raises(EstimatorError, match="> 0"):
        fit_grouped_mle(np.ones((2, 4)), [1.0, 0.0])
    assert issubclass(EstimatorError, XSVSError)
    assert issubclass(EstimatorError, ValueError)


# -------------------------------------------------- estimate_contrast dispatch
histogram = pytest.importorskip("xsvs_bluesky.core.histogram")


def _partitions_and_frames(
    rng: np.random.Generator,
) -> tuple[Any, np.ndarray, list[float]]:
    from xsvs_bluesky.core.geometry import Partitions
    from xsvs_bluesky.core.synthetic import speckle_frames

    shape = (64, 64)
    rows, cols = np.indices(shape)
    q_map = np.hypot(rows - 31.5, cols - 31.5)  # a 'q' in px
    parts = Partitions.from_centers(q_map, [8.0, 16.0, 24.0, 100.0], 3.5)
    betas = [0.1, 0.2, 0.3]
    beta_map = np.full(shape, 0.2)
    for c, b in zip([8.0, 16.0, 24.0], betas, strict=True):
        beta_map[np.abs(q_map - c) <= 3.5] = b
    frames = speckle_frames(60, shape, 1.0, beta_map, rng=rng)
    return parts, frames, betas


def test_estimate_contrast_per_partition() -> None:
    rng = np.random.default_rng(12)
    parts, frames, betas = _partitions_and_frames(rng)
    acc = histogram.HistogramAccumulator(parts, keep_frame_histograms=True)
    acc.update(frames)
    for name in ESTIMATORS:
        if name == "mle-intensity":  # needs intensity groups (tests/unit/core)
            continue
        res = estimate_contrast(acc, name)
        assert len(res) == 4
        assert "no-data" in res[3].flags  # the empty partition
        for est, pix, beta in zip(res[:3], parts.pixels[:3], betas, strict=True):
            assert est.n_samples == pix.size * 60
            if name != "r-1":
                assert abs(est.beta - beta) < 5 * est.beta_err + 0.01, (name, est)
    # single-histogram estimators see the partition's summed histogram
    mle = estimate_contrast(acc, "mle")
    for est, counts in zip(mle[:3], acc.counts[:3], strict=True):
        assert est == fit_mle(counts)


def test_estimate_contrast_errors() -> None:
    rng = np.random.default_rng(13)
    parts, frames, _ = _partitions_and_frames(rng)
    acc = histogram.HistogramAccumulator(parts)
    acc.update(frames[:5])
    with pytest.raises(EstimatorError, match="valid estimators: mle, moments"):
        estimate_contrast(acc, "chi2")
    for name in ("mle-frames", "pyxsvs-lsq"):
        with pytest.raises(EstimatorError, match="keep_frame_histograms=True"):
            estimate_contrast(acc, name)
    acc_f = histogram.HistogramAccumulator(parts, keep_frame_histograms=True)
    acc_f.update(frames[:5])
    with pytest.raises(EstimatorError, match="one mean per partition"):
        estimate_contrast(acc_f, "pyxsvs-lsq", legacy_mean=[1.0, 2.0])


def test_estimate_contrast_weighted_uses_groups() -> None:
    from xsvs_bluesky.core.geometry import Partitions
    from xsvs_bluesky.core.synthetic import speckle_frames

    rng = np.random.default_rng(14)
    shape = (128, 128)
    w = np.clip(rng.normal(1.0, 0.1, shape), 0.5, 1.5)
    w /= w.mean()
    q_map = np.hypot(*(np.indices(shape) - 63.5))
    parts = Partitions.from_centers(q_map, [30.0], 25.0)
    groups = parts.split_by(w, n_groups=16)
    frames = speckle_frames(40, shape, 2.0, 0.25, efficiency=w, rng=rng)
    acc = histogram.HistogramAccumulator(groups)
    acc.update(frames)
    (weighted,) = estimate_contrast(acc, "mle-weighted")
    direct = fit_grouped_mle(acc.counts, groups.weight)
    assert weighted == direct
    (raw,) = estimate_contrast(acc, "mle")
    s2 = float(np.var(w.ravel()[parts.pixels[0]]))
    assert raw.beta - weighted.beta == pytest.approx(s2 * 1.25, rel=0.4)
    assert abs(weighted.beta - 0.25) < 3.5 * weighted.beta_err
