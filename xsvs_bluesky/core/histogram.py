"""Exact per-group photon-count histograms accumulated over frames.

:class:`HistogramAccumulator` keeps, for every pixel group (a q partition or
a sub-group of one), the sum over frames of the per-frame histograms of the
photon counts, the sum of their squares (for a per-frame standard deviation),
the per-frame mean count ("trace") and the frame count.  Bins never overflow:
a count beyond the last bin grows ``n_bins`` to the next power of two above
it and the frame is histogrammed again, so no count is lost or merged.
Accumulators over parts of a series merge exactly.

The hot loop is a numba kernel (:mod:`xsvs_bluesky.core._kernels`); a numpy
backend gives bit-identical results when numba is unavailable.  Frame binning
(:func:`bin_frames`, :class:`FrameBinner`) lives in
:mod:`xsvs_bluesky.core._binning` and is re-exported here.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._binning import FrameBinner, bin_frames
from xsvs_bluesky.core._hist_layout import GroupLayout, accumulate_numpy, nan_ratio
from xsvs_bluesky.errors import FrameDataError, GeometryError

__all__ = ["Backend", "FrameBinner", "HistogramAccumulator", "bin_frames"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "numba", "numpy"]

N_COPIES = 4  # rows of the numba scratch (_kernels.N_COPIES)
SCRATCH_TAIL = 1 << 16  # room for unchecked 16-bit counts (_kernels.SCRATCH_TAIL)


def _numba_kernels() -> tuple[Any, Any] | None:
    """Return the numba kernels, or None when numba cannot be imported."""
    try:
        from xsvs_bluesky.core._kernels import accumulate_checked, accumulate_raw
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return accumulate_raw, accumulate_checked


def _as_groups(groups: Any) -> Any:
    """Accept PixelGroups, Partitions (via ``as_groups``) or look-alikes."""
    if not hasattr(groups, "parent") and hasattr(groups, "as_groups"):
        groups = groups.as_groups()
    if not hasattr(groups, "pixels") or not hasattr(groups, "shape"):
        raise TypeError(
            "groups must be PixelGroups or Partitions (objects with .pixels and "
            f".shape), got {type(groups).__name__}"
        )
    return groups


class HistogramAccumulator:
    """Exact histograms of photon counts per pixel group, summed over frames.

    Parameters
    ----------
    groups : PixelGroups or Partitions
        Pixel groups (``.pixels``: tuple of flat C-order index arrays,
        ``.shape``: detector shape in px).  Partitions are converted with
        ``as_groups()``.  A pixel may belong to several groups.
    n_bins : int, default 32
        Initial number of bins (counts ``0 .. n_bins - 1``).  Grows to the
        next power of two above any larger count.
    backend : {"auto", "numba", "numpy"}
        Hot-loop implementation; "auto" uses numba when it can be imported.
        Both give bit-identical results.
    keep_frame_histograms : bool, default False
        Also store every per-frame histogram (:attr:`frame_counts`).
    max_bins : int, default 65536
        Refuse (``ValueError``) a count that would need more bins, e.g. an
        unmasked hot or gap pixel; the accumulator is then left unchanged.

    Examples
    --------
    >>> from xsvs_bluesky.core.geometry import PixelGroups
    >>> groups = PixelGroups(pixels=(np.array([0, 1]), np.array([2, 3])),
    ...                      parent=[0, 1], weight=[1.0, 1.0], shape=(2, 2),
    ...                      n_partitions=2)
    >>> acc = HistogramAccumulator(groups, n_bins=4, backend="numpy")
    >>> acc.update(np.array([[0, 1], [2, 7]], dtype=np.uint16))
    >>> acc.n_bins, acc.counts[1].tolist()
    (8, [0, 0, 1, 0, 0, 0, 0, 1])
    """

    def __init__(
        self,
        groups: Any,
        *,
        n_bins: int = 32,
        backend: Backend = "auto",
        keep_frame_histograms: bool = False,
        max_bins: int = 1 << 16,
    ) -> None:
        self.groups = _as_groups(groups)
        self.shape = (int(self.groups.shape[0]), int(self.groups.shape[1]))
        if int(n_bins) < 1 or int(max_bins) < int(n_bins):
            raise ValueError(
                f"n_bins={n_bins}, max_bins={max_bins}: need 1 <= n_bins <= max_bins"
            )
        self._kernel = None
        if backend in ("auto", "numba"):
            self._kernel = _numba_kernels()
            if self._kernel is None and backend == "numba":
                raise ImportError("backend='numba' requested but numba is missing")
        elif backend != "numpy":
            raise ValueError(f"backend={backend!r}; use 'auto', 'numba' or 'numpy'")
        self.backend: str = "numpy" if self._kernel is None else "numba"
        self.keep_frame_histograms = bool(keep_frame_histograms)
        self.max_bins = int(max_bins)
        self._layout = GroupLayout.build(self.groups.pixels, self.shape)
        g = self._layout.n_groups
        self._k = int(n_bins)
        self._counts = np.zeros((g, self._k), dtype=np.int64)
        self._counts_sq = np.zeros((g, self._k), dtype=np.int64)
        self._sums = np.zeros((0, g), dtype=np.int64)  # capacity grows
        self._frames = np.zeros((0, g, self._k), dtype=np.int64)
        self._n = 0
        self._prepare_kernel()

    # ----------------------------------------------------------------- state
    @property
    def n_groups(self) -> int:
        """Number of groups ``G``."""
        return self._layout.n_groups

    @property
    def n_pixels(self) -> NDArray[np.int64]:
        """Number of pixels of each group, shape ``[G]``."""
        return self._layout.n_pixels.copy()

    @property
    def n_bins(self) -> int:
        """Current number of bins ``K`` (counts ``0 .. K - 1``)."""
        return self._k

    @property
    def n_frames(self) -> int:
        """Number of frames accumulated."""
        return self._n

    @property
    def counts(self) -> NDArray[np.int64]:
        """Sum over frames of the per-frame histograms, ``[G, K]`` (a copy)."""
        return self._counts.copy()

    @property
    def counts_sq(self) -> NDArray[np.int64]:
        """Sum over frames of the squared per-frame histograms, ``[G, K]``."""
        return self._counts_sq.copy()

    @property
    def frame_sums(self) -> NDArray[np.int64]:
        """Per-frame total count of each group, ``[n_frames, G]`` (exact)."""
        return self._sums[: self._n].copy()

    @property
    def trace(self) -> NDArray[np.float64]:
        """Per-frame mean count of each group, ``[n_frames, G]`` (NaN if empty)."""
        return nan_ratio(self._sums[: self._n], self._layout.n_pixels[None, :])

    @property
    def frame_counts(self) -> NDArray[np.int64]:
        """Every per-frame histogram, ``[n_frames, G, K]``.

        Raises
        ------
        ValueError
            If the accumulator was built without ``keep_frame_histograms``.
        """
        if not self.keep_frame_histograms:
            raise ValueError(
                "frame_counts needs HistogramAccumulator(..., "
                "keep_frame_histograms=True)"
            )
        return self._frames[: self._n].copy()

    @property
    def kbar(self) -> NDArray[np.float64]:
        """Mean count per pixel and frame of each group, ``[G]``."""
        total = self._sums[: self._n].sum(axis=0)
        return nan_ratio(total, self._layout.n_pixels * self._n)

    def probability(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean per-frame probability ``P(k)`` and its per-frame spread.

        Returns
        -------
        mean : numpy.ndarray
            ``counts / (n_frames * n_pixels)``, shape ``[G, K]``.
        std : numpy.ndarray
            Standard deviation over frames (ddof=0) of the per-frame
            ``P(k)``, shape ``[G, K]``; divide by ``sqrt(n_frames)`` for the
            standard error of ``mean``.  Rows of empty groups are NaN.

        Raises
        ------
        ValueError
            If no frame has been accumulated.
        """
        if self._n == 0:
            raise ValueError("probability(): no frame accumulated yet")
        npix = self._layout.n_pixels[:, None].astype(np.float64)
        mean = nan_ratio(self._counts, npix * self._n)
        second = nan_ratio(self._counts_sq, npix**2 * self._n)
        std = np.sqrt(np.maximum(second - mean**2, 0.0))  # NaN stays NaN
        return mean, std

    def __repr__(self) -> str:
        return (
            f"HistogramAccumulator(n_groups={self.n_groups}, n_bins={self._k}, "
            f"n_frames={self._n}, backend={self.backend!r})"
        )

    # ---------------------------------------------------------------- update
    def update(self, frames: ArrayLike) -> None:
        """Add one frame ``(rows, cols)`` or a stack ``(n, rows, cols)``.

        Parameters
        ----------
        frames : array_like
            Integer photon counts (any integer dtype, not copied when
            C-contiguous).

        Raises
        ------
        GeometryError
            If the frame shape differs from the groups' detector shape.
        ValueError
            On a non-integer dtype, a negative count, or a count needing more
            than ``max_bins`` bins.  The accumulator is then unchanged.
        """
        arr = np.asarray(frames)
        if arr.dtype == np.bool_:
            arr = arr.view(np.uint8)
        if arr.dtype.kind not in "ui":
            raise FrameDataError(
                f"frames must hold integer photon counts, got dtype {arr.dtype}"
            )
        if arr.dtype.kind == "i" and arr.dtype.itemsize < 4 and self._kernel:
            arr = arr.astype(np.int32)  # int8/int16: two numba compilations fewer
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != self.shape:
            raise GeometryError(
                f"frame shape {arr.shape[-2:] if arr.ndim >= 2 else arr.shape} "
                f"does not match the groups' detector shape {self.shape}; give "
                "(rows, cols) or (n, rows, cols) frames of that shape"
            )
        flat = np.ascontiguousarray(arr).reshape(arr.shape[0], -1)
        n_new = flat.shape[0]
        if n_new == 0:
            return
        self._reserve(self._n + n_new)
        saved = (self._k, self._counts.copy(), self._counts_sq.copy())
        done = 0
        try:
            while done < n_new:
                done += self._run(flat[done:], self._n + done)
                if done < n_new:
                    self._grow_for(flat[done], self._n + done)
        except Exception:
            self._restore(*saved)
            raise
        self._n += n_new

    def _run(self, flat: NDArray[np.integer], at: int) -> int:
        """Accumulate from frame ``at`` on; return how many went in."""
        end = at + flat.shape[0]
        out = self._frames[at:end] if self.keep_frame_histograms else self._no_frames
        sums = self._sums[at:end]
        if self._kernel is None:
            return accumulate_numpy(
                self._layout, flat, self._k, self._counts, self._counts_sq, sums, out
            )
        raw, checked = self._kernel
        head = (flat, self._layout.runs, self._labels, self._k)
        tail = (self._scratch, self._counts, self._counts_sq, sums, out)
        if flat.dtype.kind == "u" and flat.dtype.itemsize <= 2:
            # 8/16-bit unsigned counts cannot leave the scratch tail
            return int(raw(*head, self._layout.n_pixels, *tail))
        return int(checked(*head, *tail))

    def _grow_for(self, frame: NDArray[np.integer], index: int) -> None:
        """Grow ``n_bins`` for a frame holding a count beyond the last bin."""
        low, high = self._layout.value_range(frame)
        if low < 0:
            raise FrameDataError(
                f"frame {index} holds a negative count ({low}) in a pixel group; "
                "photon counts must be >= 0 (mask or correct those pixels)"
            )
        if high < self._k:  # cannot happen: the kernels stop only on such counts
            raise RuntimeError(f"frame {index}: histogram kernel stopped in range")
        new_k = 1 << high.bit_length()
        if new_k > self.max_bins:
            raise FrameDataError(
                f"frame {index} holds a count of {high}, needing {new_k} bins > "
                f"max_bins={self.max_bins}; mask hot, saturated or gap pixels, or "
                "raise max_bins"
            )
        logger.debug(
            "n_bins %d -> %d at frame %d (count %d)", self._k, new_k, index, high
        )
        self._resize(new_k)

    def _resize(self, new_k: int) -> None:
        pad = new_k - self._k
        if pad:
            self._counts = np.pad(self._counts, ((0, 0), (0, pad)))
            self._counts_sq = np.pad(self._counts_sq, ((0, 0), (0, pad)))
            self._frames = np.pad(self._frames, ((0, 0), (0, 0), (0, pad)))
            self._k = new_k
            self._prepare_kernel()

    def _restore(
        self, k: int, counts: NDArray[np.int64], sq: NDArray[np.int64]
    ) -> None:
        """Undo a failed :meth:`update` (frames count only once it succeeds)."""
        self._k = k
        self._counts, self._counts_sq = counts, sq
        self._frames = np.ascontiguousarray(self._frames[:, :, :k])
        self._prepare_kernel()

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` frames in the per-frame buffers."""
        if n <= self._sums.shape[0]:
            return
        cap = max(n, 2 * self._sums.shape[0], 64)
        sums = np.zeros((cap, self.n_groups), dtype=np.int64)
        sums[: self._n] = self._sums[: self._n]
        self._sums = sums
        if self.keep_frame_histograms:
            fr = np.zeros((cap, self.n_groups, self._k), dtype=np.int64)
            fr[: self._n] = self._frames[: self._n]
            self._frames = fr

    def _prepare_kernel(self) -> None:
        g = self.n_groups
        self._no_frames = np.zeros((0, g, self._k), dtype=np.int64)
        if self._kernel is not None:
            if g * self._k >= 2**31:
                raise ValueError(f"{g} groups x {self._k} bins is too many")
            self._labels = self._layout.labels(self._k)
            width = g * self._k + SCRATCH_TAIL + 16  # +16: rows not 4 KiB apart
            self._scratch = np.zeros((N_COPIES, width), dtype=np.int32)

    # ----------------------------------------------------------------- merge
    def merge(self, other: HistogramAccumulator) -> HistogramAccumulator:
        """Combine with an accumulator of later frames over the same groups.

        Returns
        -------
        HistogramAccumulator
            A new accumulator equal to one fed all frames of ``self`` then
            all frames of ``other`` (``n_bins`` is the larger of the two).

        Raises
        ------
        ValueError
            If the groups differ, or only one keeps frame histograms.
        """
        if not self.same_groups(other):
            raise ValueError("merge(): the accumulators histogram different groups")
        if self.keep_frame_histograms != other.keep_frame_histograms:
            raise ValueError(
                "merge(): both accumulators must have the same keep_frame_histograms"
            )
        out = HistogramAccumulator(
            self.groups,
            n_bins=max(self._k, other._k),
            backend="numba" if self.backend == "numba" else "numpy",
            keep_frame_histograms=self.keep_frame_histograms,
            max_bins=max(self.max_bins, other.max_bins),
        )
        n = self._n + other._n
        out._reserve(n)
        for acc, at in ((self, 0), (other, self._n)):
            k = acc._k
            out._counts[:, :k] += acc._counts
            out._counts_sq[:, :k] += acc._counts_sq
            out._sums[at : at + acc._n] = acc._sums[: acc._n]
            if out.keep_frame_histograms:
                out._frames[at : at + acc._n, :, :k] = acc._frames[: acc._n]
        out._n = n
        return out

    def same_groups(self, other: HistogramAccumulator) -> bool:
        """Whether ``other`` histograms exactly the same pixel groups."""
        a, b = self._layout, other._layout
        return (
            self.shape == other.shape
            and a.n_pixels.size == b.n_pixels.size
            and np.array_equal(a.n_pixels, b.n_pixels)
            and np.array_equal(a.member_pixel, b.member_pixel)
            and np.array_equal(a.member_group, b.member_group)
        )
