"""Numba kernels of the histogram accumulator (the hot loop).

Layout (see :mod:`xsvs_bluesky.core._hist_layout`): the pixels of all groups
form *runs*, maximal ranges of consecutive flat pixel indices, and a label
stream gives, pixel by pixel in run order, the offset ``group * n_bins`` of
the pixel's group.  A pixel in two groups (overlapping partitions) appears in
two runs.  Runs follow the union of the groups, so adjacent rings, or the
scattered quantile groups of ``Partitions.split_by``, cost no more per pixel
than one big ring (per-group runs would be ~15 px long on 256x256 rings).

Per pixel the kernel does one load of the count, one of the label and one
increment of ``scratch[copy, label + count]``.  Frames are processed two at
a time, sharing the label loads, each into two interleaved copies of its
histogram (a lone last frame uses four): consecutive pixels then increment
different memory words, which breaks the store-to-load dependency chain of
repeated increments of one bin (at ``kbar = 0.1`` nine pixels in ten hit
bin 0).  The copies are then summed into the per-frame histogram, which is
added to ``counts``, its square to ``counts_sq`` and its first moment to the
per-frame sums.  With parents (the q partitions that efficiency groups
split), the per-frame group histograms are also summed per parent, and the
parent histogram, its square and its first moment are accumulated the same
way: both levels from one pass over the pixels.

Out-of-range counts: :func:`accumulate_checked` tests every count against
``n_bins`` (a negative count of a signed dtype wraps to a huge unsigned value
and fails the same test).  :func:`accumulate_raw`, for ``uint8``/``uint16``
frames, skips the per-pixel test: a count ``>= n_bins`` lands in a later
group's bins or in the 65536-entry tail of ``scratch`` and is caught after
the frame by checking that each group's bins hold exactly its pixel count.
Either way the kernel returns the index of the offending frame before
touching the accumulator for it; the caller grows ``n_bins`` and calls again
from that frame, so no count is ever lost or merged.  Kernels leave
``scratch`` all zero.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["accumulate_checked", "accumulate_raw"]

N_COPIES = 4
"""Rows of ``scratch``: four copies of one frame's histogram, or two each of two."""

SCRATCH_TAIL = 1 << 16
"""Scratch entries after the bins: unchecked 16-bit counts stay inside."""

