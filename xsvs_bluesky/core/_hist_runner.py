"""Runs the histogram backends over a stack of frames.

A :class:`KernelRunner` drives the numba kernels
(:mod:`xsvs_bluesky.core._kernels`) or their numpy twin
(:func:`xsvs_bluesky.core._hist_layout.accumulate_numpy`) for one
:class:`~xsvs_bluesky.core.histogram.HistogramAccumulator`: it keeps the
per-``n_bins`` helpers (labels, empty outputs), the kernels' scratch and,
for an accumulator with parents, the group -> parent index and the
per-frame parent histogram.  The pixel layout, the parent index and the
labels are immutable and shared by every runner made with :meth:`fresh`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._hist_layout import GroupLayout, accumulate_numpy
from xsvs_bluesky.core._hist_state import HistogramState
from xsvs_bluesky.errors import FrameDataError, GeometryError, OptionError
from xsvs_bluesky.options import Backend

__all__ = ["Backend", "KernelRunner"]


N_COPIES = 4  # rows of the numba scratch (_kernels.N_COPIES)
SCRATCH_TAIL = 1 << 16  # room for unchecked 16-bit counts (_kernels.SCRATCH_TAIL)


def _numba_kernels() -> tuple[Any, Any] | None:
    """Return the numba kernels, or None when numba cannot be imported."""
    try:
        from xsvs_bluesky.core._kernels import accumulate_checked, accumulate_raw
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return accumulate_raw, accumulate_checked


class KernelRunner:
    """Accumulate frames of a :class:`GroupLayout` into histogram states.

    Parameters
    ----------
    layout : GroupLayout
        Pixel layout of the groups.
    backend : {"auto", "numba", "numpy"}
        "auto" uses numba when it can be imported.
    parent : numpy.ndarray, optional
        int64 parent index of each group; None without parents.
    n_parents : int
        Number of parents (0 without).

    Raises
    ------
    ValueError
        On an unknown backend.
    ImportError
        If ``backend="numba"`` and numba cannot be imported.
    """

    def __init__(
        self,
        layout: GroupLayout,
        backend: Backend,
        parent: NDArray[np.int64] | None = None,
        n_parents: int = 0,
    ) -> None:
        self.kernels = None
        if backend in ("auto", "numba"):
            self.kernels = _numba_kernels()
            if self.kernels is None and backend == "numba":
                raise ImportError("backend='numba' requested but numba is missing")
        elif backend != "numpy":
            raise OptionError(f"backend={backend!r}; use 'auto', 'numba' or 'numpy'")
        self.backend: str = "numpy" if self.kernels is None else "numba"
        self.layout = layout
        self.parent = np.zeros(0, np.int64) if parent is None else parent
        self.n_parents = int(n_parents) if parent is not None else 0
        self._label_cache: dict[int, NDArray[np.int32]] = {}
        self._scratch: NDArray[np.int32] | None = None
        self._k = 0

    def fresh(self) -> KernelRunner:
        """Return a runner sharing the immutable parts, with its own scratch."""
        new = copy.copy(self)
        new._scratch = None
        new._k = 0
        return new

    def prepare(self, k: int) -> None:
        """Set up the helpers for ``k`` bins (after a change of ``n_bins``).

        Raises
        ------
        ValueError
            If ``n_groups * k`` does not fit the int32 labels.
        """
        g, p = self.layout.n_groups, self.n_parents
        self._k = k
        self._no_frames = np.zeros((0, g, k), dtype=np.int64)
        self._parent_hist = np.zeros((p, k), dtype=np.int64)
        self._no_parent_frames = np.zeros((0, p, k), dtype=np.int64)
        empty = np.zeros((0, k), dtype=np.int64)
        self._no_parents = (
            self.parent,
            empty,
            empty,
            empty,
            np.zeros((0, 0), dtype=np.int64),
            self._no_parent_frames,
        )
        if self.kernels is not None:
            if g * k >= 2**31:
                raise OptionError(f"{g} groups x {k} bins is too many")
            if self._scratch is not None and self._scratch.shape[1] < self._width():
                self._scratch = None  # reallocated, larger, at the next run
            labels = self._label_cache.get(k)
            if labels is None:
                labels = self._label_cache[k] = self.layout.labels(k)
            self._labels = labels

    def _width(self) -> int:
        # +16: the scratch rows are not 4 KiB apart
        return self.layout.n_groups * self._k + SCRATCH_TAIL + 16

    def flat_frames(self, frames: ArrayLike, shape: tuple[int, int]) -> NDArray[Any]:
        """Return frames as a C-contiguous ``(n, rows * cols)`` integer array.

        Raises
        ------
        GeometryError
            If the frame shape differs from the detector ``shape``.
        FrameDataError
            On a non-integer dtype.
        """
        arr = np.asarray(frames)
        if arr.dtype == np.bool_:
            arr = arr.view(np.uint8)
        if arr.dtype.kind not in "ui":
            raise FrameDataError(
                f"frames must hold integer photon counts, got dtype {arr.dtype}"
            )
        if arr.dtype.kind == "i" and arr.dtype.itemsize < 4 and self.kernels:
            arr = arr.astype(np.int32)  # int8/int16: two numba compilations fewer
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != shape:
            raise GeometryError(
                f"frame shape {arr.shape[-2:] if arr.ndim >= 2 else arr.shape} "
                f"does not match the groups' detector shape {shape}; give "
                "(rows, cols) or (n, rows, cols) frames of that shape"
            )
        return np.ascontiguousarray(arr).reshape(arr.shape[0], -1)

    def run(
        self,
        flat: NDArray[np.integer],
        at: int,
        state: HistogramState,
        parents: HistogramState | None = None,
    ) -> int:
        """Accumulate ``flat`` as frames ``at, at + 1, ...`` of ``state``.

        Parameters
        ----------
        flat : numpy.ndarray
            C-contiguous ``(n, rows * cols)`` integer frames.
        at : int
            Index of the first frame in the per-frame buffers (reserved).
        state, parents : HistogramState
            The groups' state and, with parents, theirs (``k`` bins each, as
            last given to :meth:`prepare`).

        Returns
        -------
        int
            Frames accumulated: all, or the index in ``flat`` of the first
            frame holding a count outside ``0 .. k - 1``.
        """
        end = at + flat.shape[0]
        group_out = (
            state.counts,
            state.counts_sq,
            state.sums[at:end],
            state.frames[at:end] if state.keep_frames else self._no_frames,
        )
        parent_out = self._no_parents
        if parents is not None:
            parent_out = (
                self.parent,
                self._parent_hist,
                parents.counts,
                parents.counts_sq,
                parents.sums[at:end],
                parents.frames[at:end]
                if parents.keep_frames
                else self._no_parent_frames,
            )
        if self.kernels is None:
            return accumulate_numpy(self.layout, flat, self._k, group_out, parent_out)
        if self._scratch is None:
            self._scratch = np.zeros((N_COPIES, self._width()), dtype=np.int32)
        raw, checked = self.kernels
        head = (flat, self.layout.runs, self._labels, self._k)
        tail = (self._scratch, group_out, parent_out)
        if flat.dtype.kind == "u" and flat.dtype.itemsize <= 2:
            # 8/16-bit unsigned counts cannot leave the scratch tail
            return int(raw(*head, self.layout.n_pixels, *tail))
        return int(checked(*head, *tail))
