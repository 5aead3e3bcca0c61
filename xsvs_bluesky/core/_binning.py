"""Frame binning: sums of non-overlapping groups of consecutive frames.

Summing ``n`` consecutive frames of exposure ``t_e`` emulates one frame of
exposure ``n t_e``.  The groups must not overlap: frames shared between two
sums correlate them and bias the contrast of the longer exposure.  With
independent frames of contrast ``beta`` the binned frames have contrast
``beta / n``; a static speckle pattern keeps ``beta``.

Public names are re-exported by :mod:`xsvs_bluesky.core.histogram`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.errors import FrameDataError, OptionError

__all__ = ["FrameBinner", "bin_frames", "binned_dtype"]


def binned_dtype(dtype: np.dtype | type, n: int) -> np.dtype:
    """Integer dtype wide enough for sums of ``n`` values of ``dtype``.

    ``uint32`` for 8- and 16-bit unsigned (and bool) counts when ``n`` values
    at the dtype's maximum fit, ``uint64`` for ``uint64``, otherwise
    ``int64``.
    """
    dt = np.dtype(dtype)
    if dt == np.bool_:
        dt = np.dtype(np.uint8)
    if not np.issubdtype(dt, np.integer):
        raise FrameDataError(f"frames must hold integer counts, got dtype {dt}")
    if dt == np.uint64:
        return np.dtype(np.uint64)
    if dt.kind == "u" and dt.itemsize <= 2 and n * np.iinfo(dt).max < 2**32:
        return np.dtype(np.uint32)
    return np.dtype(np.int64)


def _check_n(n: int) -> int:
    if int(n) != n or int(n) < 1:
        raise OptionError(f"bin size n={n!r}: must be a positive integer")
    return int(n)


def bin_frames(frames: ArrayLike, n: int) -> NDArray[np.integer]:
    """Sum non-overlapping groups of ``n`` consecutive frames.

    Parameters
    ----------
    frames : array_like
        Integer stack ``(n_frames, rows, cols)``.
    n : int
        Frames per bin; the last ``n_frames % n`` frames are dropped.

    Returns
    -------
    numpy.ndarray
        ``(n_frames // n, rows, cols)`` sums, dtype from :func:`binned_dtype`.

    Raises
    ------
    ValueError
        If ``n < 1``, the dtype is not integer or ``frames`` is not a stack.

    Examples
    --------
    >>> bin_frames(np.arange(5, dtype=np.uint16).reshape(5, 1, 1), 2).ravel()
    array([1, 5], dtype=uint32)
    """
    n = _check_n(n)
    arr = np.asarray(frames)
    if arr.ndim < 2:
        raise OptionError(
            f"frames must be a stack (n_frames, ...), got shape {arr.shape}"
        )
    out = binned_dtype(arr.dtype, n)
    m = arr.shape[0] // n
    return arr[: m * n].reshape(m, n, *arr.shape[1:]).sum(axis=1, dtype=out)


class FrameBinner:
    """Streaming :func:`bin_frames` for frames arriving in chunks.

    Parameters
    ----------
    n : int
        Frames per bin.

    Examples
    --------
    >>> binner = FrameBinner(3)
    >>> chunk = np.ones((4, 2, 2), dtype=np.uint16)
    >>> binner.push(chunk).shape, binner.pending
    ((1, 2, 2), 1)
    >>> binner.push(chunk).shape, binner.pending
    ((1, 2, 2), 2)
    """

    def __init__(self, n: int) -> None:
        self.n = _check_n(n)
        self._partial: NDArray[np.integer] | None = None
        self._pending = 0

    @property
    def pending(self) -> int:
        """Frames received but not yet part of a completed bin."""
        return self._pending

    def reset(self) -> None:
        """Drop the pending frames (e.g. at the end of an exposure)."""
        self._partial = None
        self._pending = 0

    def push(self, frames: ArrayLike) -> NDArray[np.integer]:
        """Add one frame ``(rows, cols)`` or a stack; return completed bins.

        Returns
        -------
        numpy.ndarray
            ``(n_completed, rows, cols)`` binned frames (possibly none), the
            same values and dtype :func:`bin_frames` gives on the whole series.

        Raises
        ------
        ValueError
            If shape or dtype change while frames are pending.
        """
        arr = np.asarray(frames)
        if arr.ndim == 2:
            arr = arr[None]
        dtype = binned_dtype(arr.dtype, self.n)
        done: list[NDArray[np.integer]] = []
        if self._partial is not None:
            if self._partial.shape != arr.shape[1:] or self._partial.dtype != dtype:
                raise FrameDataError(
                    f"FrameBinner: got frames {arr.shape[1:]} {arr.dtype} while "
                    f"{self._pending} frames of {self._partial.shape} are pending"
                )
            take = min(self.n - self._pending, arr.shape[0])
            self._partial += arr[:take].sum(axis=0, dtype=dtype)
            self._pending += take
            arr = arr[take:]
            if self._pending == self.n:
                done.append(self._partial[None])
                self.reset()
        m = arr.shape[0] // self.n * self.n
        if m:
            done.append(bin_frames(arr[:m], self.n))
        if arr.shape[0] > m:
            self._partial = arr[m:].sum(axis=0, dtype=dtype)
            self._pending = arr.shape[0] - m
        if not done:
            return np.zeros((0, *arr.shape[1:]), dtype=dtype)
        return done[0] if len(done) == 1 else np.concatenate(done)