FAILED = np.uint64(0xFFFFFFFFFFFFFFFF)
"""What the checked fills return at an out-of-range count (no OR of counts
below ``n_bins`` reaches it)."""


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _fill_one_checked(frame, runs, labels, limit, h0, h1, h2, h3):
    """Scatter one frame into four copies.

    Returns the bitwise OR of the counts (a bound ``>= max``), or
    :data:`FAILED` at the first count ``>= limit`` (nothing more is
    scattered).
    """
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    four = np.uint64(4)
    # Unsigned indices: numba then skips the negative-index wraparound test.
    j = np.uint64(0)
    bound = np.uint64(0)
    for r in range(runs.shape[1]):
        p = np.uint64(runs[0, r])
        stop = np.uint64(runs[1, r])
        while p + four <= stop:
            v0 = np.uint64(frame[p])
            v1 = np.uint64(frame[p + one])
            v2 = np.uint64(frame[p + two])
            v3 = np.uint64(frame[p + three])
            v = v0 | v1 | v2 | v3
            if v >= limit and max(max(v0, v1), max(v2, v3)) >= limit:
                return FAILED
            bound |= v
            h0[np.uint64(labels[j]) + v0] += 1
            h1[np.uint64(labels[j + one]) + v1] += 1
            h2[np.uint64(labels[j + two]) + v2] += 1
            h3[np.uint64(labels[j + three]) + v3] += 1
            p += four
            j += four
        while p < stop:
            v0 = np.uint64(frame[p])
            if v0 >= limit:
                return FAILED
            bound |= v0
            h0[np.uint64(labels[j]) + v0] += 1
            p += one
            j += one
    return bound


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _fill_pair_checked(fa, fb, runs, labels, limit, a0, a1, b0, b1):
    """Scatter two frames (sharing the label loads), two copies each.

    Returns the bitwise OR of the counts of both, or :data:`FAILED` as
    :func:`_fill_one_checked`.
    """
    one = np.uint64(1)
    two = np.uint64(2)
    j = np.uint64(0)
    bound = np.uint64(0)
    for r in range(runs.shape[1]):
        p = np.uint64(runs[0, r])
        stop = np.uint64(runs[1, r])
        while p + two <= stop:
            l0 = np.uint64(labels[j])
            l1 = np.uint64(labels[j + one])
            x0 = np.uint64(fa[p])
            x1 = np.uint64(fa[p + one])
            y0 = np.uint64(fb[p])
            y1 = np.uint64(fb[p + one])
            v = x0 | x1 | y0 | y1
            if v >= limit and max(max(x0, x1), max(y0, y1)) >= limit:
                return FAILED
            bound |= v
            a0[l0 + x0] += 1
            a1[l1 + x1] += 1
            b0[l0 + y0] += 1
            b1[l1 + y1] += 1
            p += two
            j += two
        while p < stop:
            l0 = np.uint64(labels[j])
            x0 = np.uint64(fa[p])
            y0 = np.uint64(fb[p])
            v = x0 | y0
            if v >= limit and max(x0, y0) >= limit:
                return FAILED
            bound |= v
            a0[l0 + x0] += 1
            b0[l0 + y0] += 1
            p += one
            j += one
    return bound


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _fill_one_raw(frame, runs, labels, h0, h1, h2, h3):
    """As :func:`_fill_one_checked` without the test (8/16-bit unsigned).

    Returns the bitwise OR of the counts.
    """
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    four = np.uint64(4)
    j = np.uint64(0)
    bound = np.uint64(0)
    for r in range(runs.shape[1]):
        p = np.uint64(runs[0, r])
        stop = np.uint64(runs[1, r])
        while p + four <= stop:
            v0 = np.uint64(frame[p])
            v1 = np.uint64(frame[p + one])
            v2 = np.uint64(frame[p + two])
            v3 = np.uint64(frame[p + three])
            bound |= v0 | v1 | v2 | v3
            h0[np.uint64(labels[j]) + v0] += 1
            h1[np.uint64(labels[j + one]) + v1] += 1
            h2[np.uint64(labels[j + two]) + v2] += 1
            h3[np.uint64(labels[j + three]) + v3] += 1
            p += four
            j += four
        while p < stop:
            v0 = np.uint64(frame[p])
            bound |= v0
            h0[np.uint64(labels[j]) + v0] += 1
            p += one
            j += one
    return bound


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _fill_pair_raw(fa, fb, runs, labels, a0, a1, b0, b1):
    """As :func:`_fill_pair_checked` without the test (8/16-bit unsigned).

    Returns the bitwise OR of the counts of both frames.
    """
    one = np.uint64(1)
    two = np.uint64(2)
    j = np.uint64(0)
    bound = np.uint64(0)
    for r in range(runs.shape[1]):
        p = np.uint64(runs[0, r])
        stop = np.uint64(runs[1, r])
        while p + two <= stop:
            l0 = np.uint64(labels[j])
            l1 = np.uint64(labels[j + one])
            x0 = np.uint64(fa[p])
            x1 = np.uint64(fa[p + one])
            y0 = np.uint64(fb[p])
            y1 = np.uint64(fb[p + one])
            bound |= x0 | x1 | y0 | y1
            a0[l0 + x0] += 1
            a1[l1 + x1] += 1
            b0[l0 + y0] += 1
            b1[l1 + y1] += 1
            p += two
            j += two
        while p < stop:
            l0 = np.uint64(labels[j])
            x0 = np.uint64(fa[p])
            y0 = np.uint64(fb[p])
            bound |= x0 | y0
            a0[l0 + x0] += 1
            b0[l0 + y0] += 1
            p += one
            j += one
    return bound


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _complete(a, b, n_bins, n_pixels):
    """Whether each group's bins of copies ``a + b`` hold all its pixels."""
    for g in range(n_pixels.shape[0]):
        total = 0
        for i in range(g * n_bins, (g + 1) * n_bins):
            total += a[i] + b[i]
        if total != n_pixels[g]:
            return False
    return True


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _commit(a, b, n_bins, used, f, group_out, parent_out):
    """Add frame ``f``'s histogram (copies ``a + b``) and zero the copies.

    Only bins ``0 .. used - 1`` of each group can be non-zero (``used`` is
    one more than a bound on the frame's counts), so only they are read:
    the cost per frame follows the counts seen, not ``n_bins`` (at low
    ``kbar`` a few bins of 32).  With parents (``parent_out[0]`` not empty)
    the group histograms are also summed per parent into ``parent_out[1]``,
    which is then added to the parents' arrays and zeroed.
    """
    counts, counts_sq, sums, frame_out = group_out
    parent, p_hist, p_counts, p_counts_sq, p_sums, p_frame_out = parent_out
    keep = frame_out.shape[0] > 0
    nested = parent.shape[0] > 0
    for g in range(counts.shape[0]):
        total = np.int64(0)
        base = g * n_bins
        for k in range(used):
            h = np.int64(a[base + k]) + np.int64(b[base + k])
            if h == 0:
                continue
            a[base + k] = 0
            b[base + k] = 0
            counts[g, k] += h
            counts_sq[g, k] += h * h
            total += k * h
            if keep:
                frame_out[f, g, k] = h
            if nested:
                p_hist[parent[g], k] += h
        sums[f, g] = total
    if nested:
        keep = p_frame_out.shape[0] > 0
        for p in range(p_hist.shape[0]):
            total = np.int64(0)
            for k in range(used):
                h = p_hist[p, k]
                if h == 0:
                    continue
                p_hist[p, k] = 0
                p_counts[p, k] += h
                p_counts_sq[p, k] += h * h
                total += k * h
                if keep:
                    p_frame_out[f, p, k] = h
            p_sums[f, p] = total


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _used(bound, n_bins):
    """Bins that can be non-zero for counts whose bitwise OR is ``bound``."""
    return min(bound, np.uint64(n_bins - 1)) + 1


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _fold(a, b, c, d, n):
    """Add copies ``c``, ``d`` into ``a``, ``b`` and zero them (``n`` entries)."""
    for i in range(n):
        a[i] += c[i]
        b[i] += d[i]
        c[i] = 0
        d[i] = 0


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _zero(scratch):
    """Zero all of ``scratch`` (after an out-of-range count: rare)."""
    for c in range(scratch.shape[0]):
        row = scratch[c]
        for i in range(row.shape[0]):
            row[i] = 0


