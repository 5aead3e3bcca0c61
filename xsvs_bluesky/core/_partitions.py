"""q partitions: annuli of pixels around given q centres.

Public names are re-exported by :mod:`xsvs_bluesky.core.geometry`.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._pixel_groups import PixelGroups, as_index_tuple
from xsvs_bluesky.errors import GeometryError
from xsvs_bluesky.options import DEFAULT_LIMITS, Limits

__all__ = ["PartitionOverlapWarning", "Partitions", "partition_centers"]

logger = logging.getLogger(__name__)

# relative tolerance when comparing the centre spacing with 2 * dq, so that
# float centres with 2 dq == qs do not count as overlapping
_REL_TOL = 1e-9


class PartitionOverlapWarning(UserWarning):
    """q partitions overlap: some pixels belong to two partitions."""


def _finite(name: str, value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise GeometryError(f"{name} = {value!r} is invalid; give a finite float")
    return out


def partition_centers(
    q1: float, q2: float, qs: float, *, limits: Limits = DEFAULT_LIMITS
) -> NDArray[np.float64]:
    """Centres ``q1, q1 + qs, ..., q2`` of the q partitions, in 1/Angstrom.

    The count is ``round((q2 - q1) / qs) + 1``, so float rounding of the end
    point never adds or drops a partition (unlike ``numpy.arange``).

    Parameters
    ----------
    q1, q2 : float
        First and last centre, in 1/Angstrom (``q2 >= q1``).
    qs : float
        Step between centres, in 1/Angstrom (> 0).
    limits : Limits, optional
        ``limits.max_partitions`` is checked before the centres are made.

    Returns
    -------
    numpy.ndarray
        float64 centres ``q1 + j * qs``.

    Raises
    ------
    GeometryError
        If a value is not finite, ``qs <= 0`` or ``q2 < q1``.
    LimitError
        If there would be more than ``limits.max_partitions`` centres.

    Examples
    --------
    >>> partition_centers(0.002, 0.010, 0.001).size
    9
    """
    q1f, q2f, qsf = _finite("q1", q1), _finite("q2", q2), _finite("qs", qs)
    if qsf <= 0:
        raise GeometryError(f"qs = {qs!r} is invalid; the q step must be > 0")
    if q2f < q1f:
        raise GeometryError(
            f"q2 = {q2!r} < q1 = {q1!r}; the last centre must be >= the first"
        )
    steps = (q2f - q1f) / qsf
    limits.check_partitions(steps + 1, f"q1 = {q1!r}, q2 = {q2!r}, qs = {qs!r}")
    n_steps = round(steps)
    if abs(steps - n_steps) > 1e-6 * max(1.0, steps):
        logger.warning(
            "q2 - q1 = %g is not a whole number of steps qs = %g; using %d "
            "centres up to %g",
            q2f - q1f,
            qsf,
            n_steps + 1,
            q1f + n_steps * qsf,
        )
    return q1f + qsf * np.arange(n_steps + 1, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Partitions:
    """q partitions: annuli ``q_j - dq <= q <= q_j + dq`` of unmasked pixels.

    Build them with :meth:`from_range` or :meth:`from_centers`.  A pixel may
    belong to two partitions when ``2 * half_width`` exceeds the spacing of
    the centres (legacy behaviour, warned about).

    Parameters
    ----------
    centers : numpy.ndarray
        Partition centres ``q_j`` in 1/Angstrom.
    half_width : float
        Half-width ``dq`` in 1/Angstrom.
    pixels : tuple of numpy.ndarray
        Sorted flat C-order pixel indices (``numpy.intp``) of each partition.
    shape : tuple of int
        Detector shape ``(rows, columns)``.
    """

    centers: NDArray[np.float64]
    half_width: float
    pixels: tuple[NDArray[np.intp], ...]
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        shape = (int(self.shape[0]), int(self.shape[1]))
        object.__setattr__(self, "shape", shape)
        centers = np.array(self.centers, dtype=np.float64).ravel()
        centers.flags.writeable = False
        object.__setattr__(self, "centers", centers)
        object.__setattr__(self, "half_width", float(self.half_width))
        pixels = as_index_tuple(self.pixels, shape[0] * shape[1], "partition")
        if len(pixels) != centers.size:
            raise GeometryError(
                f"Partitions: {centers.size} centres but {len(pixels)} pixel "
                "arrays; give one pixel array per centre"
            )
        object.__setattr__(self, "pixels", pixels)

    @classmethod
    def from_centers(
        cls,
        q_map: ArrayLike,
        centers: ArrayLike,
        dq: float,
        mask: ArrayLike | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Partitions:
        """Partitions around given centres.

        Partition ``j`` holds the unmasked pixels with
        ``centers[j] - dq <= q <= centers[j] + dq`` (both ends inclusive).

        Parameters
        ----------
        q_map : array_like
            2-d map of q in 1/Angstrom (e.g. :meth:`Geometry.q_map`).
        centers : array_like
            Partition centres in 1/Angstrom.
        dq : float
            Half-width in 1/Angstrom (> 0).
        mask : array_like, optional
            Excluded pixels (True or nonzero = excluded), shape of ``q_map``.
        limits : Limits, optional
            ``limits.max_partitions`` is checked first.

        Returns
        -------
        Partitions

        Raises
        ------
        GeometryError
            On a non 2-d ``q_map``, a mask of another shape, ``dq <= 0`` or
            non-finite centres.
        LimitError
            On more than ``limits.max_partitions`` centres.

        Warns
        -----
        PartitionOverlapWarning
            When ``2 * dq`` exceeds the spacing of two centres.
        """
        c = np.asarray(centers)
        limits.check_partitions(c.size, f"{c.size} centres")
        return _build(q_map, c, dq, mask)

    @classmethod
    def from_range(
        cls,
        q_map: ArrayLike,
        q1: float,
        q2: float,
        qs: float,
        dq: float,
        mask: ArrayLike | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Partitions:
        """Partitions centred on ``q1, q1 + qs, ..., q2`` (legacy INI keys).

        Parameters
        ----------
        q_map : array_like
            2-d map of q in 1/Angstrom.
        q1, q2, qs : float
            First centre, last centre and step, in 1/Angstrom (see
            :func:`partition_centers`).
        dq : float
            Half-width in 1/Angstrom.
        mask : array_like, optional
            Excluded pixels (True or nonzero = excluded).
        limits : Limits, optional
            ``limits.max_partitions`` is checked before anything is made.

        Returns
        -------
        Partitions

        Raises
        ------
        GeometryError
            As :func:`partition_centers` and :meth:`from_centers`.
        LimitError
            As :func:`partition_centers`.

        Warns
        -----
        PartitionOverlapWarning
            When ``2 * dq > qs``.
        """
        return _build(q_map, partition_centers(q1, q2, qs, limits=limits), dq, mask)

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def n_pixels(self) -> NDArray[np.int64]:
        """Number of pixels in each partition."""
        return np.array([p.size for p in self.pixels], dtype=np.int64)

    @property
    def overlapping(self) -> bool:
        """True when two partitions may share pixels (``2 dq`` > spacing)."""
        return _overlap(self.centers, self.half_width)

    def label_image(self) -> NDArray[np.int64]:
        """Image of partition indices, -1 outside every partition.

        A pixel in two overlapping partitions gets the lower index.
        """
        labels = np.full(self.shape[0] * self.shape[1], -1, dtype=np.int64)
        for j in range(len(self.pixels) - 1, -1, -1):
            labels[self.pixels[j]] = j
        return labels.reshape(self.shape)

    def as_groups(self) -> PixelGroups:
        """One group per partition (also empty ones), weight 1."""
        n = len(self.pixels)
        return PixelGroups(
            pixels=self.pixels,
            parent=np.arange(n, dtype=np.int64),
            weight=np.ones(n),
            shape=self.shape,
            n_partitions=n,
        )

    def split_by(self, values: ArrayLike, n_groups: int = 16) -> PixelGroups:
        """Split each partition into quantile groups of a per-pixel value.

        Within partition ``j`` the pixels are grouped between the
        ``0, 1/n, ..., 1`` quantiles of ``values`` over that partition (lower
        edge inclusive, the top group also holds the maximum).  Tied values
        always fall in the same group, so fewer groups may result; groups
        without pixels are dropped.  The weight of a group is the mean of
        ``values`` over the group divided by its mean over the partition, so
        ``kbar_i ~ kbar_j * weight`` for a flat field or a time-averaged
        image.

        Parameters
        ----------
        values : array_like
            Per-pixel values of the detector shape, finite on every
            partition pixel (e.g. flat-field efficiency, mean image).
        n_groups : int, optional
            Maximum number of groups per partition (>= 1), default 16.

        Returns
        -------
        PixelGroups
            Groups ordered by partition then by increasing value.

        Raises
        ------
        GeometryError
            On a shape mismatch, ``n_groups < 1``, non-finite values on a
            partition pixel or a partition whose values have a non-positive
            mean without all being equal.
        """
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape != self.shape:
            raise GeometryError(
                f"split_by: values have shape {vals.shape} but the partitions "
                f"have shape {self.shape}"
            )
        if int(n_groups) != n_groups or n_groups < 1:
            raise GeometryError(f"split_by: n_groups = {n_groups!r}; give an int >= 1")
        flat = vals.ravel()
        probs = np.linspace(0.0, 1.0, int(n_groups) + 1)[1:-1]
        pixels: list[NDArray[np.intp]] = []
        parent: list[int] = []
        weight: list[float] = []
        for j, pix in enumerate(self.pixels):
            if pix.size == 0:
                continue
            v = flat[pix]
            if not np.all(np.isfinite(v)):
                raise GeometryError(
                    f"split_by: values are not finite on some pixels of "
                    f"partition {j}; give finite values (mask those pixels)"
                )
            v_min, v_max = v.min(), v.max()
            if v_min == v_max:
                pixels.append(pix)
                parent.append(j)
                weight.append(1.0)
                continue
            v_mean = v.mean()
            if v_mean <= 0:
                raise GeometryError(
                    f"split_by: values average {v_mean:g} <= 0 over partition "
                    f"{j}; give values with a positive mean (efficiency, counts)"
                )
            labels = np.searchsorted(np.quantile(v, probs), v, side="right")
            sums = np.bincount(labels, weights=v, minlength=int(n_groups))
            counts = np.bincount(labels, minlength=int(n_groups))
            for g in np.flatnonzero(counts):
                pixels.append(pix[labels == g])
                parent.append(j)
                weight.append(float(sums[g] / counts[g] / v_mean))
        return PixelGroups(
            pixels=tuple(pixels),
            parent=np.asarray(parent, dtype=np.int64),
            weight=np.asarray(weight, dtype=np.float64),
            shape=self.shape,
            n_partitions=len(self.pixels),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible summary (centres and half-width in 1/A)."""
        return {
            "centers": [float(c) for c in self.centers],
            "half_width": self.half_width,
            "n_pixels": [int(n) for n in self.n_pixels],
            "shape": [self.shape[0], self.shape[1]],
        }


