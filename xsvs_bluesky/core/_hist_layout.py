"""Pixel layout of the histogram accumulator and its numpy backend.

:class:`GroupLayout` turns the pixel lists of the groups into the run-length
layout read by the numba kernel (:mod:`xsvs_bluesky.core._kernels`) and the
flat membership lists used by the numpy backend.  Both backends share the
same contract: accumulate frames until the first one holding a value outside
``0 .. n_bins - 1`` and return its index, so the caller's growth logic, and
hence every result, is identical whichever backend runs.  Also here: the
checked group -> parent index of an accumulator with parents
(:func:`parent_index`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.errors import GeometryError

__all__ = [
    "GroupLayout",
    "accumulate_numpy",
    "as_groups",
    "nan_ratio",
    "parent_index",
]

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
        n_pixels = np.array([p.size for p in arrays], dtype=np.int64)
        pix = np.concatenate([np.empty(0, np.intp), *arrays])
        grp = np.repeat(np.arange(len(arrays), dtype=np.intp), n_pixels)
        order = np.lexsort((grp, pix))
        pix, grp = pix[order], grp[order]
        outside = (pix < 0) | (pix >= size)
        repeated = (pix[1:] == pix[:-1]) & (grp[1:] == grp[:-1])
        if outside.any() or repeated.any():
            bad = np.concatenate((grp[outside], grp[1:][repeated]))
            j = int(bad.min())
            raise GeometryError(
                f"group {j}: pixel indices must be distinct flat indices in "
                f"[0, {size}) for detector shape {shape}"
            )
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

    def same_as(self, other: GroupLayout) -> bool:
        """Whether ``other`` lays out exactly the same groups."""
        return (
            self.n_pixels.size == other.n_pixels.size
            and np.array_equal(self.n_pixels, other.n_pixels)
            and np.array_equal(self.member_pixel, other.member_pixel)
            and np.array_equal(self.member_group, other.member_group)
        )

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
    group_out: tuple[NDArray[np.int64], ...],
    parent_out: tuple[NDArray[np.int64], ...],
) -> int:
    """Numpy twin of :func:`xsvs_bluesky.core._kernels.accumulate_checked`.

    One ``numpy.bincount`` per chunk of frames over the combined index
    ``(frame * n_groups + group) * n_bins + value``; the parent histograms
    are sums of the group histograms.  Arguments and return value as for the
    numba kernel (no ``runs``/``labels``/``scratch``).
    """
    counts, counts_sq, sums, frame_out = group_out
    parent, _, p_counts, p_counts_sq, p_sums, p_frame_out = parent_out
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
        _add_frames(hist, start, counts, counts_sq, sums, frame_out, weights)
        if parent.size:
            p_hist = np.zeros((n, p_counts.shape[0], n_bins), dtype=np.int64)
            np.add.at(p_hist.transpose(1, 0, 2), parent, hist.transpose(1, 0, 2))
            _add_frames(
                p_hist, start, p_counts, p_counts_sq, p_sums, p_frame_out, weights
            )
        if n < values.shape[0]:
            return start + n
    return int(n_total)


def _add_frames(
    hist: NDArray[np.int64],
    start: int,
    counts: NDArray[np.int64],
    counts_sq: NDArray[np.int64],
    sums: NDArray[np.int64],
    frame_out: NDArray[np.int64],
    weights: NDArray[np.int64],
) -> None:
    """Add per-frame histograms ``[n, G, K]`` stored from frame ``start``."""
    n = hist.shape[0]
    counts += hist.sum(axis=0)
    counts_sq += np.einsum("fgk,fgk->gk", hist, hist)
    sums[start : start + n] = hist @ weights
    if frame_out.shape[0]:
        frame_out[start : start + n] = hist


def as_groups(groups: Any) -> Any:
    """Accept PixelGroups, Partitions (via ``as_groups``) or look-alikes.

    Raises
    ------
    TypeError
        If ``groups`` has no ``.pixels`` and ``.shape``.
    """
    if not hasattr(groups, "parent") and hasattr(groups, "as_groups"):
        groups = groups.as_groups()
    if not hasattr(groups, "pixels") or not hasattr(groups, "shape"):
        raise TypeError(
            "groups must be PixelGroups or Partitions (objects with .pixels and "
            f".shape), got {type(groups).__name__}"
        )
    return groups


def parent_index(
    groups: Any, layout: GroupLayout, parents: GroupLayout
) -> NDArray[np.int64]:
    """Parent of each group, checked: the groups of each parent tile it.

    Parameters
    ----------
    groups : PixelGroups
        The groups (``.parent``: parent index of each group).
    layout, parents : GroupLayout
        Layouts of the groups and of the parents.

    Returns
    -------
    numpy.ndarray
        int64 parent index of each group.

    Raises
    ------
    GeometryError
        If the groups have no parents, a parent index is out of range, or
        the pixels of the groups of a parent are not exactly its pixels, each
        once.
    """
    parent = np.asarray(getattr(groups, "parent", ()), dtype=np.int64).ravel()
    n = parents.n_groups
    if parent.size != layout.n_groups or (
        parent.size and (parent.min() < 0 or parent.max() >= n)
    ):
        raise GeometryError(
            f"groups.parent must give {layout.n_groups} parent indices in "
            f"[0, {n}); give PixelGroups of these parents (Partitions.split_by)"
        )
    mine = (layout.member_pixel, parent[layout.member_group])
    theirs = (parents.member_pixel, parents.member_group)
    a, b = np.lexsort(mine), np.lexsort(theirs)
    if mine[0].size != theirs[0].size or not (
        np.array_equal(mine[0][a], theirs[0][b])
        and np.array_equal(mine[1][a], theirs[1][b])
    ):
        raise GeometryError(
            "the groups do not tile their parents: the groups of each parent "
            "must hold each of its pixels exactly once"
        )
    return np.ascontiguousarray(parent)


def nan_ratio(num: ArrayLike, den: ArrayLike) -> NDArray[np.float64]:
    """``num / den`` as float64, NaN where ``den`` is 0 (no warning)."""
    a, b = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(a.shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out