@nb.njit(cache=True, nogil=True, boundscheck=False)
def accumulate_checked(frames, runs, labels, n_bins, scratch, group_out, parent_out):
    """Accumulate a stack of frames into per-group histograms.

    Parameters
    ----------
    frames : numpy.ndarray
        C-contiguous ``(n_frames, n_pixels_flat)`` integer array (numba
        compiles one specialisation per dtype).
    runs : numpy.ndarray
        ``(2, n_runs)`` int64: start and stop (exclusive) flat pixel index of
        each run.
    labels : numpy.ndarray
        int32 offset ``group * n_bins`` of each pixel, in run order.
    n_bins : int
        Number of bins ``K``; valid counts are ``0 .. K - 1``.
    scratch : numpy.ndarray
        ``(4, >= n_groups * K)`` int32, all zero; left all zero.
    group_out : tuple of numpy.ndarray
        int64 ``(counts, counts_sq, sums, frame_out)``: ``counts`` and
        ``counts_sq`` ``(n_groups, K)`` are incremented in place by the
        per-frame histograms and their squares; ``sums`` ``(n_frames,
        n_groups)`` receives the per-frame sum of counts of each group;
        ``frame_out`` ``(n_frames, n_groups, K)`` each per-frame histogram
        (an array with zero frames skips that).
    parent_out : tuple of numpy.ndarray
        int64 ``(parent, parent_hist, counts, counts_sq, sums, frame_out)``
        for the parents of the groups: ``parent`` ``(n_groups,)`` the parent
        of each group (empty: no parents, the rest is ignored),
        ``parent_hist`` ``(n_parents, K)`` all-zero scratch, left zero, and
        the parents' arrays as in ``group_out``.  The per-frame histogram of
        a parent is the sum of those of its groups.

    Returns
    -------
    int
        Number of frames accumulated: ``n_frames``, or the index of the first
        frame holding a value outside ``0 .. K - 1`` (nothing of that frame
        or later is accumulated).
    """
    limit = np.uint64(n_bins)
    s0, s1, s2, s3 = scratch[0], scratch[1], scratch[2], scratch[3]
    n = frames.shape[0]
    f = 0
    while f < n:
        if f + 1 < n:
            bound = _fill_pair_checked(
                frames[f], frames[f + 1], runs, labels, limit, s0, s1, s2, s3
            )
            if bound != FAILED:
                used = _used(bound, n_bins)
                _commit(s0, s1, n_bins, used, f, group_out, parent_out)
                _commit(s2, s3, n_bins, used, f + 1, group_out, parent_out)
                f += 2
                continue
            _zero(scratch)  # one of the two is out of range: redo f alone
        bound = _fill_one_checked(frames[f], runs, labels, limit, s0, s1, s2, s3)
        if bound == FAILED:
            _zero(scratch)
            return f
        _fold(s0, s1, s2, s3, group_out[0].size)
        _commit(s0, s1, n_bins, _used(bound, n_bins), f, group_out, parent_out)
        f += 1
    return n


