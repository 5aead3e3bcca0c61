"""Exact per-group photon-count histograms accumulated over frames.

:class:`HistogramAccumulator` keeps, for every pixel group (a q partition or
a sub-group of one), the sum over frames of the per-frame histograms of the
photon counts, the sum of their squares (for a per-frame standard deviation),
the per-frame mean count ("trace") and the frame count.  Bins never overflow:
a count beyond the last bin grows ``n_bins`` to the next power of two above
it and the frame is histogrammed again, so no count is lost or merged.
Accumulators over parts of a series merge exactly.  Given the parents of
its groups (the q partitions that efficiency groups split), an accumulator
also sums the per-frame parent histograms in the same pass over the pixels
(:attr:`HistogramAccumulator.parents`).

The hot loop is a numba kernel (:mod:`xsvs_bluesky.core._kernels`); a numpy
backend gives bit-identical results when numba is unavailable.  Both are
driven by :mod:`xsvs_bluesky.core._hist_runner`; the summed arrays live in
:mod:`xsvs_bluesky.core._hist_state`.  Frame binning (:func:`bin_frames`,
:class:`FrameBinner`) lives in :mod:`xsvs_bluesky.core._binning` and is
re-exported here.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._binning import FrameBinner, bin_frames
from xsvs_bluesky.core._hist_layout import (
    GroupLayout,
    as_groups,
    nan_ratio,
    parent_index,
)
from xsvs_bluesky.core._hist_runner import Backend, KernelRunner
from xsvs_bluesky.core._hist_state import HistogramState
from xsvs_bluesky.errors import FrameDataError, GeometryError, NoDataError, OptionError

__all__ = ["Backend", "FrameBinner", "HistogramAccumulator", "bin_frames"]

logger = logging.getLogger(__name__)


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
        Also store every per-frame histogram (:attr:`frame_counts`, and that
        of :attr:`parents`).
    max_bins : int, default 65536
        Refuse (``ValueError``) a count that would need more bins, e.g. an
        unmasked hot or gap pixel; the accumulator is then left unchanged.
    parents : PixelGroups or Partitions, optional
        Parents of the groups (e.g. the q partitions that
        ``Partitions.split_by`` split): group ``g`` lies in parent
        ``groups.parent[g]``, and the groups of each parent must hold each of
        its pixels exactly once.  The per-frame histogram of a parent (the
        sum of those of its groups) is then formed from the group histograms
        of each frame, and :attr:`parents` accumulates it: one pass over the
        pixels gives both levels, exactly as a separate accumulator over the
        parents would.

    Attributes
    ----------
    parents : HistogramAccumulator or None
        The accumulator over the parents (None without ``parents``), filled
        by this one's :meth:`update`: read it, do not update it.

    Raises
    ------
    GeometryError
        If a group repeats a pixel or indexes outside the detector, or the
        groups do not tile their parents.

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
        parents: Any = None,
    ) -> None:
        self.groups = as_groups(groups)
        self.shape = (int(self.groups.shape[0]), int(self.groups.shape[1]))
        if int(n_bins) < 1 or int(max_bins) < int(n_bins):
            raise OptionError(
                f"n_bins={n_bins}, max_bins={max_bins}: need 1 <= n_bins <= max_bins"
            )
        self.keep_frame_histograms = bool(keep_frame_histograms)
        self.max_bins = int(max_bins)
        self._n_bins0 = int(n_bins)
        layout = self._layout = GroupLayout.build(self.groups.pixels, self.shape)
        self._fed = False  # True for the parents of another accumulator
        self.parents: HistogramAccumulator | None = None
        parent = None
        if parents is not None:
            self.parents = HistogramAccumulator(
                parents,
                n_bins=n_bins,
                backend=backend,
                keep_frame_histograms=keep_frame_histograms,
                max_bins=max_bins,
            )
            self.parents._fed = True
            parent = parent_index(self.groups, layout, self.parents._layout)
        n_parents = 0 if self.parents is None else self.parents.n_groups
        self._runner = KernelRunner(layout, backend, parent, n_parents)
        self.backend: str = self._runner.backend
        self._init_state()

    def _init_state(self) -> None:
        """Fresh, empty arrays (the layout and settings are kept)."""
        self._state = HistogramState(
            self.n_groups, self._n_bins0, self.keep_frame_histograms
        )
        self._runner = self._runner.fresh()
        self._runner.prepare(self._state.k)

    def spawn(self) -> HistogramAccumulator:
        """Return a new, empty accumulator with the same groups and settings.

        It shares the (immutable) pixel layout, so making one per exposure
        costs no layout build; its :attr:`parents` are spawned too.
        """
        new = copy.copy(self)
        new._fed = False
        if self.parents is not None:
            new.parents = self.parents.spawn()
            new.parents._fed = True
        new._init_state()
        return new

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
        return self._state.k

    @property
    def n_frames(self) -> int:
        """Number of frames accumulated."""
        return self._state.n

    @property
    def counts(self) -> NDArray[np.int64]:
        """Sum over frames of the per-frame histograms, ``[G, K]`` (a copy)."""
        return self._state.counts.copy()

    @property
    def counts_sq(self) -> NDArray[np.int64]:
        """Sum over frames of the squared per-frame histograms, ``[G, K]``."""
        return self._state.counts_sq.copy()

    @property
    def frame_sums(self) -> NDArray[np.int64]:
        """Per-frame total count of each group, ``[n_frames, G]`` (exact)."""
        return self._state.sums[: self._state.n].copy()

    @property
    def trace(self) -> NDArray[np.float64]:
        """Per-frame mean count of each group, ``[n_frames, G]`` (NaN if empty)."""
        sums = self._state.sums[: self._state.n]
        return nan_ratio(sums, self._layout.n_pixels[None, :])

    @property
    def frame_counts(self) -> NDArray[np.int64]:
        """Every per-frame histogram, ``[n_frames, G, K]``.

        Raises
        ------
        ValueError
            If the accumulator was built without ``keep_frame_histograms``.
        """
        if not self.keep_frame_histograms:
            raise OptionError(
                "frame_counts needs HistogramAccumulator(..., "
                "keep_frame_histograms=True)"
            )
        return self._state.frames[: self._state.n].copy()

    @property
    def kbar(self) -> NDArray[np.float64]:
        """Mean count per pixel and frame of each group, ``[G]``."""
        n = self._state.n
        total = self._state.sums[:n].sum(axis=0)
        return nan_ratio(total, self._layout.n_pixels * n)

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
        n = self._state.n
        if n == 0:
            raise NoDataError("probability(): no frame accumulated yet")
        npix = self._layout.n_pixels[:, None].astype(np.float64)
        mean = nan_ratio(self._state.counts, npix * n)
        second = nan_ratio(self._state.counts_sq, npix**2 * n)
        std = np.sqrt(np.maximum(second - mean**2, 0.0))  # NaN stays NaN
        return mean, std

    def __repr__(self) -> str:
        return (
            f"HistogramAccumulator(n_groups={self.n_groups}, n_bins={self.n_bins}, "
            f"n_frames={self.n_frames}, backend={self.backend!r})"
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
        RuntimeError
            If this accumulator is the :attr:`parents` of another one (update
            that one).
        """
        if self._fed:
            raise RuntimeError(
                "this accumulator holds the parents of another one, which "
                "fills it: update that accumulator"
            )
        flat = self._runner.flat_frames(frames, self.shape)
        n_new = flat.shape[0]
        if n_new == 0:
            return
        levels = self._levels()
        at = self._state.n
        for state in levels:
            state.reserve(at + n_new)
        saved = [state.snapshot() for state in levels]
        done = 0
        try:
            while done < n_new:
                done += self._runner.run(flat[done:], at + done, *levels)
                if done < n_new:
                    self._grow_for(flat[done], at + done)
        except Exception:
            for state, snapshot in zip(levels, saved, strict=True):
                state.restore(snapshot)
            self._runner.prepare(self._state.k)
            raise
        for state in levels:
            state.n += n_new

    def _levels(self) -> list[HistogramState]:
        """Return the states this accumulator fills: its own, then its parents'."""
        parents = [] if self.parents is None else [self.parents._state]
        return [self._state, *parents]

    def _grow_for(self, frame: NDArray[np.integer], index: int) -> None:
        """Grow ``n_bins`` for a frame holding a count beyond the last bin."""
        low, high = self._layout.value_range(frame)
        if low < 0:
            raise FrameDataError(
                f"frame {index} holds a negative count ({low}) in a pixel group; "
                "photon counts must be >= 0 (mask or correct those pixels)"
            )
        if high < self.n_bins:  # cannot happen: the kernels stop only on such counts
            raise RuntimeError(f"frame {index}: histogram kernel stopped in range")
        new_k = 1 << high.bit_length()
        if new_k > self.max_bins:
            raise FrameDataError(
                f"frame {index} holds a count of {high}, needing {new_k} bins > "
                f"max_bins={self.max_bins}; mask hot, saturated or gap pixels, or "
                "raise max_bins"
            )
        logger.debug(
            "n_bins %d -> %d at frame %d (count %d)", self.n_bins, new_k, index, high
        )
        for state in self._levels():
            state.resize(new_k)
        self._runner.prepare(self._state.k)

    # ----------------------------------------------------------------- merge
    def merge(self, other: HistogramAccumulator) -> HistogramAccumulator:
        """Combine with an accumulator of later frames over the same groups.

        Returns
        -------
        HistogramAccumulator
            A new accumulator equal to one fed all frames of ``self`` then
            all frames of ``other`` (``n_bins`` is the larger of the two;
            :attr:`parents` are merged too).

        Raises
        ------
        ValueError
            If the groups or the parents differ, or only one keeps frame
            histograms.
        """
        if not self.same_groups(other):
            raise GeometryError("merge(): the accumulators histogram different groups")
        if self.keep_frame_histograms != other.keep_frame_histograms:
            raise GeometryError(
                "merge(): both accumulators must have the same keep_frame_histograms"
            )
        mine, theirs = self.parents, other.parents
        if (mine is None) != (theirs is None) or (
            mine is not None and theirs is not None and not mine.same_groups(theirs)
        ):
            raise GeometryError("merge(): the accumulators have different parents")
        out = self.spawn()
        out.max_bins = max(self.max_bins, other.max_bins)
        if out.parents is not None:
            out.parents.max_bins = out.max_bins
        new_k = max(self.n_bins, other.n_bins)
        n = self.n_frames + other.n_frames
        levels = zip(out._levels(), self._levels(), other._levels(), strict=True)
        for state, a, b in levels:
            state.resize(new_k)
            state.reserve(n)
            state.absorb(a, 0)
            state.absorb(b, a.n)
            state.n = n
        out._runner.prepare(out._state.k)
        return out

    def to_arrays(self) -> dict[str, NDArray[np.int64]]:
        """Return the summed arrays, plain int64 numpy: a partial accumulator.

        What :meth:`absorb` needs to append these frames to an accumulator
        over the same groups elsewhere (another process or host): no object
        of this package, only arrays.

        Returns
        -------
        dict of str to numpy.ndarray
            ``counts``, ``counts_sq`` ``[G, K]``, ``sums`` ``[n_frames, G]``,
            ``frames`` ``[n_frames, G, K]`` with ``keep_frame_histograms``,
            and the same of the :attr:`parents` prefixed ``parents_``.
        """
        out = self._state.arrays()
        if self.parents is not None:
            out.update(
                {f"parents_{k}": v for k, v in self.parents._state.arrays().items()}
            )
        return out

    def absorb(self, arrays: dict[str, NDArray[np.int64]]) -> None:
        """Append later frames given as :meth:`to_arrays` of the same groups.

        Exact and in place: afterwards the accumulator equals one fed its own
        frames and then those of the partial, bit for bit (integer sums; the
        per-frame arrays are appended; ``n_bins`` is the larger of the two).
        Absorbing the partials of consecutive blocks of a series in their
        order gives the accumulator of the whole series.

        Parameters
        ----------
        arrays : dict of str to numpy.ndarray
            :meth:`to_arrays` of an accumulator over the same groups, with
            the same ``keep_frame_histograms`` and parents.

        Raises
        ------
        GeometryError
            If the arrays do not fit these groups (or parents); the
            accumulator is then unchanged.
        RuntimeError
            If this accumulator is the :attr:`parents` of another one.
        """
        if self._fed:
            raise RuntimeError(
                "this accumulator holds the parents of another one: absorb "
                "into that accumulator"
            )
        mine = {k: v for k, v in arrays.items() if not k.startswith("parents_")}
        theirs = {
            k.removeprefix("parents_"): v
            for k, v in arrays.items()
            if k.startswith("parents_")
        }
        if (self.parents is None) != (not theirs):
            raise GeometryError(
                "absorb(): the partial and the accumulator differ in parents"
            )
        try:
            parts = [
                HistogramState.from_arrays(
                    mine, self.n_groups, self.keep_frame_histograms
                )
            ]
            if self.parents is not None:
                parts.append(
                    HistogramState.from_arrays(
                        theirs, self.parents.n_groups, self.keep_frame_histograms
                    )
                )
        except ValueError as err:
            raise GeometryError(f"absorb(): {err}") from None
        if parts[0].n != (parts[-1].n):
            raise GeometryError("absorb(): groups and parents differ in frames")
        new_k = max(self.n_bins, parts[0].k)
        if new_k > self.max_bins:
            raise GeometryError(
                f"absorb(): the partial has {new_k} bins > max_bins={self.max_bins}"
            )
        at, n = self._state.n, self._state.n + parts[0].n
        for state, part in zip(self._levels(), parts, strict=True):
            state.resize(new_k)
            state.reserve(n)
            state.absorb(part, at)
            state.n = n
        self._runner.prepare(self._state.k)

    def same_groups(self, other: HistogramAccumulator) -> bool:
        """Whether ``other`` histograms exactly the same pixel groups."""
        return self.shape == other.shape and self._layout.same_as(other._layout)
