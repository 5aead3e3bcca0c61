"""Arrays of one level of a histogram accumulator and their bookkeeping.

A :class:`HistogramState` holds what an accumulator has summed for its
groups (or for the parents of its groups): the per-group sum of the
per-frame histograms and of their squares, the per-frame total count of each
group, optionally every per-frame histogram, the frame count and the number
of bins.  It grows the bins and the per-frame buffers, saves and restores
itself around an update that may fail, and adds another state into itself
(merges).  Used by :class:`xsvs_bluesky.core.histogram.HistogramAccumulator`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["HistogramState", "Snapshot"]

Snapshot = tuple[int, NDArray[np.int64], NDArray[np.int64]]
"""``(n_bins, counts, counts_sq)`` saved before an update."""


class HistogramState:
    """Summed histograms of ``n_groups`` groups, ``n_bins`` bins (all int64).

    Attributes
    ----------
    k : int
        Number of bins ``K`` (counts ``0 .. K - 1``).
    n : int
        Frames accumulated.
    counts, counts_sq : numpy.ndarray
        ``[G, K]`` sums over frames of the per-frame histograms and of their
        squares.
    sums : numpy.ndarray
        ``[capacity, G]`` per-frame total count of each group; rows ``< n``
        are valid.
    frames : numpy.ndarray
        ``[capacity, G, K]`` per-frame histograms when ``keep_frames``, else
        an empty buffer.
    """

    def __init__(self, n_groups: int, n_bins: int, keep_frames: bool) -> None:
        self.n_groups = int(n_groups)
        self.k = int(n_bins)
        self.keep_frames = bool(keep_frames)
        self.n = 0
        self.counts = np.zeros((self.n_groups, self.k), dtype=np.int64)
        self.counts_sq = np.zeros((self.n_groups, self.k), dtype=np.int64)
        self.sums = np.zeros((0, self.n_groups), dtype=np.int64)  # capacity grows
        self.frames = np.zeros((0, self.n_groups, self.k), dtype=np.int64)

    def reserve(self, n: int) -> None:
        """Make room for ``n`` frames in the per-frame buffers."""
        if n <= self.sums.shape[0]:
            return
        cap = max(n, 2 * self.sums.shape[0], 64)
        sums = np.zeros((cap, self.n_groups), dtype=np.int64)
        sums[: self.n] = self.sums[: self.n]
        self.sums = sums
        if self.keep_frames:
            fr = np.zeros((cap, self.n_groups, self.k), dtype=np.int64)
            fr[: self.n] = self.frames[: self.n]
            self.frames = fr

    def resize(self, new_k: int) -> None:
        """Grow the number of bins to ``new_k`` (new bins are zero)."""
        pad = new_k - self.k
        if pad > 0:
            self.counts = np.pad(self.counts, ((0, 0), (0, pad)))
            self.counts_sq = np.pad(self.counts_sq, ((0, 0), (0, pad)))
            self.frames = np.pad(self.frames, ((0, 0), (0, 0), (0, pad)))
            self.k = new_k

    def snapshot(self) -> Snapshot:
        """Return what :meth:`restore` needs to undo a failed update."""
        return self.k, self.counts.copy(), self.counts_sq.copy()

    def restore(self, saved: Snapshot) -> None:
        """Undo a failed update (frames count only once it succeeds)."""
        k, counts, counts_sq = saved
        self.k = k
        self.counts, self.counts_sq = counts, counts_sq
        self.frames = np.ascontiguousarray(self.frames[:, :, :k])

    def absorb(self, other: HistogramState, at: int) -> None:
        """Add ``other`` (``other.k <= k``), its frames stored from frame ``at``.

        The per-frame buffers must have room for ``at + other.n`` frames;
        :attr:`n` is left to the caller.
        """
        k = other.k
        self.counts[:, :k] += other.counts
        self.counts_sq[:, :k] += other.counts_sq
        self.sums[at : at + other.n] = other.sums[: other.n]
        if self.keep_frames:
            self.frames[at : at + other.n, :, :k] = other.frames[: other.n]

    def arrays(self) -> dict[str, NDArray[np.int64]]:
        """Return copies of the summed arrays of the valid frames (plain numpy).

        ``counts``, ``counts_sq`` ``[G, K]``, ``sums`` ``[n, G]`` and, when
        per-frame histograms are kept, ``frames`` ``[n, G, K]``.
        """
        out = {
            "counts": self.counts.copy(),
            "counts_sq": self.counts_sq.copy(),
            "sums": self.sums[: self.n].copy(),
        }
        if self.keep_frames:
            out["frames"] = self.frames[: self.n].copy()
        return out

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, NDArray[np.int64]], n_groups: int, keep_frames: bool
    ) -> HistogramState:
        """Rebuild a state from :meth:`arrays` (checked against the groups).

        Raises
        ------
        ValueError
            If a shape or dtype does not fit ``n_groups`` groups.
        """
        counts = np.asarray(arrays["counts"])
        counts_sq = np.asarray(arrays["counts_sq"])
        sums = np.asarray(arrays["sums"])
        frames = arrays.get("frames")
        n = sums.shape[0] if sums.ndim == 2 else -1
        k = counts.shape[1] if counts.ndim == 2 else 0
        bad = (
            counts.shape != (n_groups, k)
            or counts_sq.shape != counts.shape
            or sums.shape != (n, n_groups)
            or k < 1
            or keep_frames != (frames is not None)
            or (frames is not None and np.shape(frames) != (n, n_groups, k))
            or any(
                np.asarray(a).dtype != np.int64
                for a in (counts, counts_sq, sums, frames)
                if a is not None
            )
        )
        if bad:
            shapes = {name: np.shape(a) for name, a in arrays.items()}
            raise ValueError(
                f"histogram arrays {shapes} do not fit {n_groups} groups "
                f"(keep_frames={keep_frames}); give int64 counts, counts_sq "
                "[G, K], sums [n, G] and frames [n, G, K] when kept"
            )
        state = cls(n_groups, k, keep_frames)
        state.counts, state.counts_sq = counts.copy(), counts_sq.copy()
        state.sums = sums.copy()
        if frames is not None:
            state.frames = np.array(frames, dtype=np.int64)
        state.n = n
        return state