@nb.njit(cache=True, nogil=True, boundscheck=False)
def accumulate_raw(
    frames, runs, labels, n_bins, n_pixels, scratch, group_out, parent_out
):
    """:func:`accumulate_checked` for ``uint8``/``uint16`` frames only.

    No per-pixel test: a count ``>= K`` lands in later groups' bins or in
    the tail of ``scratch`` (which must have ``n_groups * K + 65536``
    entries per row).  When the bitwise OR of the counts is below ``K``
    every count is; otherwise (rare) each group's bins are checked to hold
    exactly ``n_pixels`` (int64, per group) counts.
    """
    limit = np.uint64(n_bins)
    s0, s1, s2, s3 = scratch[0], scratch[1], scratch[2], scratch[3]
    n = frames.shape[0]
    f = 0
    while f < n:
        if f + 1 < n:
            bound = _fill_pair_raw(
                frames[f], frames[f + 1], runs, labels, s0, s1, s2, s3
            )
            if bound < limit or (
                _complete(s0, s1, n_bins, n_pixels)
                and _complete(s2, s3, n_bins, n_pixels)
            ):
                used = _used(bound, n_bins)
                _commit(s0, s1, n_bins, used, f, group_out, parent_out)
                _commit(s2, s3, n_bins, used, f + 1, group_out, parent_out)
                f += 2
                continue
            _zero(scratch)
        bound = _fill_one_raw(frames[f], runs, labels, s0, s1, s2, s3)
        _fold(s0, s1, s2, s3, group_out[0].size)
        if bound >= limit and not _complete(s0, s1, n_bins, n_pixels):
            _zero(scratch)
            return f
        _commit(s0, s1, n_bins, _used(bound, n_bins), f, group_out, parent_out)
        f += 1
    return n
