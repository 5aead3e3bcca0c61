"""Numba kernels of the averaged image and the benchmarks' read floor.

:func:`add_frames` sums a stack of integer frames pixel by pixel, exactly,
for :class:`xsvs_bluesky.core.images.ImageAverager` in the live path;
:func:`plain_sum` is the cheapest loop that reads every pixel (the "plain
read" baseline of ``benchmarks/bench_histogram``).  The histogram kernels
are in :mod:`xsvs_bluesky.core._kernels`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["IMAGE_BLOCK", "IMAGE_FRAMES", "add_frames", "plain_sum"]


IMAGE_BLOCK = 2048
"""Pixels per block of :func:`add_frames` (its partial sums stay in L1)."""
IMAGE_FRAMES = 32
"""Frames summed per pass over a block (exact in int32 for 8/16-bit counts)."""


@nb.njit(cache=True, nogil=True, boundscheck=False)
def add_frames(frames, total, partial):
    """Add a stack of frames pixel by pixel into ``total``.

    Parameters
    ----------
    frames : numpy.ndarray
        C-contiguous ``(n_frames, n_pixels_flat)`` integer counts.
    total : numpy.ndarray
        ``(n_pixels_flat,)`` float64, incremented in place.
    partial : numpy.ndarray
        ``(IMAGE_BLOCK,)`` scratch whose dtype holds the exact sum of
        :data:`IMAGE_FRAMES` counts (int32 for 8/16-bit counts, int64
        otherwise).

    Notes
    -----
    Block by block of pixels, up to :data:`IMAGE_FRAMES` frames are added
    into ``partial`` (a few KiB, in L1), four rows per vectorised pass so
    ``partial`` is loaded and stored once per four frames, then ``partial``
    into ``total``: the float64 image is read and written once per 32
    frames.  A signed partial converts to float64 in vector instructions
    (an unsigned one does not: measured 1.8x slower overall).
    """
    n, n_pix = frames.shape
    block = partial.shape[0]
    for first in range(0, n, IMAGE_FRAMES):
        last = min(n, first + IMAGE_FRAMES)
        for start in range(0, n_pix, block):
            stop = min(n_pix, start + block)
            acc = partial[: stop - start]
            acc[:] = 0
            f = first
            while f + 4 <= last:
                r0 = frames[f, start:stop]
                r1 = frames[f + 1, start:stop]
                r2 = frames[f + 2, start:stop]
                r3 = frames[f + 3, start:stop]
                for i in range(acc.shape[0]):
                    acc[i] += r0[i] + r1[i] + r2[i] + r3[i]
                f += 4
            while f < last:
                row = frames[f, start:stop]
                for i in range(acc.shape[0]):
                    acc[i] += row[i]
                f += 1
            out = total[start:stop]
            for i in range(acc.shape[0]):
                out[i] += acc[i]


@nb.njit(cache=True, nogil=True, boundscheck=False)
def plain_sum(frames):
    """Sum every pixel of a ``(n_frames, n_pixels_flat)`` stack (reference).

    The "plain read" baseline of the benchmark: the cheapest loop that still
    reads every pixel of every frame, compiled with the same options as the
    accumulator.
    """
    total = np.int64(0)
    for f in range(frames.shape[0]):
        row = frames[f]
        s = np.int64(0)
        for p in range(row.shape[0]):
            s += row[p]
        total += s
    return total
