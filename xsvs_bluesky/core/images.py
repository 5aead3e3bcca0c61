"""Averaged images, radial profiles and beam-centre refinement.

Pure numerics (no I/O).  :class:`ImageAverager` sits in the live data path:
a stack of integer frames is summed by a compiled, cache-blocked kernel
(:func:`xsvs_bluesky.core._image_kernels.add_frames`, exact integer partial sums),
anything else by one numpy reduction.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._center import CenterFit, refine_center
from xsvs_bluesky.core._partitions import Partitions
from xsvs_bluesky.errors import GeometryError, NoDataError

__all__ = [
    "CenterFit",
    "ImageAverager",
    "RadialProfile",
    "radial_profile",
    "refine_center",
]


def _add_stack(arr: NDArray[np.generic], total: NDArray[np.float64]) -> None:
    """Add the frames of a non-empty ``(n, rows, cols)`` stack into ``total``."""
    narrow = arr.dtype.kind == "u" and arr.dtype.itemsize <= 2
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 8:
        try:
            from xsvs_bluesky.core._image_kernels import IMAGE_BLOCK, add_frames
        except ImportError:  # pragma: no cover - numba is a dependency
            pass
        else:
            # the partial holds IMAGE_FRAMES (32) frames: exact in int32 for
            # 8/16-bit counts, whatever the stack length
            partial = np.zeros(IMAGE_BLOCK, np.int32 if narrow else np.int64)
            flat = np.ascontiguousarray(arr).reshape(arr.shape[0], -1)
            add_frames(flat, total.reshape(-1), partial)
            return
    # 8/16-bit counts summed exactly in uint32 (faster than float64)
    exact = narrow and arr.shape[0] <= 65536
    total += np.add.reduce(arr, axis=0, dtype=np.uint32 if exact else np.float64)


class ImageAverager:
    """Running float64 sum of detector frames.

    Parameters
    ----------
    shape : tuple of int, optional
        Frame shape ``(rows, columns)``; taken from the first update when
        omitted.

    Examples
    --------
    >>> avg = ImageAverager()
    >>> avg.update(np.ones((3, 2, 2), dtype=np.uint16))
    >>> avg.update(np.full((2, 2), 5))
    >>> avg.n_frames, avg.mean()[0, 0]
    (4, np.float64(2.0))
    """

    def __init__(self, shape: tuple[int, int] | None = None) -> None:
        self._sum: NDArray[np.float64] | None = None
        self._n = 0
        if shape is not None:
            self._sum = np.zeros((int(shape[0]), int(shape[1])), dtype=np.float64)

    @property
    def n_frames(self) -> int:
        """Number of frames added so far."""
        return self._n

    @property
    def shape(self) -> tuple[int, int] | None:
        """Frame shape ``(rows, columns)``, None before the first frame."""
        return None if self._sum is None else (self._sum.shape[0], self._sum.shape[1])

    @property
    def sum(self) -> NDArray[np.float64]:
        """Read-only view of the float64 sum of the frames."""
        if self._sum is None:
            raise NoDataError("ImageAverager has no frames yet; call update() first")
        view = self._sum.view()
        view.flags.writeable = False
        return view

    def _buffer(self, shape: tuple[int, ...]) -> NDArray[np.float64]:
        if self._sum is None:
            self._sum = np.zeros(shape, dtype=np.float64)
        elif self._sum.shape != shape:
            raise GeometryError(
                f"ImageAverager: frame shape {shape} differs from {self._sum.shape}"
            )
        return self._sum

    def update(self, frames: ArrayLike) -> None:
        """Add one frame ``(rows, columns)`` or a stack ``(n, rows, columns)``.

        Raises
        ------
        GeometryError
            If the frames are not 2-d/3-d or their shape differs from the
            frames added before.
        """
        arr = np.asarray(frames)
        if arr.ndim == 2:
            total = self._buffer(arr.shape)
            np.add(total, arr, out=total)
            self._n += 1
        elif arr.ndim == 3:
            total = self._buffer(arr.shape[1:])
            if arr.shape[0]:
                _add_stack(arr, total)
            self._n += arr.shape[0]
        else:
            raise GeometryError(
                f"ImageAverager: frames have shape {arr.shape}; give (rows, "
                "columns) or (n_frames, rows, columns)"
            )

    def merge(self, other: ImageAverager) -> ImageAverager:
        """Return a new averager holding the frames of both (neither changes).

        Raises
        ------
        GeometryError
            If the frame shapes differ.
        """
        out = ImageAverager()
        out._n = self._n + other._n
        sums = [s for s in (self._sum, other._sum) if s is not None]
        if len(sums) == 2 and sums[0].shape != sums[1].shape:
            raise GeometryError(
                f"ImageAverager.merge: shapes {sums[0].shape} and {sums[1].shape} "
                "differ"
            )
        if sums:
            out._sum = sums[0].copy()
            for s in sums[1:]:
                out._sum += s
        return out

    def absorb(self, total: ArrayLike, n_frames: int) -> None:
        """Add the :attr:`sum` of ``n_frames`` other frames, in place.

        The sum of integer counts is exact in float64 (every partial and
        total sum stays far below 2**53), so absorbing the sums of the
        blocks of a series gives the sum of the whole series bit for bit,
        whatever the blocks: what a sharded analysis relies on.  Sums of
        non-integer frames are rounded in the order they are added.

        Raises
        ------
        GeometryError
            If the shape differs from the frames added before.
        """
        arr = np.asarray(total, dtype=np.float64)
        if arr.ndim != 2:
            raise GeometryError(
                f"ImageAverager.absorb: a sum of shape {arr.shape}; give (rows, "
                "columns)"
            )
        out = self._buffer(arr.shape)
        np.add(out, arr, out=out)
        self._n += int(n_frames)

    def mean(self) -> NDArray[np.float64]:
        """Mean image (float64, new array).

        Raises
        ------
        XSVSError
            If no frame was added.
        """
        if self._sum is None or self._n == 0:
            raise NoDataError("ImageAverager has no frames yet; call update() first")
        return self._sum / self._n


class RadialProfile(NamedTuple):
    """Azimuthally averaged intensity per q partition."""

    q: NDArray[np.float64]
    """Partition centres in 1/Angstrom."""
    intensity: NDArray[np.float64]
    """Mean pixel intensity of each partition (NaN when empty)."""
    intensity_err: NDArray[np.float64]
    """Standard error of that mean, ``std(ddof=1) / sqrt(n)`` (NaN if n < 2)."""


def radial_profile(image: ArrayLike, partitions: Partitions) -> RadialProfile:
    """Mean intensity of each q partition and its standard error.

    Parameters
    ----------
    image : array_like
        2-d image of the partitions' shape (e.g. :meth:`ImageAverager.mean`).
    partitions : Partitions
        q partitions (masked pixels already excluded).

    Returns
    -------
    RadialProfile
        ``(q, intensity, intensity_err)``: centres in 1/Angstrom, the mean of
        the pixel values and ``std / sqrt(n_pixels)`` with the sample
        standard deviation (``ddof=1``).  Empty partitions give NaN, single
        pixel ones a NaN error.

    Raises
    ------
    GeometryError
        If the image shape differs from the partitions' shape.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape != partitions.shape:
        raise GeometryError(
            f"radial_profile: image shape {img.shape} differs from the partitions' "
            f"shape {partitions.shape}"
        )
    n_part = len(partitions)
    counts = partitions.n_pixels
    q = partitions.centers.copy()
    if n_part == 0:
        empty = np.zeros(0)
        return RadialProfile(q, empty, empty.copy())
    index = np.concatenate(partitions.pixels)
    labels = np.repeat(np.arange(n_part), counts)
    values = img.ravel()[index]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(labels, weights=values, minlength=n_part) / counts
        dev = values - mean[labels]
        ss = np.bincount(labels, weights=dev * dev, minlength=n_part)
        err = np.sqrt(ss / (counts - 1) / counts)
    err[counts < 2] = np.nan
    return RadialProfile(q, mean, err)
