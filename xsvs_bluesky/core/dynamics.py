"""Dynamics: from the contrast ``beta(t_e)`` to relaxation rates and ``D``.

Per q partition, the contrast measured at several exposure times is fitted
with ``beta0 * k(t_e; Gamma[, gamma])`` where ``k`` is a visibility kernel
(exponential or stretched exponential ``g1``, with or without dead time
between summed frames); the rates ``Gamma(q)`` are then fitted with
``Gamma = D q^2`` and checked for the ``q^2`` scaling of diffusion.

This module is the public face; the work is done in the private modules
``_kernels_dyn`` (single-exposure kernels), ``_deadtime_dyn`` (summed frames
with dead time), ``_fit_dyn`` (fit per partition) and ``_diffusion_dyn``.

Units: exposure times in s, ``Gamma`` in 1/s, ``q`` in 1/Angstrom, ``D`` in
Angstrom^2/s.

References
----------
Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import ArrayLike

from xsvs_bluesky.core._deadtime_dyn import dead_time_kernel, visibility_kernel
from xsvs_bluesky.core._diffusion_dyn import (
    DIFFUSION_STATUSES,
    DiffusionFit,
    fit_diffusion,
    not_yet_determined,
)
from xsvs_bluesky.core._fit_dyn import (
    EXPONENT_BOUNDS,
    MODELS,
    DynamicsFit,
    _failed,
    fit_visibility,
)
from xsvs_bluesky.core._kernels_dyn import (
    exponential_kernel,
    numerical_kernel,
    stretched_kernel,
)
from xsvs_bluesky.errors import FitError, OptionError

__all__ = [
    "DIFFUSION_STATUSES",
    "DYNAMICS_FLAGS",
    "EXPONENT_BOUNDS",
    "MODELS",
    "DiffusionFit",
    "DynamicsFit",
    "dead_time_kernel",
    "exponential_kernel",
    "fit_diffusion",
    "fit_dynamics",
    "fit_visibility",
    "not_yet_determined",
    "numerical_kernel",
    "stretched_kernel",
    "visibility_kernel",
]

logger = logging.getLogger(__name__)

#: Every flag a DynamicsFit or DiffusionFit can carry, in a fixed order (the bit
#: order of the ``flags`` bitmask in the derived run's ``dynamics`` stream).
DYNAMICS_FLAGS: tuple[str, ...] = (
    "too-few-points",
    "fit-failed",
    "poor-fit",
    "unweighted",
    "skipped-points",
    "decay-too-fast",
    "decay-too-slow",
    "exponent-at-bound",
    "singular-covariance",
    "no-dof",
    "non-positive-beta0",
    "not-converged",
    "non-diffusive",
    "no-scaling-check",
    "too-few-partitions",
)


def fit_dynamics(
    exposure_times: ArrayLike,
    q: ArrayLike,
    beta: ArrayLike,
    beta_err: ArrayLike | None = None,
    model: str = "exponential",
    frame_period: ArrayLike | None = None,
    *,
    n_frames: ArrayLike = 1,
    scale_errors: bool = False,
) -> tuple[list[DynamicsFit], DiffusionFit]:
    """Fit every partition's ``beta(t_e)`` and then ``Gamma(q) = D q^2``.

    Parameters
    ----------
    exposure_times : array_like, shape (n_exp,)
        Exposure time of one frame of each exposure (s).
    q : array_like, shape (n_q,)
        Partition centres (1/Angstrom).
    beta : array_like, shape (n_exp, n_q)
        Contrast per exposure and partition (NaN = missing).
    beta_err : array_like, shape (n_exp, n_q), optional
        Standard errors of ``beta``; None for unit weights.
    model : {"exponential", "stretched"}
        Kernel model of every partition.
    frame_period : float or array_like (n_exp,), optional
        Frame period (s) when exposures sum ``n_frames`` frames with dead
        time; None for contiguous frames.
    n_frames : int or array_like (n_exp,)
        Frames summed into each exposure (default 1).
    scale_errors : bool
        Scale covariances by the reduced chi-square (default False).

    Returns
    -------
    fits : list of DynamicsFit
        One per partition; a partition that cannot be fitted gets NaN values
        and the flag ``"too-few-points"`` or ``"fit-failed"``.
    diffusion : DiffusionFit
        ``D`` and the q-exponent from the successful partitions (NaN with
        flag ``"too-few-partitions"`` when none).

    Raises
    ------
    ValueError
        For an unknown model or inconsistent shapes.

    References
    ----------
    Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
    """
    if model not in MODELS:
        raise OptionError(f"model {model!r} is not one of {', '.join(MODELS)}")
    t = np.asarray(exposure_times, dtype=float).ravel()
    qa = np.asarray(q, dtype=float).ravel()
    b = np.asarray(beta, dtype=float)
    if b.shape != (t.size, qa.size):
        raise OptionError(
            f"beta has shape {b.shape}; expected (n_exp, n_q) = ({t.size}, {qa.size})"
        )
    e = None if beta_err is None else np.asarray(beta_err, dtype=float)
    if e is not None and e.shape != b.shape:
        raise OptionError(f"beta_err has shape {e.shape}; expected {b.shape}")
    fits: list[DynamicsFit] = []
    for j, qj in enumerate(qa):
        n_ok = int(np.sum(np.isfinite(b[:, j])))
        try:
            fit = fit_visibility(
                t,
                b[:, j],
                None if e is None else e[:, j],
                model=model,
                partition=j,
                q=float(qj),
                frame_period=frame_period,
                n_frames=n_frames,
                scale_errors=scale_errors,
            )
        except FitError as exc:
            flag = "too-few-points" if "needs at least" in str(exc) else "fit-failed"
            logger.warning("dynamics: %s", exc)
            fit = _failed(j, float(qj), model, flag, n_ok)
        fits.append(fit)
    diffusion = _diffusion_of(fits, scale_errors)
    return fits, diffusion


def _diffusion_of(fits: list[DynamicsFit], scale_errors: bool) -> DiffusionFit:
    """D fit over the partitions with a usable rate."""
    use = [f for f in fits if f.ok and f.gamma > 0 and f.gamma_err > 0]
    if not use:
        nan = math.nan
        return DiffusionFit(nan, nan, nan, nan, nan, 0, ("too-few-partitions",))
    try:
        return fit_diffusion(
            [f.q for f in use],
            [f.gamma for f in use],
            [f.gamma_err for f in use],
            partitions=[f.partition for f in use],
            scale_errors=scale_errors,
        )
    except FitError as exc:
        logger.warning("dynamics: %s", exc)
        nan = math.nan
        return DiffusionFit(nan, nan, nan, nan, nan, 0, ("too-few-partitions",))
