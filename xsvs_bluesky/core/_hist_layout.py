"""Pixel layout of the histogram accumulator and its numpy backend.

:class:`GroupLayout` turns the pixel lists of the groups into the run-length
layout read by the numba kernel (:mod:`xsvs_bluesky.core._kernels`) and the
flat membership lists used by the numpy backend.  Both backends share the
same contract: accumulate frames until the first one holding a value outside
``0 .. n_bins - 1`` and return its index, so the caller's growth logic, and
hence every result, is identical whichever backend runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.errors import GeometryError

__all__ = ["GroupLayout", "accumulate_numpy", "nan_ratio"]

_CHUNK = 1 << 19
"""(frame, pixel) values gathered at once by numpy (cache-sized)."""


@dataclass(frozen=True, eq=False)
class GroupLayout:
    """Run-length layout of possibly overlapping pixel groups.

    Attributes
    ----------
    runs : numpy.ndarray
        ``(2, n_runs)`` int64 start and stop (exclusive) flat pixel indices.
        Memberships are split in *layers* (a pixel's first group, its second
        group, ...); within a layer runs are maximal ranges of consecutive
        pixels, whatever group each pixel belongs to.
    member_pixel : numpy.ndarray
        Flat pixel index of every (pixel, group) membership, in run order.
    member_group : numpy.ndarray
        Group index of every membership, in run order.
    unique_pixels : numpy.ndarray
        Sorted flat indices of the pixels in at least one group.
    n_pixels : numpy.ndarray
        Number of pixels of each group (int64).
    """

    runs: NDArray[np.int64]
    member_pixel: NDArray[np.intp]
    member_group: NDArray[np.intp]
    unique_pixels: NDArray[np.intp]
    n_pixels: NDArray[np.int64]

    @classmethod
    def build(cls, pixels: Sequence[ArrayLike], shape: tuple[int, int]) -> GroupLayout:
        """Build the layout of groups given as flat pixel index arrays.

        Raises
        ------
        GeometryError
            If a group repeats a pixel or indexes outside ``shape``.
        """
        size = shape[0] * shape[1]
        arrays = [np.asarray(p, dtype=np.intp).ravel() for p in pixels]
        for j, p in enumerate(arrays):
            if p.size and (
                p.min() < 0 or p.max() >= size or np.unique(p).size < p.size
            ):
                raise GeometryError(
                    f"group {j}: pixel indices must be distinct flat indices in "
                    f"[0, {size}) for detector shape {shape}"
                )
        n_pixels = np.array([p.size for p in arrays], dtype=np.int64)
        pix = np.concatenate([np.empty(0, np.intp), *arrays])
        grp = np.repeat(np.arange(len(arrays), dtype=np.intp), n_pixels)
        order = np.lexsort((grp, pix))
        pix, grp = pix[order], grp[order]
        # layer = rank of this membership among those of the same pixel
        first = np.ones(pix.size, dtype=bool)
        first[1:] = pix[1:] != pix[:-1]
        index = np.arange(pix.size)
        layer = index - np.maximum.accumulate(np.where(first, index, 0))
        unique = pix[first]
        order = np.lexsort((pix, layer))
        pix, grp, layer = pix[order], grp[order], layer[order]
        breaks = np.flatnonzero((np.diff(pix) != 1) | (np.diff(layer) != 0)) + 1
        starts = np.concatenate(([0], breaks)).astype(np.intp)
        stops = np.concatenate((breaks, [pix.size])).astype(np.intp)
        if pix.size:
            runs = np.stack((pix[starts], pix[stops - 1] + 1)).astype(np.int64)
        else:
            runs = np.zeros((2, 0), dtype=np.int64)
        return cls(
            runs=np.ascontiguousarray(runs),
            member_pixel=pix,
            member_group=grp,
            unique_pixels=unique,
            n_pixels=n_pixels,
        )

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return int(self.n_pixels.size)

    def labels(self, n_bins: int) -> NDArray[np.int32]:
        """Offsets ``group * n_bins`` of every membership, for the kernel."""
        return (self.member_group * n_bins).astype(np.int32)

    def value_range(self, frame: NDArray[np.integer]) -> tuple[int, int]:
        """Minimum and maximum of a flat frame over the group pixels."""
        values = frame[self.unique_pixels]
        return int(values.min()), int(values.max())

    def _frames_per_chunk(self) -> int:
        return max(1, _CHUNK // max(1, self.member_pixel.size))


def accumulate_numpy(
    layout: GroupLayout,
    frames: NDArray[np.integer],
    n_bins: int,
    counts: NDArray[np.int64],
    counts_sq: NDArray[np.int64],
    sums: NDArray[np.int64],
    frame_out: NDArray[np.int64],
) -> int:
    """Numpy twin of :func:`xsvs_bluesky.core._kernels.accumulate_frames`.

    One ``numpy.bincount`` per chunk of frames over the combined index
    ``(frame * n_groups + group) * n_bins + value``.  Arguments and return
    value as for the numba kernel (no ``runs``/``labels``/``scratch``).
    """
    n_groups = layout.n_groups
    step = layout._frames_per_chunk()
    n_total = frames.shape[0]
    # combined-index offsets (frame * n_groups + group) * n_bins of one chunk
    base = (
        layout.member_group * n_bins
        + (np.arange(min(step, n_total), dtype=np.intp) * (n_groups * n_bins))[:, None]
    )
    weights = np.arange(n_bins, dtype=np.int64)
    signed = frames.dtype.kind == "i"
    for start in range(0, n_total, step):
        values = frames[start : start + step][:, layout.member_pixel]
        n = values.shape[0]
        if values.size and (values.max() >= n_bins or (signed and values.min() < 0)):
            bad = np.any(values >= n_bins, axis=1)
            if signed:
                bad |= np.any(values < 0, axis=1)
            n = int(np.argmax(bad))
        index = np.add(values[:n], base[:n], dtype=np.intp)
        hist = np.bincount(index.ravel(), minlength=n * n_groups * n_bins)
        hist = hist.astype(np.int64, copy=False).reshape(n, n_groups, n_bins)
        counts += hist.sum(axis=0)
        counts_sq += np.einsum("fgk,fgk->gk", hist, hist)
        sums[start : start + n] = hist @ weights
        if frame_out.shape[0]:
            frame_out[start : start + n] = hist
        if n < values.shape[0]:
            return start + n
    return int(n_total)


def nan_ratio(num: ArrayLike, den: ArrayLike) -> NDArray[np.float64]:
    """``num / den`` as float64, NaN where ``den`` is 0 (no warning)."""
    a, b = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(a.shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out