def _overlap(centers: NDArray[np.float64], dq: float) -> bool:
    if centers.size < 2:
        return False
    spacing = float(np.min(np.diff(np.sort(centers))))
    return 2.0 * dq > spacing * (1.0 + _REL_TOL)


def _build(
    q_map: ArrayLike, centers: ArrayLike, dq: float, mask: ArrayLike | None
) -> Partitions:
    q = np.asarray(q_map, dtype=np.float64)
    if q.ndim != 2:
        raise GeometryError(f"q_map has shape {q.shape}; give a 2-d array")
    c = np.array(centers, dtype=np.float64).ravel()
    if not np.all(np.isfinite(c)):
        raise GeometryError(f"partition centres {c.tolist()} must all be finite")
    dqf = _finite("dq", dq)
    if dqf <= 0:
        raise GeometryError(f"dq = {dq!r} is invalid; the half-width must be > 0")
    flat = q.ravel()
    if mask is None:
        valid = np.isfinite(flat)
    else:
        m = np.asarray(mask)
        if m.shape != q.shape:
            raise GeometryError(
                f"mask has shape {m.shape} but q_map has shape {q.shape}; "
                "give a mask of the detector shape"
            )
        valid = (m.ravel() == 0) & np.isfinite(flat)
    index = np.flatnonzero(valid)
    order = np.argsort(flat[index], kind="stable")
    q_sorted = flat[index][order]
    index_sorted = index[order]
    lo = np.searchsorted(q_sorted, c - dqf, side="left")
    hi = np.searchsorted(q_sorted, c + dqf, side="right")
    pixels = tuple(np.sort(index_sorted[a:b]) for a, b in zip(lo, hi, strict=True))
    parts = Partitions(centers=c, half_width=dqf, pixels=pixels, shape=q.shape)
    if parts.overlapping:
        warnings.warn(
            f"q partitions overlap: 2 * dq = {2 * dqf:g} exceeds the centre "
            f"spacing {float(np.min(np.diff(np.sort(c)))):g} 1/A, so some pixels "
            "are counted in two partitions (legacy behaviour)",
            PartitionOverlapWarning,
            stacklevel=3,
        )
    return parts
