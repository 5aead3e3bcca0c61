"""Dynamics that say when they cannot be trusted: inflated errors, statuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xsvs_bluesky.core.dynamics import (
    DIFFUSION_STATUSES,
    DiffusionFit,
    fit_diffusion,
    fit_dynamics,
    fit_visibility,
    not_yet_determined,
)

Q = 0.002 + 0.001 * np.arange(9)


def test_good_diffusion_is_not_inflated() -> None:
    rng = np.random.default_rng(4)
    gamma = 4e7 * Q**2
    err = 0.03 * gamma
    fit = fit_diffusion(Q, gamma + err * rng.standard_normal(Q.size), err)
    assert fit.error_scale == 1.0
    assert fit.status == "diffusive"
    assert fit.describe().startswith("D = ")
    assert fit.D_err == pytest.approx(1 / math.sqrt(np.sum(Q**4 / err**2)))


def test_scatter_beyond_errors_inflates_d_error() -> None:
    rng = np.random.default_rng(5)
    gamma = 4e7 * Q**2
    err = 0.01 * gamma
    scattered = gamma * (1 + 0.05 * rng.standard_normal(Q.size))
    fit = fit_diffusion(Q, scattered, err)
    assert fit.reduced_chi2 > 2
    assert "poor-fit" in fit.flags
    assert fit.error_scale == pytest.approx(math.sqrt(fit.reduced_chi2))
    plain = 1 / math.sqrt(np.sum(Q**4 / err**2))
    assert fit.D_err == pytest.approx(plain * fit.error_scale)
    assert fit.status == "poor-fit"
    assert "poor fit" in fit.describe()
    assert fit.to_dict()["status"] == "poor-fit"
    assert fit.to_dict()["error_scale"] == fit.error_scale


def test_rates_not_scaling_as_q2_are_not_presented_as_d() -> None:
    # the real example: Gamma/q^2 spans decades, chi2/dof in the hundreds
    gamma = 1e9 * Q**3.5
    err = 0.05 * gamma
    fit = fit_diffusion(Q, gamma, err)
    assert "non-diffusive" in fit.flags and "poor-fit" in fit.flags
    assert fit.error_scale > 1
    assert fit.status == "non-diffusive"
    text = fit.describe()
    assert "not constant within errors" in text and "D is not given" in text


def test_not_yet_determined() -> None:
    assert not_yet_determined(1.0, 1.5)
    assert not_yet_determined(1.0, math.nan)
    assert not_yet_determined(math.inf, 0.1)
    assert not not_yet_determined(-1.0, 0.5)
    undetermined = DiffusionFit(1e6, 2e6, math.nan, math.nan, 0.1, 1)
    assert undetermined.status == "not yet determined"
    assert undetermined.describe() == "D not yet determined"
    assert DiffusionFit(*(math.nan,) * 5, 0).status == "no-data"
    assert set(DIFFUSION_STATUSES) >= {"diffusive", "poor-fit", "non-diffusive"}


def test_early_refit_on_two_exposures_is_not_yet_determined() -> None:
    times = np.array([1e-3, 2e-3])
    q = np.array([0.004])
    beta = np.array([[0.2], [0.19]])
    err = np.array([[0.05], [0.05]])
    fits, _ = fit_dynamics(times, q, beta, err)
    assert not fits[0].determined
    # many precise exposures: determined
    t = np.geomspace(1e-4, 1e-1, 8)
    x = 4e7 * 0.004**2 * t
    b = 0.2 * (np.expm1(-2 * x) + 2 * x) / (2 * x * x)
    fits, _ = fit_dynamics(t, q, b[:, None], np.full((8, 1), 0.002))
    assert fits[0].determined


def test_unmeasurably_fast_decay_stops_at_the_evaluation_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decay far faster than the shortest exposure leaves only beta0/Gamma.

    Points of the real example's outer ring after its first three exposures
    (beta falls as 1/t_e): the optimiser walked the beta0-Gamma valley for
    2000 evaluations (0.3-1.4 s, in every live refit).  It now stops at 300,
    and says so.
    """
    from scipy import optimize

    from xsvs_bluesky.core import _fit_dyn

    evaluations: list[int] = []
    original = optimize.least_squares

    def counted(*args: object, **kwargs: object) -> object:
        res = original(*args, **kwargs)
        evaluations.append(int(res.nfev))
        return res

    monkeypatch.setattr(_fit_dyn.optimize, "least_squares", counted)
    fit = fit_visibility(
        [5e-05, 1e-04, 2e-04],
        [0.08601712580783946, 0.05417089659186575, 0.01972779899135987],
        [0.024831271215472347, 0.012571671983806532, 0.006159981240773916],
    )
    assert evaluations == [300]
    assert "not-converged" in fit.flags and "decay-too-fast" in fit.flags
    # what the data do determine: beta0 / (Gamma t) at the points
    assert fit.chi2 == pytest.approx(0.7566, abs=2e-3)
    # a well-posed decay of the same points' scale converges in a few steps
    evaluations.clear()
    t = np.array([5e-05, 1e-04, 2e-04, 4e-04])
    x = 2 * 5e3 * t
    beta = 0.1 * 2 * (np.exp(-x) - 1 + x) / x**2
    good = fit_visibility(t, beta, np.full(4, 1e-3))
    assert evaluations[0] < 60 and "not-converged" not in good.flags
    assert good.gamma == pytest.approx(5e3, rel=1e-6)
