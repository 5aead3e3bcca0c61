"""The hot kernels on several cores (numba ``parallel=True``).

Histograms: a stack of frames is cut into *lanes* of consecutive frames,
one per thread.  Each lane runs the one-thread kernel of
:mod:`xsvs_bluesky.core._kernels` with its own four scratch rows and its own
zeroed ``counts``, ``counts_sq`` (and parent) accumulators; its per-frame
sums (and kept per-frame histograms) go straight to its own rows of the
caller's buffers, which no other lane touches.  The lanes' accumulators are
then added to the caller's, in lane order, up to and including the first
lane that stopped at an out-of-range count; the result is that lane's stop
frame, as the one-thread kernel would return.  Frames after it were
histogrammed by later lanes, but their accumulators are dropped and their
per-frame rows are rewritten when the caller resumes from the stop frame
(with more bins): the state is exactly that of the one-thread kernel.

Images: the pixels are cut into blocks of :data:`~._kernels.IMAGE_BLOCK`,
one block per task; each block sums its frames in an exact integer partial
and adds it into its own pixels of the float64 total.

The threads are numba's (OpenMP or TBB when present, else its own
work queue, which must not be entered by two Python threads at once:
:data:`LAUNCH` serialises the calls).  ``numba.set_num_threads`` or
``NUMBA_NUM_THREADS`` bound the lanes.
"""

from __future__ import annotations

import threading

import numba as nb
import numpy as np

from xsvs_bluesky.core._kernels import (
    IMAGE_FRAMES,
    N_COPIES,
    accumulate_checked,
    accumulate_raw,
)

__all__ = ["LAUNCH", "MIN_LANE_FRAMES", "accumulate_lanes", "add_frames_lanes", "lanes"]

MIN_LANE_FRAMES = 4
"""Fewest frames worth a lane of their own (a launch costs ~10-30 us)."""

LAUNCH = threading.Lock()
"""Held around every parallel kernel: numba's work-queue threading layer
aborts when two Python threads launch at once."""


def lanes(n_frames: int) -> int:
    """Return the lanes for a stack of ``n_frames`` (1: the one-thread kernel)."""
    return max(1, min(nb.get_num_threads(), n_frames // MIN_LANE_FRAMES))


@nb.njit(cache=True, nogil=True, parallel=True)
def accumulate_lanes(
    frames, runs, labels, n_bins, n_pixels, raw, scratch, group_out, parent_out
):
    """Accumulate a stack of frames in lanes run on several threads.

    The result is that of :func:`~._kernels.accumulate_checked`; the stack
    is cut into ``scratch.shape[0] // 4`` lanes.  Parameters are those of
    the one-thread kernels, with ``raw`` (bool) choosing
    :func:`~._kernels.accumulate_raw` (8/16-bit unsigned counts,
    ``n_pixels`` per group) and ``scratch`` holding four zeroed rows per
    lane (left zeroed).

    Returns
    -------
    int
        Frames accumulated: all, or the index of the first frame holding a
        count outside ``0 .. n_bins - 1`` (nothing of it or later is
        accumulated).
    """
    counts, counts_sq, sums, frame_out = group_out
    parent, p_hist, p_counts, p_counts_sq, p_sums, p_frame_out = parent_out
    n = frames.shape[0]
    n_lanes = scratch.shape[0] // N_COPIES
    g, k = counts.shape
    p = p_counts.shape[0]
    l_counts = np.zeros((n_lanes, g, k), dtype=np.int64)
    l_counts_sq = np.zeros((n_lanes, g, k), dtype=np.int64)
    l_hist = np.zeros((n_lanes, p, k), dtype=np.int64)
    l_p_counts = np.zeros((n_lanes, p, k), dtype=np.int64)
    l_p_counts_sq = np.zeros((n_lanes, p, k), dtype=np.int64)
    done = np.zeros(n_lanes, dtype=np.int64)
    for lane in nb.prange(n_lanes):
        lo = lane * n // n_lanes
        hi = (lane + 1) * n // n_lanes
        rows = scratch[lane * N_COPIES : (lane + 1) * N_COPIES]
        mine = (l_counts[lane], l_counts_sq[lane], sums[lo:hi], frame_out[lo:hi])
        theirs = (
            parent,
            l_hist[lane],
            l_p_counts[lane],
            l_p_counts_sq[lane],
            p_sums[lo:hi],
            p_frame_out[lo:hi],
        )
        if raw:
            got = accumulate_raw(
                frames[lo:hi], runs, labels, n_bins, n_pixels, rows, mine, theirs
            )
        else:
            got = accumulate_checked(
                frames[lo:hi], runs, labels, n_bins, rows, mine, theirs
            )
        done[lane] = got
    total = 0
    for lane in range(n_lanes):
        counts += l_counts[lane]
        counts_sq += l_counts_sq[lane]
        if p > 0:
            p_counts += l_p_counts[lane]
            p_counts_sq += l_p_counts_sq[lane]
        lo = lane * n // n_lanes
        hi = (lane + 1) * n // n_lanes
        total = lo + done[lane]
        if total < hi:
            return total
    return total


@nb.njit(cache=True, nogil=True, parallel=True)
def add_frames_lanes(frames, total, partial):
    """:func:`~._kernels.add_frames` with the pixel blocks spread over threads.

    ``partial`` only gives the dtype and size of each block's exact integer
    partial sum (see :func:`~._kernels.add_frames`).
    """
    n, n_pix = frames.shape
    block = partial.shape[0]
    n_blocks = (n_pix + block - 1) // block
    for b in nb.prange(n_blocks):
        start = b * block
        width = min(block, n_pix - start)
        part = np.empty_like(partial)
        for first in range(0, n, IMAGE_FRAMES):
            last = min(n, first + IMAGE_FRAMES)
            for i in range(width):
                part[i] = 0
            for f in range(first, last):
                row = frames[f, start : start + width]
                for i in range(width):
                    part[i] += row[i]
            for i in range(width):
                total[start + i] += part[i]
