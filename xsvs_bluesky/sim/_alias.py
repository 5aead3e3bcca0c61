"""Fast sampling of speckle frames with Walker alias tables (numba).

Pixels are grouped by their (mean count, contrast): all pixels of one group
follow the same negative-binomial law, tabulated once per exposure time
(tail mass below 1e-12 dropped) and turned into an alias table, so a count
costs one 53-bit uniform, a multiplication and two table reads.  The
uniforms come from a splitmix64 stream seeded by a hash of (seed, frame
index): frame ``i`` is the same whatever chunks or threads draw it.

References
----------
Walker, ACM Trans. Math. Softw. 3, 253 (1977); Vose, IEEE Trans. Softw. Eng.
17, 972 (1991); Steele et al., OOPSLA 2014 (splitmix64).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba as nb
import numpy as np
from numpy.typing import NDArray
from scipy import special

from xsvs_bluesky.errors import OptionError

__all__ = ["FrameSampler"]

_TAIL = 1e-12  # probability mass dropped from the tail of each count table
_MAX_COUNT = np.iinfo(np.uint16).max
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FRAME_STEP = np.uint64(0xD1B54A32D192ED03)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@nb.njit(cache=True, nogil=True)
def _mix(z: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    # splitmix64 finaliser: a bijective 64-bit hash
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _alias_frames(out, seed, first, offset, length, prob, alias):  # pragma: no cover
    # Frame f uses the splitmix64 sequence seeded by hash(seed, first + f):
    # frames are reproducible whatever the chunking or the threads.
    n, npix = out.shape
    for f in range(n):
        state = _mix(seed ^ (np.uint64(first + f) * _FRAME_STEP))
        for i in range(npix):
            state += _GOLDEN
            x = np.float64(_mix(state) >> np.uint64(11)) * _TO_UNIT * length[i]
            j = np.int64(x)
            if j >= length[i]:
                j -= 1
            idx = offset[i] + j
            out[f, i] = j if x - j < prob[idx] else alias[idx]


@nb.njit(cache=True, nogil=True)
def _build_alias(pmf, offset, length, prob, alias):  # pragma: no cover
    # Vose's stable variant of Walker's alias method, one table per group.
    for g in range(offset.size):
        o, n = offset[g], length[g]
        scaled = pmf[o : o + n] * n
        small = np.empty(n, np.int64)
        large = np.empty(n, np.int64)
        ns = nl = 0
        for j in range(n):
            if scaled[j] < 1.0:
                small[ns] = j
                ns += 1
            else:
                large[nl] = j
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            s, big = small[ns], large[nl - 1]
            prob[o + s] = scaled[s]
            alias[o + s] = big
            scaled[big] = (scaled[big] + scaled[s]) - 1.0
            if scaled[big] < 1.0:
                nl -= 1
                small[ns] = big
                ns += 1
        for t in range(nl):
            prob[o + large[t]] = 1.0
            alias[o + large[t]] = large[t]
        for t in range(ns):
            prob[o + small[t]] = 1.0
            alias[o + small[t]] = small[t]


def _count_pmf(kbar: NDArray[np.float64], beta: float) -> list[NDArray[np.float64]]:
    """Return truncated count distributions for several means, one contrast."""
    std = np.sqrt(kbar + beta * kbar**2)
    k_max = int(np.max(kbar + 16.0 * std)) + 16
    if k_max > _MAX_COUNT:
        raise OptionError(
            f"mean count {float(kbar.max()):g} per pixel overflows uint16 frames; "
            "lower count_rate or the exposure time"
        )
    k = np.arange(k_max + 1, dtype=np.float64)[None, :]
    kb = np.maximum(kbar, 1e-300)[:, None]
    if beta > 0:
        m = 1.0 / beta
        log_p = (
            special.gammaln(k + m)
            - special.gammaln(k + 1.0)
            - special.gammaln(m)
            + m * np.log(m / (kb + m))
            + k * np.log(kb / (kb + m))
        )
    else:
        log_p = k * np.log(kb) - kb - special.gammaln(k + 1.0)
    out = []
    for g, row in enumerate(np.exp(log_p)):
        if kbar[g] <= 0:
            out.append(np.ones(1))
            continue
        cdf = np.cumsum(row)
        n = min(int(np.searchsorted(cdf, 1.0 - _TAIL)) + 1, row.size)
        out.append(row[:n] / cdf[n - 1])
    return out


@dataclass(frozen=True, eq=False)
class FrameSampler:
    """Alias-table sampler of the frames of one exposure time.

    Build it with :meth:`SpeckleModel.sampler`.  Frame ``i`` of a series is
    the same whatever chunks it is drawn in.

    Parameters
    ----------
    exposure_time : float
        Exposure time, s.
    shape : tuple of int
        Frame shape ``(rows, columns)``, px.
    seed : int
        64-bit seed of the frame sequence.
    offset, length, prob, alias : numpy.ndarray
        Per-pixel table offsets and lengths, and the flat alias tables.
    """

    exposure_time: float
    shape: tuple[int, int]
    seed: int
    offset: NDArray[np.int64] = field(repr=False)
    length: NDArray[np.float64] = field(repr=False)
    prob: NDArray[np.float64] = field(repr=False)
    alias: NDArray[np.uint16] = field(repr=False)

    def sample(
        self,
        n_frames: int,
        first_frame: int = 0,
        *,
        threads: int = 1,
        out: NDArray[np.uint16] | None = None,
    ) -> NDArray[np.uint16]:
        """Draw frames ``first_frame .. first_frame + n_frames - 1``.

        Parameters
        ----------
        n_frames : int
            Number of frames.
        first_frame : int
            Index of the first frame in the series (sets the random stream).
        threads : int
            Worker threads (the kernel releases the GIL).
        out : numpy.ndarray, optional
            uint16 array of shape ``(n_frames, rows, cols)`` to fill.

        Returns
        -------
        numpy.ndarray
            uint16 counts, shape ``(n_frames, rows, cols)``.
        """
        if out is None:
            out = np.empty((n_frames, *self.shape), dtype=np.uint16)
        flat = out.reshape(n_frames, -1)
        seed = np.uint64(self.seed)
        parts = np.array_split(np.arange(n_frames), max(1, min(threads, n_frames)))

        def run(idx: NDArray[np.int64]) -> None:
            if idx.size:
                a, b = int(idx[0]), int(idx[-1]) + 1
                _alias_frames(flat[a:b], seed, first_frame + a, *self._tables())

        if len(parts) == 1:
            run(parts[0])
        else:
            with ThreadPoolExecutor(len(parts)) as pool:
                list(pool.map(run, parts))
        return out

    def _tables(self) -> tuple[NDArray[Any], ...]:
        return self.offset, self.length, self.prob, self.alias

    @classmethod
    def from_groups(
        cls,
        exposure_time: float,
        shape: tuple[int, int],
        seed: int,
        pixel_group: NDArray[np.integer],
        *,
        kbar: NDArray[np.float64],
        beta: NDArray[np.float64],
    ) -> FrameSampler:
        """Tabulate the count law of every group of pixels.

        Parameters
        ----------
        exposure_time : float
            Exposure time, s (recorded).
        shape : tuple of int
            Frame shape ``(rows, columns)``, px.
        seed : int
            Seed of the frame sequence (hashed with the exposure time).
        pixel_group : numpy.ndarray
            Group index ``0 .. G-1`` of every pixel (flat C order).
        kbar, beta : numpy.ndarray
            Mean count and contrast of each group (``kbar = 0``: no counts,
            ``beta = 0``: Poisson).

        Returns
        -------
        FrameSampler

        Raises
        ------
        ValueError
            If a mean count would overflow uint16 frames.
        """
        pmfs: list[NDArray[np.float64]] = [np.ones(1)] * kbar.size
        for b in np.unique(beta):
            sel = np.flatnonzero(beta == b)
            for g, p in zip(sel, _count_pmf(kbar[sel], float(b)), strict=True):
                pmfs[g] = p
        length = np.array([p.size for p in pmfs], dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        pmf = np.concatenate(pmfs)
        prob = np.empty_like(pmf)
        alias = np.empty(pmf.size, dtype=np.uint16)
        _build_alias(pmf, offset, length, prob, alias)
        # different exposure times draw independent streams
        t_bits = np.array([exposure_time], dtype=np.float64).view(np.uint64)[0]
        return cls(
            exposure_time=float(exposure_time),
            shape=(int(shape[0]), int(shape[1])),
            seed=int(_mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _mix(t_bits))),
            offset=offset[pixel_group],
            length=length[pixel_group].astype(np.float64),
            prob=prob,
            alias=alias,
        )
