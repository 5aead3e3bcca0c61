"""Tests of xsvs_bluesky.core.dynamics: visibility kernels, fits, D."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import integrate

from xsvs_bluesky.core._kernels_dyn import exponential_slope
from xsvs_bluesky.core.dynamics import (
    DiffusionFit,
    DynamicsFit,
    dead_time_kernel,
    exponential_kernel,
    fit_diffusion,
    fit_dynamics,
    fit_visibility,
    numerical_kernel,
    stretched_kernel,
    visibility_kernel,
)
from xsvs_bluesky.core.estimators import fit_mle
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.errors import FitError

# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------

EXP_CHECK = [
    (0.01, 0.99336653),
    (0.1, 0.93653765),
    (0.5, 0.73575888),
    (1.0, 0.56766764),
    (2.0, 0.37728945),
    (10.0, 0.095),
    (100.0, 0.00995),
]

STRETCHED_CHECK = [
    ((1.0, 1.0, 1.0), 0.56766764),
    ((0.3, 1.0, 0.5), 0.57422862),
    ((3.0, 1.0, 1.5), 0.32662888),
    ((10.0, 2.0, 0.8), 0.16709437),
]


@pytest.mark.parametrize(("x", "expected"), EXP_CHECK)
def test_exponential_kernel_check_values(x, expected):
    assert exponential_kernel(x) == pytest.approx(expected, rel=1e-7)


def test_exponential_kernel_vector_limits_and_errors():
    x = np.array([c[0] for c in EXP_CHECK])
    np.testing.assert_allclose(
        exponential_kernel(x), [c[1] for c in EXP_CHECK], rtol=1e-7
    )
    assert exponential_kernel(0.0) == 1.0
    # small x: 1 - 2x/3 + x^2/3; large x: 1/x - 1/(2 x^2)
    assert exponential_kernel(1e-9) == pytest.approx(1 - 2e-9 / 3, rel=1e-15)
    assert exponential_kernel(1e200) == pytest.approx(1e-200, rel=1e-12)
    assert math.isnan(exponential_kernel(math.nan))
    # both branches agree where they meet (y = 2x = 0.1)
    below, above = exponential_kernel([0.05 * (1 - 1e-12), 0.05 * (1 + 1e-12)])
    assert below == pytest.approx(above, rel=1e-13)
    with pytest.raises(ValueError, match="Gamma"):
        exponential_kernel([0.5, -1.0])


@pytest.mark.parametrize("x", [1e-9, 1e-4, 0.01, 0.0499, 0.0501, 0.3, 1.0, 5.0, 1e3])
def test_exponential_slope_matches_high_precision_derivative(x):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40

    def k(lx):  # the kernel as a function of log x
        y = 2 * mpmath.exp(lx)
        return 2 * (mpmath.exp(-y) - 1 + y) / y**2

    expected = float(mpmath.diff(k, mpmath.log(mpmath.mpf(x))))
    assert exponential_slope(np.array([x]))[0] == pytest.approx(expected, rel=1e-11)
    # the two branches meet at y = 2x = 0.1, the slope is 0 at x = 0
    below, above = exponential_slope(np.array([0.05 * (1 - 1e-12), 0.05 * (1 + 1e-12)]))
    assert below == pytest.approx(above, rel=1e-12)
    assert exponential_slope(np.array([0.0]))[0] == 0.0


@pytest.mark.parametrize(("args", "expected"), STRETCHED_CHECK)
def test_stretched_kernel_check_values(args, expected):
    assert stretched_kernel(*args) == pytest.approx(expected, rel=1e-7)


def _stretched_by_quad(T, tau0, g):
    """(2/T) int_0^T (1 - tau/T) exp(-2 (tau/tau0)^g) dtau, brute force."""
    # beyond tau_cut the integrand is below exp(-300): negligible
    upper = min(T, tau0 * 150.0 ** (1.0 / g))
    edges = np.unique(np.concatenate([[0.0, upper], np.geomspace(1e-8, 1, 9) * upper]))
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        v, _ = integrate.quad(
            lambda tau: (1 - tau / T) * np.exp(-2 * (tau / tau0) ** g),
            lo,
            hi,
            epsabs=0,
            epsrel=1e-13,
            limit=200,
        )
        total += v
    return 2 * total / T


@pytest.mark.parametrize("g", [0.15, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.5])
def test_stretched_kernel_matches_quadrature(g):
    tau0 = 0.7
    T = np.array([1e-4, 0.01, 0.2, 0.7, 1.0, 3.0, 20.0, 1e3])
    closed = stretched_kernel(T, tau0, g)
    brute = np.array([_stretched_by_quad(t, tau0, g) for t in T])
    np.testing.assert_allclose(closed, brute, rtol=1e-9)


def test_stretched_kernel_series_branch_continuous_and_exponential_limit():
    g = 0.7
    # the series is used for S = 2 (T/tau0)^g < 1
    u_switch = 0.5 ** (1 / g)
    lo, hi = stretched_kernel(u_switch * np.array([1 - 1e-14, 1 + 1e-14]), 1.0, g)
    assert lo == pytest.approx(hi, rel=1e-12)
    x = np.geomspace(1e-6, 1e3, 40)
    np.testing.assert_allclose(
        stretched_kernel(x, 1.0, 1.0), exponential_kernel(x), rtol=1e-12
    )
    assert stretched_kernel(0.0, 1.0, 0.5) == 1.0
    with pytest.raises(ValueError, match="tau0"):
        stretched_kernel(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="exponent"):
        stretched_kernel(1.0, 1.0, -1.0)


def test_numerical_kernel_matches_closed_forms():
    T = np.array([0.0, 0.01, 0.5, 1.0, 7.0, 300.0])
    rate = 1.3
    # complex g1: only |g1|^2 = exp(-2 rate tau) matters
    num = numerical_kernel(T, lambda tau: np.exp((-rate + 5j) * tau))
    np.testing.assert_allclose(num, exponential_kernel(rate * T), rtol=1e-9)
    num2 = numerical_kernel(T, g1_squared=lambda tau: np.exp(-2 * (tau / 0.4) ** 0.6))
    np.testing.assert_allclose(num2, stretched_kernel(T, 0.4, 0.6), rtol=1e-8)
    with pytest.raises(ValueError, match="exactly one"):
        numerical_kernel(1.0)


def _dead_time_brute(n, a, period, h):
    """(1/(n a)^2) sum_ij int_win_i int_win_j h(|t - t'|) by dblquad."""
    total = 0.0
    for i in range(n):
        lo = i * period
        # diagonal block: twice the triangle t' < t (h has a kink at t = t')
        v, _ = integrate.dblquad(
            lambda y, x: h(x - y),
            lo,
            lo + a,
            lambda x, lo=lo: lo,
            lambda x: x,
            epsabs=0,
            epsrel=1e-11,
        )
        total += 2 * v
        for j in range(i + 1, n):
            v, _ = integrate.dblquad(
                lambda y, x: h(x - y),
                j * period,
                j * period + a,
                lo,
                lo + a,
                epsabs=0,
                epsrel=1e-11,
            )
            total += 2 * v
    return total / (n * a) ** 2


@pytest.mark.parametrize(
    ("n", "a", "period", "rate", "g"),
    [
        (2, 1.0, 1.5, 0.7, 1.0),
        (3, 1.0, 2.5, 0.4, 1.0),
        (3, 0.5, 0.8, 1.3, 0.6),
        (4, 1.0, 1.0, 0.5, 1.7),
        (3, 2e-3, 5e-3, 150.0, 1.0),
    ],
)
def test_dead_time_kernel_matches_double_integral(n, a, period, rate, g):
    def h(u):
        return np.exp(-2 * (rate * u) ** g)

    brute = _dead_time_brute(n, a, period, h)
    closed = dead_time_kernel(a, period, n, rate=rate, exponent=g)
    numeric = dead_time_kernel(a, period, n, g1_squared=h)
    assert closed == pytest.approx(brute, rel=1e-9)
    assert numeric == pytest.approx(brute, rel=1e-9)


def test_dead_time_kernel_limits():
    a, rate = 1e-3, 400.0
    n = np.arange(1, 9)
    # no dead time: one exposure of n t_e
    np.testing.assert_allclose(
        dead_time_kernel(a, a, n, rate=rate),
        exponential_kernel(rate * n * a),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        dead_time_kernel(a, a, n, rate=rate, exponent=0.6),
        stretched_kernel(n * a, 1 / rate, 0.6),
        rtol=1e-10,
    )
    # frames far apart are independent patterns: contrast k(t_e) / n
    np.testing.assert_allclose(
        dead_time_kernel(a, 1.0, n, rate=rate),
        exponential_kernel(rate * a) / n,
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        dead_time_kernel(a, 10.0, n, rate=rate, exponent=0.8),
        stretched_kernel(a, 1 / rate, 0.8) / n,
        rtol=1e-9,
    )
    # for a decreasing |g1|^2: k(t_e) / n <= kernel <= k(n t_e)
    for period in (1.5 * a, 3 * a, 10 * a):
        value = dead_time_kernel(a, period, 4, rate=rate)
        assert (
            exponential_kernel(rate * a) / 4 < value < exponential_kernel(4 * rate * a)
        )
    with pytest.raises(ValueError, match="period"):
        dead_time_kernel(a, 0.5 * a, 2, rate=rate)
    with pytest.raises(ValueError, match="n_frames"):
        dead_time_kernel(a, a, 0, rate=rate)


def test_visibility_kernel_dispatch():
    t = np.full(4, 1e-3)
    out = visibility_kernel(
        t, 300.0, n_frames=[1, 4, 4, 4], frame_period=[1e-3, 1e-3, 1.5e-3, 1.5e-3]
    )
    assert out[0] == pytest.approx(exponential_kernel(0.3), rel=1e-14)
    assert out[1] == pytest.approx(exponential_kernel(1.2), rel=1e-14)
    assert out[2] == pytest.approx(dead_time_kernel(1e-3, 1.5e-3, 4, rate=300.0))
    stretched = visibility_kernel(t[:1], 300.0, exponent=0.5)
    assert stretched[0] == pytest.approx(stretched_kernel(1e-3, 1 / 300, 0.5))


# --------------------------------------------------------------------------
# fit of beta(t_e) per partition
# --------------------------------------------------------------------------

T_EXP = 5e-5 * 2.0 ** np.arange(8)  # s, like the ID10 example series


def test_fit_exponential_exact_data():
    beta = 0.23 * exponential_kernel(800.0 * T_EXP)
    fit = fit_visibility(T_EXP, beta, 1e-3 * np.ones(8), q=0.005, partition=3)
    assert fit.gamma == pytest.approx(800.0, rel=1e-8)
    assert fit.beta0 == pytest.approx(0.23, rel=1e-8)
    assert fit.chi2 < 1e-12
    assert (fit.dof, fit.n_points, fit.partition, fit.q) == (6, 8, 3, 0.005)
    assert fit.exponent == 1.0
    assert fit.exponent_err == 0.0
    assert fit.flags == ()
    assert fit.tau0 == pytest.approx(1 / 800.0)


def test_fit_exponential_errors_match_linearised_covariance():
    gamma, beta0, sigma = 800.0, 0.23, 2e-3
    beta = beta0 * exponential_kernel(gamma * T_EXP)
    fit = fit_visibility(T_EXP, beta, sigma)
    # covariance from the analytic Jacobian of beta0 k(Gamma T)
    x = gamma * T_EXP
    k = exponential_kernel(x)
    dk = (exponential_kernel(x * (1 + 1e-6)) - exponential_kernel(x * (1 - 1e-6))) / (
        2e-6 * x
    )
    jac = np.column_stack([k, beta0 * T_EXP * dk]) / sigma
    cov = np.linalg.inv(jac.T @ jac)
    assert fit.beta0_err == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-5)
    assert fit.gamma_err == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-5)


