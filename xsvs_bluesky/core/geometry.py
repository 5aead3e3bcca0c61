"""Detector geometry, momentum-transfer maps, q partitions and masks.

The detector is a flat pixel array perpendicular to the direct beam at a
distance ``distance`` from the sample.  A pixel at ``r`` pixels from the beam
centre scatters at the angle ``2 theta = arctan(r * pixel_size / distance)``
and records the momentum transfer ``q = 4 pi / wavelength * sin(theta)``.

Everything here is pure numerics: no file I/O.  Read masks with the I/O layer
and pass them as arrays (legacy EDF masks: 1 = bad pixel).

Pixel-centre convention
-----------------------
Arrays are indexed ``[row, column]`` with 0-based indices ``(i, j)``.  The
legacy pyxsvs tool quotes the beam centre ``(cenx, ceny)`` in **1-based**
pixel coordinates: pixel ``(i, j)`` sits at ``(i + 1 - ceny, j + 1 - cenx)``
pixels from the beam (``ceny`` goes with rows).  That is the default
(``one_based=True``).  With ``one_based=False`` the offset is
``(i - center_y, j - center_x)``.  The same convention is used by
:func:`xsvs_bluesky.core.images.refine_center`.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.core._masks import (
    MaskPolarityWarning,
    check_mask_polarity,
    combine_masks,
)
from xsvs_bluesky.core._partitions import (
    PartitionOverlapWarning,
    Partitions,
    partition_centers,
)
from xsvs_bluesky.core._pixel_groups import PixelGroups
from xsvs_bluesky.errors import GeometryError

__all__ = [
    "Geometry",
    "MaskPolarityWarning",
    "PartitionOverlapWarning",
    "Partitions",
    "PixelGroups",
    "check_mask_polarity",
    "combine_masks",
    "partition_centers",
]

_FIELDS = (
    "wavelength",
    "distance",
    "pixel_size",
    "center_x",
    "center_y",
    "shape",
    "one_based",
)


def _real(name: str, value: object, *, positive: bool) -> float:
    """Return ``value`` as a finite float or raise :class:`GeometryError`."""
    if isinstance(value, bool) or not isinstance(value, Real | np.floating):
        raise GeometryError(
            f"Geometry.{name} = {value!r} is not a real number; "
            f"give a finite{' positive' if positive else ''} float"
        )
    out = float(value)
    if not math.isfinite(out) or (positive and out <= 0.0):
        raise GeometryError(
            f"Geometry.{name} = {value!r} is invalid; "
            f"give a finite{' positive' if positive else ''} float"
        )
    return out


def _shape(value: object) -> tuple[int, int]:
    """Return ``value`` as a ``(rows, columns)`` tuple or raise."""
    items = tuple(value) if isinstance(value, Iterable) else ()
    sizes = [
        int(n) for n in items if isinstance(n, Integral) and not isinstance(n, bool)
    ]
    if len(items) != 2 or len(sizes) != 2 or min(sizes) <= 0:
        raise GeometryError(
            f"Geometry.shape = {value!r} is invalid; give two positive integers "
            "(rows, columns)"
        )
    return (sizes[0], sizes[1])


@dataclass(frozen=True)
class Geometry:
    """Small-angle detector geometry.

    Parameters
    ----------
    wavelength : float
        X-ray wavelength in Angstrom (> 0).
    distance : float
        Sample-detector distance in mm (> 0).
    pixel_size : float
        Pixel size in mm (> 0, square pixels).
    center_x : float
        Beam centre along columns (horizontal), in px.
    center_y : float
        Beam centre along rows (vertical), in px.
    shape : tuple of int
        Detector shape ``(rows, columns)`` in px.
    one_based : bool, optional
        True (default, legacy pyxsvs): the centre is in 1-based pixel
        coordinates, pixel ``(i, j)`` (0-based indices) sits at
        ``(i + 1 - center_y, j + 1 - center_x)`` px from the beam.  False:
        at ``(i - center_y, j - center_x)``.

    Raises
    ------
    GeometryError
        If a length is not finite and positive, a centre is not finite, or
        ``shape`` is not two positive integers.

    Examples
    --------
    >>> g = Geometry(1.53, 2140.0, 0.055, 125.01, 118.31, (256, 256))
    >>> q = g.q_map()
    >>> q.shape, round(float(q.max()), 5)
    ((256, 256), 0.02006)
    """

    wavelength: float
    distance: float
    pixel_size: float
    center_x: float
    center_y: float
    shape: tuple[int, int]
    one_based: bool = True

    def __post_init__(self) -> None:
        for name in ("wavelength", "distance", "pixel_size"):
            object.__setattr__(
                self, name, _real(name, getattr(self, name), positive=True)
            )
        for name in ("center_x", "center_y"):
            object.__setattr__(
                self, name, _real(name, getattr(self, name), positive=False)
            )
        object.__setattr__(self, "shape", _shape(self.shape))
        if not isinstance(self.one_based, bool | np.bool_):
            raise GeometryError(
                f"Geometry.one_based = {self.one_based!r} is invalid; give True "
                "(legacy 1-based pixel centres) or False (0-based)"
            )
        object.__setattr__(self, "one_based", bool(self.one_based))

    def pixel_offsets(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Offsets of the pixel centres from the beam, in px.

        Returns
        -------
        dy : numpy.ndarray
            Row offsets, shape ``(rows, 1)``.
        dx : numpy.ndarray
            Column offsets, shape ``(1, columns)``.  ``dy`` and ``dx``
            broadcast to the detector shape.
        """
        shift = 1.0 if self.one_based else 0.0
        rows, cols = self.shape
        dy = np.arange(rows, dtype=np.float64)[:, None] + (shift - self.center_y)
        dx = np.arange(cols, dtype=np.float64)[None, :] + (shift - self.center_x)
        return dy, dx

    def q_map(self) -> NDArray[np.float64]:
        """Momentum transfer of every pixel centre.

        ``r = sqrt(dy**2 + dx**2) * pixel_size / distance``,
        ``2 theta = arctan(r)``, ``q = 4 pi / wavelength * sin(theta)``.

        Returns
        -------
        numpy.ndarray
            float64 array of :attr:`shape`, in 1/Angstrom.  Computed on each
            call: build it once and keep it.
        """
        dy, dx = self.pixel_offsets()
        r = np.hypot(dy, dx)
        r *= self.pixel_size / self.distance
        two_theta = np.arctan(r, out=r)
        q = np.sin(np.multiply(two_theta, 0.5, out=two_theta), out=two_theta)
        q *= 4.0 * math.pi / self.wavelength
        return q

    def with_center(self, center_x: float, center_y: float) -> Geometry:
        """Return a copy with another beam centre (same convention), in px."""
        return Geometry(
            self.wavelength,
            self.distance,
            self.pixel_size,
            center_x,
            center_y,
            self.shape,
            self.one_based,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary (units: Angstrom, mm, px)."""
        return {
            "wavelength": self.wavelength,
            "distance": self.distance,
            "pixel_size": self.pixel_size,
            "center_x": self.center_x,
            "center_y": self.center_y,
            "shape": [self.shape[0], self.shape[1]],
            "one_based": self.one_based,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Build a geometry from :meth:`to_dict` output.

        Parameters
        ----------
        data : mapping
            Keys ``wavelength, distance, pixel_size, center_x, center_y,
            shape`` and optionally ``one_based`` (default True).

        Raises
        ------
        GeometryError
            On a missing or unknown key or an invalid value.
        """
        missing = [k for k in _FIELDS[:-1] if k not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise GeometryError(
                f"geometry dictionary: missing keys {missing}, unknown keys "
                f"{unknown}; valid keys are {list(_FIELDS)}"
            )
        return cls(**{k: data[k] for k in _FIELDS if k in data})
