"""Groups of pixels with weights (sub-divisions of q partitions).

Public names are re-exported by :mod:`xsvs_bluesky.core.geometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.errors import GeometryError

__all__ = ["PixelGroups", "as_index_tuple"]


def as_index_tuple(
    pixels: Sequence[ArrayLike], size: int, what: str
) -> tuple[NDArray[np.intp], ...]:
    """Validate pixel index arrays and return them as read-only ``intp``."""
    out = [np.array(p, dtype=np.intp).ravel() for p in pixels]
    if out:
        # one pass over all of them: the first bad array is named
        sizes = np.array([a.size for a in out])
        flat = np.concatenate(out)
        bad = np.zeros(len(out), dtype=bool)
        if flat.size:
            ends = np.cumsum(sizes)
            full = sizes > 0
            bad[full] = (flat[ends[full] - sizes[full]] < 0) | (
                flat[ends[full] - 1] >= size
            )
            # step i compares items i and i + 1; those across two arrays don't
            step = np.diff(flat) <= 0
            inner = ends[:-1]
            step[inner[(inner > 0) & (inner < flat.size)] - 1] = False
            if step.any():
                where = np.searchsorted(ends, np.flatnonzero(step), side="right")
                bad[where] = True
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise GeometryError(
                f"{what} {j}: pixel indices must be strictly increasing flat "
                f"C-order indices in [0, {size})"
            )
    for arr in out:
        arr.flags.writeable = False
    return tuple(out)


@dataclass(frozen=True, eq=False)
class PixelGroups:
    """Groups of pixels, each belonging to one q partition, with a weight.

    Parameters
    ----------
    pixels : tuple of numpy.ndarray
        Sorted flat C-order pixel indices (``numpy.intp``) of each group.
    parent : numpy.ndarray
        Index of the partition each group belongs to (int64).
    weight : numpy.ndarray
        Relative mean intensity of each group in its partition (float64),
        e.g. the mean pixel efficiency of the group over that of the
        partition; 1 when all pixels are equivalent.
    shape : tuple of int
        Detector shape ``(rows, columns)``.
    n_partitions : int
        Number of partitions (some may have no group).
    """

    pixels: tuple[NDArray[np.intp], ...]
    parent: NDArray[np.int64]
    weight: NDArray[np.float64]
    shape: tuple[int, int]
    n_partitions: int

    def __post_init__(self) -> None:
        shape = (int(self.shape[0]), int(self.shape[1]))
        object.__setattr__(self, "shape", shape)
        pixels = as_index_tuple(self.pixels, shape[0] * shape[1], "group")
        object.__setattr__(self, "pixels", pixels)
        parent = np.array(self.parent, dtype=np.int64).ravel()
        weight = np.array(self.weight, dtype=np.float64).ravel()
        n_part = int(self.n_partitions)
        if parent.size != len(pixels) or weight.size != len(pixels):
            raise GeometryError(
                f"PixelGroups: {len(pixels)} groups but {parent.size} parents and "
                f"{weight.size} weights; give one of each per group"
            )
        if parent.size and (parent.min() < 0 or parent.max() >= n_part):
            raise GeometryError(
                f"PixelGroups: parent indices must lie in [0, {n_part}), got "
                f"[{parent.min()}, {parent.max()}]"
            )
        parent.flags.writeable = False
        weight.flags.writeable = False
        object.__setattr__(self, "parent", parent)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "n_partitions", n_part)

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def n_pixels(self) -> NDArray[np.int64]:
        """Number of pixels in each group."""
        return np.array([p.size for p in self.pixels], dtype=np.int64)