def test_fit_error_bars_cover_truth_68_percent():
    """Gaussian beta noise: Gamma, beta0 in +-1 sigma ~68% of 300 replicates."""
    rng = np.random.default_rng(11)
    gamma, beta0 = 1500.0, 0.2
    truth = beta0 * exponential_kernel(gamma * T_EXP)
    err = 0.03 * truth + 5e-4
    hits_g = hits_b = 0
    chi2 = []
    n_rep = 300
    for _ in range(n_rep):
        fit = fit_visibility(T_EXP, truth + err * rng.standard_normal(8), err)
        hits_g += abs(fit.gamma - gamma) < fit.gamma_err
        hits_b += abs(fit.beta0 - beta0) < fit.beta0_err
        chi2.append(fit.chi2)
    # binomial sd of the fraction is 0.027
    assert 0.60 < hits_g / n_rep < 0.76
    assert 0.60 < hits_b / n_rep < 0.76
    assert np.mean(chi2) == pytest.approx(6.0, rel=0.12)  # dof = 8 - 2


def test_fit_stretched_exact_and_scaled_errors():
    beta = 0.3 * stretched_kernel(T_EXP, 4e-4, 0.65)
    err = 0.01 * beta
    fit = fit_visibility(T_EXP, beta, err, model="stretched")
    assert fit.model == "stretched"
    assert fit.exponent == pytest.approx(0.65, rel=1e-7)
    assert fit.gamma == pytest.approx(1 / 4e-4, rel=1e-7)
    assert fit.beta0 == pytest.approx(0.3, rel=1e-7)
    assert fit.dof == 5
    # scale_errors multiplies the errors by sqrt(chi2 / dof)
    noisy = beta * (1 + 0.02 * np.random.default_rng(3).standard_normal(8))
    a = fit_visibility(T_EXP, noisy, err, model="stretched")
    b = fit_visibility(T_EXP, noisy, err, model="stretched", scale_errors=True)
    factor = math.sqrt(a.chi2 / a.dof)
    assert b.exponent_err == pytest.approx(a.exponent_err * factor, rel=1e-6)
    assert b.gamma_err == pytest.approx(a.gamma_err * factor, rel=1e-6)


