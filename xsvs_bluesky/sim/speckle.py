"""Physics of the simulated MAXIPIX frames: Brownian speckle with known truth.

The sample is a suspension of Brownian particles seen in small-angle
scattering.  Every pixel counts photons from a partially coherent speckle
pattern integrated over the exposure ``t_e``, so its counts follow the
negative-binomial (Poisson-gamma) law with

- mean ``kbar_i = rate * t_e * s(q_i) * w_i`` photons, where ``rate`` is the
  mean count rate per pixel (counts/px/s), ``s(q) ~ (1 + (q xi)^2)^(-p/2)``
  the normalised scattered intensity (mean 1 over the unmasked pixels) and
  ``w_i`` the pixel efficiency (flat field, mean 1);
- contrast ``beta(q, t_e) = beta0 * k(Gamma t_e)`` with ``Gamma = D q^2`` and
  ``k(x) = (exp(-2x) - 1 + 2x) / (2 x^2)`` (exponential ``g1``).

The physics is resolved to about a pixel: ``q`` is constant on rings of
width ``ring_width`` (every pixel takes the centre of its ring; the default
1e-4 1/Angstrom is the q step of one pixel of the MAXIPIX geometry), and
each pixel has its own efficiency.  So the pixels of an analysis partition
made of several rings have different mean counts and contrasts, as on a
real detector, and the truth of the partition is the ring truth of the
intensity-aware estimator, ``sum(mu_i^2 beta_i) / sum(mu_i^2)``
(:meth:`SpeckleModel.ring_beta`, over whole rings from
:meth:`SpeckleModel.partitions`); a partition of one ring has
``beta_true(q, t_e)`` exactly.  Frames are independent (the sample
decorrelates between frames).

Two samplers draw the same law: ``"alias"`` (default,
:class:`~xsvs_bluesky.sim._alias.FrameSampler`: a numba kernel that draws
every pixel from a Walker alias table of its (ring, efficiency level) group,
~0.5-2 thousand 256x256 frames/s per core, reproducible frame by frame)
and ``"gamma-poisson"`` (the reference,
:func:`xsvs_bluesky.core.synthetic.speckle_frames`, ~60x slower).

References
----------
Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005);
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core.dynamics import exponential_kernel
from xsvs_bluesky.core.geometry import Geometry, Partitions
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.sim._alias import FrameSampler

__all__ = ["MAXIPIX_GEOMETRY", "FrameSampler", "SpeckleModel"]

#: ESRF ID10 MAXIPIX geometry of the shared example series (1.53 Angstrom,
#: 2140 mm, 55 um pixels, 256x256, legacy 1-based centre).
MAXIPIX_GEOMETRY = Geometry(1.53, 2140.0, 0.055, 125.01, 118.31, (256, 256))


@dataclass(frozen=True)
class SpeckleModel:
    """Brownian speckle seen by a photon-counting detector, with known truth.

    Parameters
    ----------
    geometry : Geometry
        Detector geometry (Angstrom, mm, px); default :data:`MAXIPIX_GEOMETRY`.
    count_rate : float
        Mean count rate per unmasked pixel, counts/px/s (efficiency 1).
    correlation_length : float
        ``xi`` of the intensity ``s(q) ~ (1 + (q xi)^2)^(-p/2)``, Angstrom.
    intensity_exponent : float
        ``p``, the large-q power law of the intensity.
    diffusion : float
        Diffusion coefficient ``D``, Angstrom^2/s (``Gamma = D q^2``).
    beta0 : float
        Contrast at zero exposure time (``1/M``), in ``[0, 1]``.
    efficiency_sigma : float
        Standard deviation of the pixel efficiencies (mean 1); 0 for none.
    efficiency_levels : int
        The efficiencies take this many distinct values (quantiles).
    ring_width : float
        Width of the rings of constant q, 1/Angstrom (rings ``[k w, (k+1) w)``).
    beamstop_radius : float
        Pixels closer than this to the beam receive no photons (masked), px.
    seed : int
        Seed of the efficiencies and of the frames.
    """

    geometry: Geometry = MAXIPIX_GEOMETRY
    count_rate: float = 700.0
    correlation_length: float = 300.0
    intensity_exponent: float = 2.0
    diffusion: float = 4.0e7
    beta0: float = 0.2
    efficiency_sigma: float = 0.1
    efficiency_levels: int = 32
    ring_width: float = 1.0e-4
    beamstop_radius: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "count_rate": self.count_rate >= 0,
            "correlation_length": self.correlation_length >= 0,
            "diffusion": self.diffusion >= 0,
            "beta0": 0 <= self.beta0 <= 1,
            "efficiency_sigma": 0 <= self.efficiency_sigma < 0.5,
            "efficiency_levels": self.efficiency_levels >= 1,
            "ring_width": self.ring_width > 0,
            "beamstop_radius": self.beamstop_radius >= 0,
        }
        for name, ok in checks.items():
            if not ok or not math.isfinite(float(getattr(self, name))):
                raise OptionError(
                    f"SpeckleModel.{name} = {getattr(self, name)!r} is invalid; "
                    "see the SpeckleModel docstring for the valid range"
                )

    # ----------------------------------------------------------- the truth
    def gamma(self, q: ArrayLike) -> NDArray[np.float64]:
        """Relaxation rate ``Gamma = D q^2`` (1/s) at ``q`` (1/Angstrom)."""
        return self.diffusion * np.asarray(q, dtype=float) ** 2

    def beta_true(self, q: ArrayLike, exposure_time: ArrayLike) -> NDArray[np.float64]:
        """Contrast ``beta0 k(D q^2 t_e)`` (broadcast over q and t_e in s)."""
        x = self.gamma(q) * np.asarray(exposure_time, dtype=float)
        return self.beta0 * exponential_kernel(x)

    def intensity(self, q: ArrayLike) -> NDArray[np.float64]:
        """Normalised intensity ``s(q)``: mean 1 over the unmasked pixels."""
        return self._shape(np.asarray(q, dtype=float)) / self._norm

    def kbar_true(self, q: ArrayLike, exposure_time: ArrayLike) -> NDArray[np.float64]:
        """Mean counts per pixel of efficiency 1: ``rate * t_e * s(q)``."""
        t = np.asarray(exposure_time, dtype=float)
        return self.count_rate * t * self.intensity(q)

    def mean_counts(self, exposure_time: float) -> float:
        """Return the expected mean count over the unmasked pixels of a frame."""
        return float(np.mean(self.kbar_map(exposure_time)[~self.mask]))

    def ring_beta(self, pixels: ArrayLike, exposure_time: float) -> float:
        """Truth of a partition: ``sum(mu_i^2 beta_i) / sum(mu_i^2)`` over ``pixels``.

        ``mu_i`` is the pixel's mean count (efficiency included) and
        ``beta_i`` its contrast at ``t_e`` (s): the contrast of the ring when
        each pixel's own mean is modelled (what ``mle-intensity`` fits).
        Pixels with no photons (masked) weigh nothing.

        Parameters
        ----------
        pixels : array_like of int
            Flat pixel indices (e.g. ``Partitions.pixels[j]``).
        exposure_time : float
            Exposure time, s.

        Returns
        -------
        float
            NaN when no pixel receives photons.
        """
        idx = np.asarray(pixels, dtype=np.intp)
        mu = self.kbar_map(exposure_time).ravel()[idx]
        beta = self.beta_map(exposure_time).ravel()[idx]
        weight = float(np.sum(mu * mu))
        return float(np.sum(mu * mu * beta)) / weight if weight > 0 else math.nan

    def beta_pooled(self, pixels: ArrayLike, exposure_time: float) -> float:
        """Apparent contrast of counts pooled over ``pixels`` (flat indices).

        ``(mean(beta_i kbar_i^2) + var(kbar_i)) / mean(kbar_i)^2``: what the
        moments estimator converges to without a flat-field correction.
        """
        idx = np.asarray(pixels, dtype=np.intp)
        kb = self.kbar_map(exposure_time).ravel()[idx]
        beta = self.beta_map(exposure_time).ravel()[idx]
        return float((np.mean(beta * kb**2) + np.var(kb)) / np.mean(kb) ** 2)

    # ------------------------------------------------------------ the maps
    @cached_property
    def q_map(self) -> NDArray[np.float64]:
        """The q of every pixel centre, 1/Angstrom (``Geometry.q_map``)."""
        return self.geometry.q_map()

    @cached_property
    def ring_index(self) -> NDArray[np.int64]:
        """Ring of every pixel: ``floor(q / ring_width)``."""
        return np.floor(self.q_map / self.ring_width).astype(np.int64)

    @cached_property
    def q_physics(self) -> NDArray[np.float64]:
        """The q used by the physics: the centre of each pixel's ring."""
        return np.asarray((self.ring_index + 0.5) * self.ring_width, dtype=np.float64)

    @cached_property
    def mask(self) -> NDArray[np.bool_]:
        """Beamstop mask, True = no photons (excluded)."""
        dy, dx = self.geometry.pixel_offsets()
        return np.asarray(np.hypot(dy, dx) < self.beamstop_radius)

    @cached_property
    def efficiency(self) -> NDArray[np.float64]:
        """Pixel efficiencies (the flat field): mean 1 over unmasked pixels."""
        shape = self.geometry.shape
        if self.efficiency_sigma == 0:
            return np.ones(shape)
        rng = np.random.default_rng([self.seed, 1])
        raw = np.clip(
            1.0 + self.efficiency_sigma * rng.standard_normal(shape), 0.05, None
        )
        levels = min(self.efficiency_levels, raw.size)
        edges = np.quantile(raw, np.linspace(0.0, 1.0, levels + 1)[1:-1])
        level = np.searchsorted(edges, raw)
        values = np.bincount(level.ravel(), raw.ravel(), levels) / np.maximum(
            np.bincount(level.ravel(), minlength=levels), 1
        )
        eff = values[level]
        return eff / eff[~self.mask].mean()

    def kbar_map(self, exposure_time: float) -> NDArray[np.float64]:
        """Return the expected counts of every pixel (efficiency in, 0 if masked)."""
        out = self.kbar_true(self.q_physics, exposure_time) * self.efficiency
        out[self.mask] = 0.0
        return out

    def beta_map(self, exposure_time: float) -> NDArray[np.float64]:
        """Contrast of every pixel (0 where masked)."""
        out = np.asarray(self.beta_true(self.q_physics, exposure_time), dtype=float)
        out = np.broadcast_to(out, self.geometry.shape).copy()
        out[self.mask] = 0.0
        return out

    def partitions(
        self, q_min: float, q_max: float, rings_per_partition: int = 1
    ) -> Partitions:
        """Return q partitions made of whole rings, so the truth holds exactly.

        Parameters
        ----------
        q_min, q_max : float
            Range covered, 1/Angstrom; the first partition starts at the ring
            holding ``q_min``, the last ends at or below ``q_max``.
        rings_per_partition : int
            Rings per partition.  With 1 every partition has one ``q``
            and :meth:`beta_true` is exact; with more, the truth is
            :meth:`ring_beta` (a pooled fit converges to
            :meth:`beta_pooled`).

        Returns
        -------
        Partitions
            Centres and half-width in 1/Angstrom, beamstop masked.
        """
        w, r = self.ring_width, int(rings_per_partition)
        first = int(math.floor(q_min / w + 1e-9))
        n = int(math.floor((q_max / w - first) / r + 1e-9))
        if r < 1 or n < 1:
            raise OptionError(
                f"no whole ring between q_min={q_min:g} and q_max={q_max:g} 1/A "
                f"with {rings_per_partition} rings of {w:g} 1/A per partition"
            )
        group = (self.ring_index.ravel() - first) // r
        group[self.mask.ravel() | (self.ring_index.ravel() < first)] = -1
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(n + 1))
        pixels = tuple(order[bounds[j] : bounds[j + 1]] for j in range(n))
        centers = np.asarray((first + r * (np.arange(n) + 0.5)) * w, dtype=np.float64)
        return Partitions(centers, r * w / 2, pixels, self.geometry.shape)

    # ------------------------------------------------------------ frames
    def sampler(self, exposure_time: float) -> FrameSampler:
        """Alias tables of every (ring, efficiency level) group at ``t_e`` (s)."""
        if not exposure_time > 0:
            raise OptionError(f"exposure_time = {exposure_time!r}; give a time > 0 s")
        ring = self.ring_index.ravel()
        eff = self.efficiency.ravel()
        _, level = np.unique(eff, return_inverse=True)
        n_levels = int(level.max()) + 1
        group = (ring - ring.min()) * n_levels + level + 1
        group[self.mask.ravel()] = 0  # group 0: no photons
        _, first_px, pix_group = np.unique(
            group, return_index=True, return_inverse=True
        )
        return FrameSampler.from_groups(
            exposure_time,
            self.geometry.shape,
            self.seed,
            pix_group,
            kbar=self.kbar_map(exposure_time).ravel()[first_px],
            beta=self.beta_map(exposure_time).ravel()[first_px],
        )

    def frames(
        self,
        n_frames: int,
        exposure_time: float,
        *,
        first_frame: int = 0,
        method: str = "alias",
        threads: int = 1,
    ) -> NDArray[np.uint16]:
        """Frames ``first_frame ..`` of a series at one exposure time.

        Parameters
        ----------
        n_frames : int
            Number of frames.
        exposure_time : float
            Exposure time, s.
        first_frame : int
            Index of the first frame (sets the random stream).
        method : {"alias", "gamma-poisson"}
            Fast alias tables or the gamma-Poisson reference
            (:func:`~xsvs_bluesky.core.synthetic.speckle_frames`); the two
            draw the same law but not the same numbers.
        threads : int
            Worker threads of the alias sampler.

        Returns
        -------
        numpy.ndarray
            uint16 counts, shape ``(n_frames, rows, cols)``.
        """
        if method == "alias":
            return self.sampler(exposure_time).sample(
                n_frames, first_frame, threads=threads
            )
        if method == "gamma-poisson":
            kbar = self.kbar_true(self.q_physics, exposure_time)
            kbar[self.mask] = 0.0
            frames = speckle_frames(
                n_frames,
                self.geometry.shape,
                kbar,
                self.beta_map(exposure_time),
                efficiency=self.efficiency,
                rng=np.random.default_rng([self.seed, 2, first_frame]),
            )
            return np.asarray(frames, dtype=np.uint16)
        raise OptionError(f"method = {method!r}; give 'alias' or 'gamma-poisson'")

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as plain JSON types (``Geometry.to_dict``)."""
        out = dataclasses.asdict(self)
        out["geometry"] = self.geometry.to_dict()
        return out

    # ---------------------------------------------------------- internals
    def _shape(self, q: NDArray[np.float64]) -> NDArray[np.float64]:
        return (1.0 + (q * self.correlation_length) ** 2) ** (
            -self.intensity_exponent / 2
        )

    @cached_property
    def _norm(self) -> float:
        return float(np.mean(self._shape(self.q_physics)[~self.mask]))
