"""Estimators of the speckle contrast ``beta`` from photon-count histograms.

The public face of the estimators.  Every estimator returns a
:class:`ContrastEstimate`; :func:`estimate_contrast` applies one by name to
every partition of a :class:`~xsvs_bluesky.core.histogram.HistogramAccumulator`.

=================  ==========================================================
name               what it is
=================  ==========================================================
``"mle"``          negative-binomial maximum likelihood (default)
``"moments"``      ``var/kbar^2 - 1/kbar``
``"low-count"``    exact identities ``P0/P1 - 1/kbar``, ``2 P0 P2/P1^2 - 1``
``"r-1"``          legacy ``2 P2 (1-P1)/P1^2 - 1`` (labelled, kbar << 1 only)
``"pyxsvs-lsq"``   legacy pyxsvs least squares (reproduces old results)
``"mle-weighted"`` MLE with group means ``kbar * w_g`` (flat field aware)
``"mle-frames"``   MLE with free per-frame means (intensity drift)
=================  ==========================================================

The statistics are explained in ``docs/explanation/statistics.md``.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._contrast import (
    FLAGS,
    ContrastEstimate,
    EstimatorError,
    empty_estimate,
)
from xsvs_bluesky.core._mle import fit_grouped_mle, fit_mle
from xsvs_bluesky.core._moments import (
    LOW_COUNT_IDENTITIES,
    fit_low_count,
    fit_moments,
    legacy_r_minus_1,
)
from xsvs_bluesky.core._nbinom import nbinom_logpmf, nbinom_pmf
from xsvs_bluesky.core.legacy_fit import LEGACY_STATIC_FRAMES, fit_pyxsvs_lsq
from xsvs_bluesky.options import ESTIMATORS

__all__ = [
    "ESTIMATORS",
    "FLAGS",
    "LOW_COUNT_IDENTITIES",
    "ContrastEstimate",
    "EstimatorError",
    "check_estimator",
    "estimate_contrast",
    "fit_grouped_mle",
    "fit_low_count",
    "fit_mle",
    "fit_moments",
    "fit_pyxsvs_lsq",
    "legacy_r_minus_1",
    "nbinom_logpmf",
    "nbinom_pmf",
]

logger = logging.getLogger(__name__)


_SINGLE = {
    "mle": fit_mle,
    "moments": fit_moments,
    "low-count": fit_low_count,
    "r-1": legacy_r_minus_1,
}
_NEEDS_FRAMES = ("mle-frames", "pyxsvs-lsq")


def check_estimator(name: str) -> str:
    """Return ``name`` if it is a known estimator, else raise.

    Raises
    ------
    EstimatorError
        Naming the bad value and listing :data:`ESTIMATORS`.
    """
    if name not in ESTIMATORS:
        raise EstimatorError(
            f"unknown estimator {name!r}; valid estimators: {', '.join(ESTIMATORS)}"
        )
    return name


def _group_arrays(acc: Any) -> tuple[NDArray[np.int64], NDArray[np.float64], int]:
    """Parent partition, weight of each group, and the number of partitions."""
    groups = acc.groups
    if not hasattr(groups, "parent") and hasattr(groups, "as_groups"):
        groups = groups.as_groups()
    parent = np.asarray(groups.parent, dtype=np.int64)
    weight = np.asarray(groups.weight, dtype=np.float64)
    return parent, weight, int(groups.n_partitions)


def _frame_counts(acc: Any, estimator: str) -> NDArray[np.int64]:
    try:
        fc = acc.frame_counts
    except (AttributeError, ValueError, RuntimeError) as exc:
        fc = None
        logger.debug("no frame histograms: %s", exc)
    if fc is None:
        raise EstimatorError(
            f"estimator {estimator!r} needs per-frame histograms; build the "
            "accumulator with HistogramAccumulator(..., keep_frame_histograms=True)"
        )
    return np.asarray(fc)


def estimate_contrast(
    acc: Any,
    estimator: str = "mle",
    *,
    legacy_mean: ArrayLike | None = None,
    adjust: bool = True,
) -> list[ContrastEstimate]:
    """Contrast of every partition of a histogram accumulator.

    Parameters
    ----------
    acc : HistogramAccumulator
        Accumulated histograms of one exposure: ``.counts`` (G, K),
        ``.groups`` (``.parent``, ``.weight``, ``.n_partitions``) and, for
        ``"mle-frames"`` and ``"pyxsvs-lsq"``, ``.frame_counts`` (F, G, K).
    estimator : str
        One of :data:`ESTIMATORS`.  Single-histogram estimators ("mle",
        "moments", "low-count", "r-1") use the sum of the groups of each
        partition; "mle-weighted" fits the groups of a partition jointly with
        their weights (from ``Partitions.split_by(flat_field)``); "mle-frames"
        fits the per-frame histograms of a partition with free per-frame
        means; "pyxsvs-lsq" runs the legacy least squares on them.
    legacy_mean : array_like, shape (n_partitions,), optional
        "pyxsvs-lsq" only: partition means ``m`` of the average of the first
        <= 200 frames, divided by the flat field and not rounded, which
        choose the legacy bins.  By default the mean per-frame partition
        mean of the first 200 accumulated frames is used, which is the
        legacy value when no flat field was applied.
    adjust : bool
        "mle-frames" only: Cox-Reid bias adjustment (see
        :func:`fit_grouped_mle`).

    Returns
    -------
    list of ContrastEstimate
        One per partition, in partition order; partitions without pixels give
        NaN estimates flagged ``"no-data"``.

    Raises
    ------
    EstimatorError
        For an unknown estimator name (the message lists the valid ones), a
        missing requirement (frame histograms not kept) or a ``legacy_mean``
        of the wrong length.
    """
    check_estimator(estimator)
    parent, weight, n_part = _group_arrays(acc)
    members = [np.flatnonzero(parent == j) for j in range(n_part)]
    if estimator in _NEEDS_FRAMES:
        fc = _frame_counts(acc, estimator)
        return _from_frames(fc, members, estimator, legacy_mean, adjust)
    counts = np.asarray(acc.counts)
    out = []
    for idx in members:
        if idx.size == 0:
            out.append(empty_estimate(estimator))
        elif estimator == "mle-weighted":
            out.append(fit_grouped_mle(counts[idx], weight[idx]))
        else:
            out.append(_SINGLE[estimator](counts[idx].sum(axis=0)))
    return out


def _from_frames(
    fc: NDArray[np.int64],
    members: Sequence[NDArray[np.intp]],
    estimator: str,
    legacy_mean: ArrayLike | None,
    adjust: bool,
) -> list[ContrastEstimate]:
    means = None
    if estimator == "pyxsvs-lsq" and legacy_mean is not None:
        means = np.asarray(legacy_mean, dtype=np.float64).ravel()
        if means.size != len(members):
            raise EstimatorError(
                f"legacy_mean must give one mean per partition ({len(members)}), "
                f"got {means.size}"
            )
    out = []
    for j, idx in enumerate(members):
        if idx.size == 0 or fc.shape[0] == 0:
            out.append(empty_estimate(estimator))
            continue
        frames = fc[:, idx, :].sum(axis=1)
        if estimator == "mle-frames":
            out.append(fit_grouped_mle(frames, None, adjust=adjust))
            continue
        if means is not None:
            m = float(means[j])
        else:
            first = frames[:LEGACY_STATIC_FRAMES]
            n_pix = first.sum(axis=1)
            if np.any(n_pix == 0):
                out.append(empty_estimate(estimator))
                continue
            m = float(np.mean(first @ np.arange(first.shape[1]) / n_pix))
        out.append(fit_pyxsvs_lsq(frames, m))
    return out