def test_fit_with_dead_time_recovers_rate():
    # one base exposure, frames summed by 1, 2, 4, ... 64, 10% duty cycle
    t_e, period, gamma = 1e-4, 1e-3, 1000.0
    n = 2 ** np.arange(7)
    beta = 0.25 * dead_time_kernel(t_e, period, n, rate=gamma)
    err = 0.01 * beta
    fit = fit_visibility(np.full(7, t_e), beta, err, frame_period=period, n_frames=n)
    assert fit.gamma == pytest.approx(gamma, rel=1e-7)
    assert fit.beta0 == pytest.approx(0.25, rel=1e-7)
    # the naive duration t_e + (n-1) P is badly biased
    naive = fit_visibility(t_e + (n - 1) * period, beta, err)
    assert naive.gamma < 0.8 * gamma
    assert "poor-fit" in naive.flags


def test_fit_skips_nan_and_flags():
    beta = 0.2 * exponential_kernel(900.0 * T_EXP)
    err = 0.01 * beta
    beta_nan = beta.copy()
    beta_nan[[1, 5]] = np.nan
    err_bad = err.copy()
    err_bad[6] = 0.0
    fit = fit_visibility(T_EXP, beta_nan, err_bad)
    assert fit.n_points == 5
    assert "skipped-points" in fit.flags
    assert fit.gamma == pytest.approx(900.0, rel=1e-8)
    with pytest.raises(FitError, match="needs at least 3"):
        fit_visibility(T_EXP[:2], beta[:2], err[:2], model="stretched")
    with pytest.raises(ValueError, match="model"):
        fit_visibility(T_EXP, beta, err, model="gaussian")
    with pytest.raises(ValueError, match="period"):
        fit_visibility(T_EXP, beta, err, frame_period=T_EXP / 2, n_frames=2)
    with pytest.raises(ValueError, match="n_frames"):
        fit_visibility(T_EXP, beta, err, n_frames=1.5)


