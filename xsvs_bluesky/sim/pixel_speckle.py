"""Brownian speckle with pixel-level truth: every pixel at its own q.

:class:`~xsvs_bluesky.sim.speckle.SpeckleModel` holds q constant on thin
rings, so the intensity is flat inside a partition made of whole rings.  Here
nothing is flat: pixel ``i`` at momentum transfer ``q_i`` has

- the mean count ``mu_i = t_e * A / (q_i^2 + q0^2) * w_i`` (photons), with a
  seeded flat field ``w_i`` (mean 1, variance ``efficiency_var``) or none;
- the contrast ``beta_i = beta0 * k(D q_i^2 t_e)`` of Brownian motion,
  ``k(x) = (exp(-2x) - 1 + 2x) / (2 x^2)``, written out here again so the
  truth shares no code with the analysis;
- counts that are Poisson around a gamma intensity of shape ``1/beta_i``
  (negative binomial), independent from frame to frame.

The truth of a set of pixels (a ring) is :meth:`PixelSpeckle.ring_beta`,
``sum(mu_i^2 beta_i) / sum(mu_i^2)``; :meth:`PixelSpeckle.pooled_beta` is
what a fit of their pooled counts converges to,
``mean(mu_i^2 (1 + beta_i)) / mean(mu_i)^2 - 1``.

References
----------
Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005);
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core.geometry import Geometry

__all__ = ["PixelSpeckle", "brownian_visibility"]

#: ESRF ID10 MAXIPIX geometry (1.53 Angstrom, 2140 mm, 55 um, 256x256).
_MAXIPIX = Geometry(1.53, 2140.0, 0.055, 125.01, 118.31, (256, 256))


def brownian_visibility(x: ArrayLike) -> NDArray[np.float64]:
    """``(exp(-2x) - 1 + 2x) / (2 x^2)``, 1 at ``x = 0`` (series below 1e-3)."""
    xa = np.asarray(x, dtype=np.float64)
    small = np.abs(xa) < 1e-3
    xs = np.where(small, 1.0, xa)
    exact = (np.expm1(-2.0 * xs) + 2.0 * xs) / (2.0 * xs * xs)
    series = 1.0 - 2.0 * xa / 3.0 + xa * xa / 3.0
    return np.asarray(np.where(small, series, exact), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class PixelSpeckle:
    """Brownian speckle frames with each pixel's mean and contrast at its own q.

    Parameters
    ----------
    geometry : Geometry
        Detector geometry (default: the ESRF MAXIPIX of the example series).
    amplitude : float
        ``A`` of the intensity ``A / (q^2 + q0^2)``, photons/px/s x
        (1/Angstrom)^2.
    q0 : float
        ``q0`` of the intensity (1/Angstrom).
    diffusion : float
        Diffusion coefficient ``D`` (Angstrom^2/s), ``Gamma = D q^2``.
    beta0 : float
        Contrast at zero exposure, in ``(0, 1]``.
    efficiency_var : float
        Variance ``sigma_w^2`` of the flat field (mean 1); 0 for none.
    mask : array_like of bool, optional
        True where a pixel receives nothing (no photons are drawn there).
    seed : int
        Seed of the flat field and of the frames.
    """

    geometry: Geometry = _MAXIPIX
    amplitude: float = 0.01
    q0: float = 0.002
    diffusion: float = 4.0e7
    beta0: float = 0.2
    efficiency_var: float = 0.0
    mask: NDArray[np.bool_] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        ok = {
            "amplitude": self.amplitude > 0,
            "q0": self.q0 >= 0,
            "diffusion": self.diffusion >= 0,
            "beta0": 0 < self.beta0 <= 1,
            "efficiency_var": 0 <= self.efficiency_var < 0.25,
        }
        for name, good in ok.items():
            if not good or not math.isfinite(float(getattr(self, name))):
                raise ValueError(
                    f"PixelSpeckle.{name} = {getattr(self, name)!r} is out of range; "
                    "see the PixelSpeckle docstring"
                )
        if self.mask is not None:
            m = np.asarray(self.mask, dtype=bool)
            if m.shape != self.geometry.shape:
                raise ValueError(
                    f"mask has shape {m.shape}; give the detector shape "
                    f"{self.geometry.shape}"
                )
            object.__setattr__(self, "mask", m)

    # ------------------------------------------------------------ the maps
    @cached_property
    def q_map(self) -> NDArray[np.float64]:
        """The q of every pixel centre (1/Angstrom)."""
        return self.geometry.q_map()

    @cached_property
    def active(self) -> NDArray[np.intp]:
        """Flat indices of the pixels that receive photons."""
        if self.mask is None:
            return np.arange(self.q_map.size, dtype=np.intp)
        return np.flatnonzero(~np.asarray(self.mask).ravel())

    @cached_property
    def flat_field(self) -> NDArray[np.float64]:
        """Pixel efficiencies ``w`` (mean 1 over the active pixels)."""
        shape = self.geometry.shape
        if self.efficiency_var == 0:
            return np.ones(shape)
        rng = np.random.default_rng([self.seed, 7])
        w = np.clip(
            1.0 + math.sqrt(self.efficiency_var) * rng.standard_normal(shape), 0.2, None
        )
        return np.asarray(w / w.ravel()[self.active].mean(), dtype=np.float64)

    def mean_map(self, exposure_time: float) -> NDArray[np.float64]:
        """Mean count ``mu_i`` of every pixel at ``t_e`` (s); 0 where masked."""
        q2 = self.q_map**2
        mu = exposure_time * self.amplitude / (q2 + self.q0**2) * self.flat_field
        out = np.zeros(mu.size)
        out[self.active] = mu.ravel()[self.active]
        return out.reshape(mu.shape)

    def beta_map(self, exposure_time: float) -> NDArray[np.float64]:
        """Contrast ``beta_i`` of every pixel at ``t_e`` (s)."""
        x = self.diffusion * self.q_map**2 * exposure_time
        return self.beta0 * brownian_visibility(x)

    # ----------------------------------------------------------- the truth
    def ring_beta(self, pixels: ArrayLike, exposure_time: float) -> float:
        """Truth of a ring: ``sum(mu_i^2 beta_i) / sum(mu_i^2)`` over ``pixels``."""
        idx = np.asarray(pixels, dtype=np.intp)
        mu = self.mean_map(exposure_time).ravel()[idx]
        beta = self.beta_map(exposure_time).ravel()[idx]
        return float(np.sum(mu * mu * beta) / np.sum(mu * mu))

    def pooled_beta(self, pixels: ArrayLike, exposure_time: float) -> float:
        """Limit of a pooled fit: ``mean(mu^2 (1 + beta)) / mean(mu)^2 - 1``."""
        idx = np.asarray(pixels, dtype=np.intp)
        mu = self.mean_map(exposure_time).ravel()[idx]
        beta = self.beta_map(exposure_time).ravel()[idx]
        return float(np.mean(mu * mu * (1.0 + beta)) / np.mean(mu) ** 2 - 1.0)

    def ring_kbar(self, pixels: ArrayLike, exposure_time: float) -> float:
        """Mean count per pixel of a ring at ``t_e`` (s)."""
        idx = np.asarray(pixels, dtype=np.intp)
        return float(np.mean(self.mean_map(exposure_time).ravel()[idx]))

    def ring_gamma(self, pixels: ArrayLike) -> float:
        """``D * sum(mu_i^2 q_i^2) / sum(mu_i^2)`` (1/s): the rate a ring sees.

        At short exposures the ring's contrast falls as that of one rate
        ``D <q^2>``, the average weighted as the contrast is.
        """
        idx = np.asarray(pixels, dtype=np.intp)
        mu = self.mean_map(1.0).ravel()[idx]
        q2 = self.q_map.ravel()[idx] ** 2
        return float(self.diffusion * np.sum(mu * mu * q2) / np.sum(mu * mu))

    # ------------------------------------------------------------ frames
    def frames(
        self, exposure_time: float, n_frames: int, *, block: int = 0
    ) -> NDArray[np.uint16]:
        """Frames ``(n_frames, rows, cols)`` of counts at ``t_e`` (s).

        ``block`` selects an independent random stream (frames of a long
        series can be drawn block by block); the stream also depends on the
        seed and on the exposure time.
        """
        if not exposure_time > 0:
            raise ValueError(f"exposure_time = {exposure_time!r}; give a time > 0 s")
        key = int(round(exposure_time * 1e12))
        rng = np.random.default_rng([self.seed, 3, key, int(block)])
        idx = self.active
        mu = self.mean_map(exposure_time).ravel()[idx]
        m_modes = 1.0 / self.beta_map(exposure_time).ravel()[idx]
        intensity = rng.gamma(m_modes, mu / m_modes, size=(int(n_frames), idx.size))
        counts = rng.poisson(intensity)
        out = np.zeros((int(n_frames), self.q_map.size), dtype=np.uint16)
        out[:, idx] = counts
        return out.reshape(int(n_frames), *self.geometry.shape)
