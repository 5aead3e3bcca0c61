"""Pixel groups of the intensity-aware estimator: (partition, sub-ring, efficiency).

Every q partition is cut into ``n_rings`` radial sub-rings of equal q width
and each sub-ring into at most ``n_groups`` efficiency groups (quantiles of
the flat field over the partition).  The groups depend on the geometry and
the flat field only, so they are fixed before any frame arrives and are the
same in every worker: the histograms stay mergeable.  Each group also
carries what the fit needs at the end, per pixel: its offset in q from the
partition centre and its efficiency.

Public names are re-exported by :mod:`xsvs_bluesky.core.estimators`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._partitions import Partitions
from xsvs_bluesky.core._pixel_groups import PixelGroups
from xsvs_bluesky.errors import GeometryError

__all__ = ["IntensityGroups", "intensity_groups"]


@dataclass(frozen=True, eq=False)
class IntensityGroups(PixelGroups):
    """Pixel groups by (partition, radial sub-ring, efficiency group).

    A :class:`PixelGroups` (so any accumulator or estimator that takes
    groups takes these; ``weight`` is the group's mean efficiency over the
    partition's, as for ``"mle-weighted"``) with, in addition:

    Parameters
    ----------
    ring : numpy.ndarray
        Sub-ring ``0 .. n_rings - 1`` of each group (int64), increasing q.
    offset : tuple of numpy.ndarray
        Per partition: ``(q_i - q_j) / dq`` of its pixels (float64, in
        ``[-1, 1]``), ordered group by group (the partition's groups in
        order, each group's pixels in order).
    efficiency : tuple of numpy.ndarray
        Per partition, same order: the pixels' efficiencies (1 without a
        flat field).
    label : tuple of numpy.ndarray
        Per partition, same order: the local index of each pixel's group
        (0 for the partition's first group, ...).
    centers : numpy.ndarray
        Partition centres ``q_j`` (1/Angstrom).
    half_width : float
        Partition half-width ``dq`` (1/Angstrom).
    n_rings : int
        Sub-rings per partition.
    """

    ring: NDArray[np.int64]
    offset: tuple[NDArray[np.float64], ...]
    efficiency: tuple[NDArray[np.float64], ...]
    label: tuple[NDArray[np.intp], ...]
    centers: NDArray[np.float64]
    half_width: float
    n_rings: int

    def __post_init__(self) -> None:
        super().__post_init__()
        ring = np.array(self.ring, dtype=np.int64).ravel()
        if ring.size != len(self.pixels):
            raise GeometryError(
                f"IntensityGroups: {len(self.pixels)} groups but {ring.size} rings"
            )
        ring.flags.writeable = False
        object.__setattr__(self, "ring", ring)
        n_part = self.n_partitions
        if not len(self.offset) == len(self.efficiency) == len(self.label) == n_part:
            raise GeometryError(
                "IntensityGroups: give one offset, efficiency and label array per "
                f"partition ({n_part})"
            )
        counts = np.bincount(self.parent, weights=self.n_pixels, minlength=n_part)
        for j in range(n_part):
            sizes = {self.offset[j].size, self.efficiency[j].size, self.label[j].size}
            if sizes != {int(counts[j])}:
                raise GeometryError(
                    f"IntensityGroups: partition {j} has {int(counts[j])} grouped "
                    f"pixels but per-pixel arrays of sizes {sorted(sizes)}"
                )

    def members(self, partition: int) -> NDArray[np.intp]:
        """Return the indices of the groups of one partition, in order."""
        return np.flatnonzero(self.parent == partition)

    def q_pixels(self, partition: int) -> NDArray[np.float64]:
        """Return the q of the pixels of one partition (1/Angstrom), group order."""
        return self.centers[partition] + self.half_width * self.offset[partition]


def intensity_groups(
    partitions: Partitions,
    q_map: ArrayLike,
    *,
    flat_field: ArrayLike | None = None,
    n_rings: int = 4,
    n_groups: int = 8,
) -> IntensityGroups:
    """Split every partition by radial sub-ring and pixel efficiency.

    Parameters
    ----------
    partitions : Partitions
        q partitions (masked pixels already excluded).
    q_map : array_like
        q of every pixel (1/Angstrom), the map the partitions were built on.
    flat_field : array_like, optional
        Pixel efficiencies (mean ~1), finite and > 0 on the partition
        pixels.  None: every pixel has efficiency 1 (one group per sub-ring).
    n_rings : int
        Radial sub-rings of equal q width per partition (>= 1), default 4.
    n_groups : int
        Maximum number of efficiency groups per sub-ring (>= 1), default 8:
        quantiles of the efficiency over the partition, ties kept together.

    Returns
    -------
    IntensityGroups
        Groups ordered by partition, sub-ring, then increasing efficiency;
        empty groups are dropped.

    Raises
    ------
    GeometryError
        On a shape mismatch, ``n_rings`` or ``n_groups`` < 1, or a flat field
        that is not finite and positive on a partition pixel.
    """
    q = np.asarray(q_map, dtype=np.float64)
    if q.shape != partitions.shape:
        raise GeometryError(
            f"intensity_groups: q_map has shape {q.shape}, the partitions "
            f"{partitions.shape}"
        )
    for name, value in (("n_rings", n_rings), ("n_groups", n_groups)):
        if int(value) != value or value < 1:
            raise GeometryError(
                f"intensity_groups: {name} = {value!r}; give an int >= 1"
            )
    flat = None
    if flat_field is not None:
        flat = np.asarray(flat_field, dtype=np.float64)
        if flat.shape != partitions.shape:
            raise GeometryError(
                f"intensity_groups: flat field has shape {flat.shape}, the "
                f"partitions {partitions.shape}"
            )
    dq = partitions.half_width
    probs = np.linspace(0.0, 1.0, int(n_groups) + 1)[1:-1]
    q_flat = q.ravel()
    flat_flat = None if flat is None else flat.ravel()
    pixels: list[NDArray[np.intp]] = []
    parent: list[int] = []
    weight: list[float] = []
    ring: list[int] = []
    offsets, effs, labels = [], [], []
    for j, pix in enumerate(partitions.pixels):
        x = np.clip((q_flat[pix] - partitions.centers[j]) / dq, -1.0, 1.0)
        r = np.minimum(((x + 1.0) * 0.5 * n_rings).astype(np.int64), n_rings - 1)
        if flat_flat is None or not pix.size:  # no quantiles of no pixel
            w = np.ones(pix.size)
            e = np.zeros(pix.size, dtype=np.int64)
        else:
            w = flat_flat[pix]
            if not np.all(np.isfinite(w) & (w > 0)):
                raise GeometryError(
                    f"intensity_groups: the flat field is not finite and > 0 on "
                    f"some pixels of partition {j}; mask those pixels"
                )
            e = np.searchsorted(np.quantile(w, probs), w, side="right")
        key = r * int(n_groups) + e
        w_mean = w.mean() if pix.size else 1.0
        # the pixels group by group (increasing key), each group's in their
        # order in the partition: one stable sort instead of a pass per group
        # (narrow keys sort by radix: the same order, sooner)
        narrow = np.uint16 if int(n_rings) * int(n_groups) <= 1 << 16 else np.int64
        order = np.argsort(key.astype(narrow), kind="stable")
        key_sorted = key[order]
        starts = np.flatnonzero(np.diff(key_sorted, prepend=-1))
        stops = np.append(starts[1:], key_sorted.size)[: starts.size]
        pix_sorted, x_sorted, w_sorted = pix[order], x[order], w[order]
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            pixels.append(pix_sorted[a:b])
            # w_sorted[a:b].mean() without its wrapper: the same sum / count
            weight.append(float(np.add.reduce(w_sorted[a:b]) / (b - a) / w_mean))
        parent.extend([j] * starts.size)
        ring.extend((key_sorted[starts] // n_groups).tolist())
        offsets.append(x_sorted)
        effs.append(w_sorted)
        labels.append(np.repeat(np.arange(starts.size, dtype=np.intp), stops - starts))
    return IntensityGroups(
        pixels=tuple(pixels),
        parent=np.asarray(parent, dtype=np.int64),
        weight=np.asarray(weight, dtype=np.float64),
        shape=partitions.shape,
        n_partitions=len(partitions),
        ring=np.asarray(ring, dtype=np.int64),
        offset=tuple(offsets),
        efficiency=tuple(effs),
        label=tuple(labels),
        centers=np.asarray(partitions.centers),
        half_width=float(dq),
        n_rings=int(n_rings),
    )