def test_fit_flags_unresolved_decay():
    slow = fit_visibility(T_EXP, 0.2 * exponential_kernel(5.0 * T_EXP), 1e-3)
    assert "decay-too-slow" in slow.flags
    fast = fit_visibility(T_EXP, 0.2 * exponential_kernel(1e5 * T_EXP), 1e-5)
    assert "decay-too-fast" in fast.flags


def test_results_are_frozen_and_serialisable():
    fit = fit_visibility(T_EXP, 0.2 * exponential_kernel(900.0 * T_EXP), 1e-3)
    assert isinstance(fit, DynamicsFit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.gamma = 1.0  # type: ignore[misc]
    d = fit.to_dict()
    assert d["gamma"] == fit.gamma and d["flags"] == []
    assert d["reduced_chi2"] == pytest.approx(fit.chi2 / 6)
    json.dumps(d)
    diff = fit_diffusion([0.004, 0.006], [480.0, 1080.0], [5.0, 9.0])
    assert isinstance(diff, DiffusionFit)
    assert json.loads(json.dumps(diff.to_dict()))["partitions"] == [0, 1]


# --------------------------------------------------------------------------
# D from Gamma = D q^2
# --------------------------------------------------------------------------


def test_fit_diffusion_exact_and_analytic_error():
    q = np.linspace(0.003, 0.01, 6)
    err = 0.02 * 3e7 * q**2
    diff = fit_diffusion(q, 3e7 * q**2, err)
    assert diff.D == pytest.approx(3e7, rel=1e-12)
    assert diff.D_err == pytest.approx(1 / math.sqrt(np.sum(q**4 / err**2)))
    assert diff.exponent == pytest.approx(2.0, abs=1e-10)
    assert diff.chi2 == pytest.approx(0.0, abs=1e-12)
    assert diff.dof == 5
    assert diff.flags == ()
    assert diff.prefactor == pytest.approx(3e7, rel=1e-8)


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_non_diffusive_rates_are_flagged(power):
    rng = np.random.default_rng(5)
    q = np.linspace(0.003, 0.01, 8)
    gamma = 1000.0 * (q / 0.006) ** power
    err = 0.03 * gamma
    diff = fit_diffusion(q, gamma + err * rng.standard_normal(8), err)
    assert "non-diffusive" in diff.flags
    assert diff.exponent == pytest.approx(power, abs=3 * diff.exponent_err)
    assert "poor-fit" in diff.flags


def test_fit_dynamics_flags_non_diffusive_but_not_diffusive():
    rng = np.random.default_rng(8)
    q = np.linspace(0.0035, 0.01, 8)
    flags = {}
    for power in (2.0, 3.0):
        gamma = 1000.0 * (q / 0.006) ** power
        truth = 0.2 * exponential_kernel(np.outer(T_EXP, gamma))
        err = 0.02 * truth + 3e-4
        beta = truth + err * rng.standard_normal(truth.shape)
        fits, diff = fit_dynamics(T_EXP, q, beta, err)
        assert all(f.ok for f in fits)
        flags[power] = diff.flags
        assert diff.exponent == pytest.approx(power, abs=3 * diff.exponent_err)
    assert "non-diffusive" not in flags[2.0]
    assert "non-diffusive" in flags[3.0]


def test_fit_dynamics_handles_missing_partition_and_shapes():
    q = np.array([0.004, 0.006, 0.008])
    truth = 0.2 * exponential_kernel(np.outer(T_EXP, 3e7 * q**2))
    beta = truth.copy()
    beta[1:, 1] = np.nan  # one point left in partition 1
    fits, diff = fit_dynamics(T_EXP, q, beta, 0.01 * truth)
    assert "too-few-points" in fits[1].flags and math.isnan(fits[1].gamma)
    assert fits[0].gamma == pytest.approx(3e7 * 0.004**2, rel=1e-7)
    assert diff.partitions == (0, 2)
    assert diff.D == pytest.approx(3e7, rel=1e-7)
    with pytest.raises(ValueError, match="n_exp, n_q"):
        fit_dynamics(T_EXP, q, beta.T, 0.01 * truth.T)
    fits, diff = fit_dynamics(T_EXP, q, np.full_like(beta, np.nan))
    assert diff.flags == ("too-few-partitions",) and math.isnan(diff.D)


# --------------------------------------------------------------------------
# end to end on seeded Poisson-gamma counts
# --------------------------------------------------------------------------


def _estimate_beta(hist):
    """The package's default estimator (negative-binomial MLE)."""
    est = fit_mle(hist)
    assert not {"boundary", "no-convergence", "no-data"} & set(est.flags)
    return est.beta, est.beta_err


def _synthetic_betas(rng, truth, kbar, n_samples):
    """Sample NB counts (gamma then Poisson) for each cell and estimate beta."""
    beta = np.empty_like(truth)
    err = np.empty_like(truth)
    for i, j in np.ndindex(truth.shape):
        modes = 1 / truth[i, j]
        intensity = rng.gamma(modes, kbar[i] / modes, size=n_samples)
        hist = np.bincount(rng.poisson(intensity))
        beta[i, j], err[i, j] = _estimate_beta(hist)
    return beta, err


def test_speckle_frames_histogram_estimate_is_consistent():
    # the same law through the package's frame generator (one cell)
    frames = speckle_frames(40, (64, 64), 1.5, 0.2, rng=1)
    beta, err = _estimate_beta(np.bincount(frames.ravel()))
    assert beta == pytest.approx(0.2, abs=3 * err)


def test_brownian_series_recovers_D():
    """8 exposures doubling from 5e-5 s, 8 partitions, Gamma T ~0.02 .. 19."""
    rng = np.random.default_rng(2024)
    D = 3e7  # Angstrom^2/s (Stokes-Einstein: ~0.7 um spheres in water)
    q = np.linspace(0.0035, 0.01, 8)  # 1/Angstrom
    kbar = 0.5 * 2.0 ** np.arange(8)  # counts/pixel grow with exposure
    truth = 0.25 * exponential_kernel(np.outer(T_EXP, D * q**2))
    beta, err = _synthetic_betas(rng, truth, kbar, 200_000)
    fits, diff = fit_dynamics(T_EXP, q, beta, err)
    pulls = np.array([(f.gamma - D * f.q**2) / f.gamma_err for f in fits])
    assert np.all(np.abs(pulls) < 3)
    assert np.mean(np.abs(pulls) < 1) >= 0.5  # ~68% expected
    assert all(f.beta0 == pytest.approx(0.25, abs=3 * f.beta0_err) for f in fits)
    assert diff.D == pytest.approx(D, rel=0.05)
    assert abs(diff.D - D) < 3 * diff.D_err
    assert diff.exponent == pytest.approx(2.0, abs=3 * diff.exponent_err)
    assert "non-diffusive" not in diff.flags
    assert diff.dof == 7


def test_stretched_series_recovers_exponent():
    rng = np.random.default_rng(7)
    tau0 = np.array([5e-4, 1.2e-3])  # s
    g = 0.6
    kbar = 0.5 * 2.0 ** np.arange(8)
    truth = 0.25 * stretched_kernel(T_EXP[:, None], tau0[None, :], g)
    beta, err = _synthetic_betas(rng, truth, kbar, 300_000)
    fits, _ = fit_dynamics(T_EXP, [0.005, 0.006], beta, err, model="stretched")
    for fit, tau in zip(fits, tau0, strict=True):
        assert fit.exponent == pytest.approx(g, rel=0.1)
        assert abs(fit.exponent - g) < 3 * fit.exponent_err
        assert abs(fit.gamma - 1 / tau) < 3 * fit.gamma_err
    # the exponential model does not describe a stretched decay
    expo = fit_visibility(T_EXP, beta[:, 0], err[:, 0])
    assert expo.chi2 > fits[0].chi2 + 9


@pytest.mark.parametrize("exponent", [1.0, 0.7, 1.6])
def test_point_kernel_equals_visibility_kernel(exponent: float) -> None:
    """The least-squares shortcut for contiguous points gives the same values."""
    from xsvs_bluesky.core._fit_dyn import _point_kernel

    t = np.array([5e-5, 1e-4, 2e-4, 4e-4, 1e-3, 2e-3])
    nf = np.array([1.0, 1.0, 3.0, 1.0, 2.0, 1.0])
    period = np.where(nf > 1, t, t * 1.5)  # dead time only on single frames

    def not_used(r: float, g: float) -> np.ndarray:
        raise AssertionError("contiguous points never take the general kernel")

    for rate in (0.0, 37.0, 2.5e3, 4e6):
        general = visibility_kernel(
            t, rate, exponent=exponent, frame_period=period, n_frames=nf
        )
        fast = _point_kernel(t, period, nf, not_used)(rate, exponent)
        np.testing.assert_array_equal(fast, general)
    # frames summed with dead time: the general kernel is kept
    with_dead = np.where(nf > 1, t * 1.5, t)

    def general_kernel(r: float, g: float) -> np.ndarray:
        return np.asarray(visibility_kernel(t, r, exponent=g, n_frames=nf))

    assert _point_kernel(t, with_dead, nf, general_kernel) is general_kernel
