"""Seeded synthetic speckle data with known statistics.

Photon counts of a partially coherent speckle pattern integrated over an
exposure follow the negative-binomial (Poisson-gamma) law: the integrated
intensity of each pixel is gamma distributed with shape ``M`` (the number of
coherent modes, ``M = 1/beta``) and mean ``kbar * w_i`` and the detector
counts Poisson photons from it.  These generators produce frames with exactly
that law, so tests and benchmarks can compare estimates with known truth.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["speckle_frames", "static_speckle_frames"]


def speckle_frames(
    n_frames: int,
    shape: tuple[int, int],
    kbar: ArrayLike,
    beta: ArrayLike,
    *,
    efficiency: ArrayLike | None = None,
    rng: np.random.Generator | int | None = None,
    dtype: type | np.dtype = np.uint16,
) -> NDArray[np.integer]:
    """Independent Poisson-gamma frames.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    shape : tuple of int
        Frame shape ``(rows, columns)`` in pixels.
    kbar : float or array_like
        Mean photon count per pixel and frame, a scalar or a map of ``shape``
        (e.g. an intensity that depends on q).  With a 1-d array of length
        ``n_frames`` it is a per-frame mean (intensity drift).
    beta : float or array_like
        Speckle contrast ``1/M`` (scalar or map of ``shape``); 0 gives Poisson.
    efficiency : array_like, optional
        Pixel efficiency map ``w`` (mean 1) multiplying the mean counts.
    rng : numpy.random.Generator or int, optional
        Random generator or seed.
    dtype : numpy dtype
        Integer dtype of the frames.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(n_frames, rows, columns)``.
    """
    rng = np.random.default_rng(rng)
    kbar_arr = np.asarray(kbar, dtype=float)
    if kbar_arr.ndim == 1 and kbar_arr.shape[0] == n_frames:
        kbar_arr = kbar_arr[:, None, None]
    mean = np.broadcast_to(kbar_arr, (n_frames, *shape)).astype(float)
    if efficiency is not None:
        mean = mean * np.asarray(efficiency, dtype=float)
    beta_arr = np.broadcast_to(np.asarray(beta, dtype=float), (n_frames, *shape))
    intensity = mean.copy()
    speckled = beta_arr > 0
    if np.any(speckled):
        m_modes = 1.0 / beta_arr[speckled]
        intensity[speckled] = rng.gamma(m_modes, mean[speckled] / m_modes)
    return rng.poisson(intensity).astype(dtype)


def static_speckle_frames(
    n_frames: int,
    shape: tuple[int, int],
    kbar: float,
    beta: float,
    *,
    rng: np.random.Generator | int | None = None,
    dtype: type | np.dtype = np.uint16,
) -> NDArray[np.integer]:
    """Frames of one frozen speckle pattern (a static sample).

    The gamma-distributed intensity is drawn once and every frame counts
    Poisson photons from it, so summing frames keeps the contrast ``beta``.
    """
    rng = np.random.default_rng(rng)
    m_modes = 1.0 / beta
    intensity = rng.gamma(m_modes, kbar / m_modes, size=shape)
    return rng.poisson(intensity, size=(n_frames, *shape)).astype(dtype)
