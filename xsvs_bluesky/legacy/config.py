"""Typed description of a legacy pyxsvs data set (what an INI file says).

:func:`xsvs_bluesky.legacy.read_ini` builds these frozen dataclasses; this
module holds them and the adapters to the numerical core (geometry,
partitions, masks, flat field).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import NotFoundError

if TYPE_CHECKING:
    from xsvs_bluesky.core.geometry import Geometry, Partitions

__all__ = ["ExposureSpec", "LegacyConfig", "frame_file_names", "xpcs_bin_factors"]


@dataclass(frozen=True)
class ExposureSpec:
    """One exposure of a legacy data set: a list of frame files.

    Attributes
    ----------
    name : str
        Section name, e.g. ``"Exp_1"`` (XPCS mode: ``"Exp_0"``, ``"Exp_1"``, ...
        one per binning factor, as pyxsvs named them).
    index : int
        The number in the name (exposures are ordered by it).
    exposure_time : float
        Exposure time of one (binned) frame [s].
    data_prefix, data_suffix : str
        File name = prefix + number zero-padded to at least 4 digits + suffix.
    first, last : int
        First and last file number (inclusive).
    files : tuple of Path
        The frame files, in acquisition order, absolute.
    files_in_step, useful_frames : int or None
        Partial-spot mode: the sample moved every ``files_in_step`` files and
        only the first ``useful_frames`` of each spot are used. Both or neither.
    bin_factor : int
        Number of consecutive frames summed into one frame before the
        analysis (1 for XSVS; the binning factor in XPCS mode).
    """

    name: str
    index: int
    exposure_time: float
    data_prefix: str
    data_suffix: str
    first: int
    last: int
    files: tuple[Path, ...]
    files_in_step: int | None = None
    useful_frames: int | None = None
    bin_factor: int = 1

    @property
    def frame_time(self) -> float:
        """Exposure time of one file [s]: ``exposure_time / bin_factor``."""
        return self.exposure_time / self.bin_factor

    @property
    def n_files(self) -> int:
        """Number of files of this exposure."""
        return len(self.files)

    @property
    def n_frames(self) -> int:
        """Number of (binned) frames: ``n_files // bin_factor``."""
        return len(self.files) // self.bin_factor

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (no file list: it follows from the other fields)."""
        return {
            "name": self.name,
            "index": self.index,
            "exposure_time": self.exposure_time,
            "frame_time": self.frame_time,
            "data_prefix": self.data_prefix,
            "data_suffix": self.data_suffix,
            "first": self.first,
            "last": self.last,
            "n_files": self.n_files,
            "files_in_step": self.files_in_step,
            "useful_frames": self.useful_frames,
            "bin_factor": self.bin_factor,
        }


@dataclass(frozen=True)
class LegacyConfig:
    """Everything a pyxsvs INI file says about a data set.

    Attributes
    ----------
    path : Path
        The INI file (absolute); relative paths in it resolve against its folder.
    layout : str
        ``"pyxsvs"`` ([Main] + [Exp_n]) or ``"pyxpcs"`` (the older
        [Directories]/[Analysis]/[Filenames]/[Beam]/[Detector] layout).
    save_dir, data_dir : Path
        Output and frame folders (absolute).
    flat_field, default_mask, mask : Path or None
        Flat-field EDF (float, mean ~1) and mask EDFs (``mask`` 1 = bad unless
        ``mask_one_is_bad`` is False; ``default_mask`` always 1 = bad).
    q1, q2, qs, dq : float
        First and last partition centre, centre step and half-width [1/Angstrom].
    sample_name : str
        Sample name (legacy output prefix).
    wavelength : float
        X-ray wavelength [Angstrom].
    cenx, ceny : float
        Beam centre, column and row [px, 1-based pixel centres].
    pix : float
        Pixel size [mm].
    sddist : float
        Sample-detector distance [mm].
    figure_title : str or None
        Title of the legacy figures.
    mode : str
        ``"XSVS"`` (one [Exp_n] per exposure) or ``"XPCS"`` (one [Exp_bins]
        series binned into longer exposures).
    exposures : tuple of ExposureSpec
        Ordered by index (numerically: Exp_10 after Exp_9).
    bin_factors : tuple of int
        XPCS mode: the binning factors (one exposure each); ``()`` for XSVS.
    mask_one_is_bad : bool
        Polarity of ``mask``: True for pyxsvs, False for the pyxpcs layout.
    """

    path: Path
    layout: str
    save_dir: Path
    data_dir: Path
    flat_field: Path | None
    default_mask: Path | None
    mask: Path | None
    q1: float
    q2: float
    qs: float
    dq: float
    sample_name: str
    wavelength: float
    cenx: float
    ceny: float
    pix: float
    sddist: float
    figure_title: str | None
    mode: str
    exposures: tuple[ExposureSpec, ...]
    bin_factors: tuple[int, ...] = ()
    mask_one_is_bad: bool = True

    # -- adapters to the core ---------------------------------------------
    def geometry(self, shape: Sequence[int]) -> Geometry:
        """Return the detector geometry for frames of ``shape`` (rows, columns).

        Uses the legacy 1-based pixel-centre convention of ``cenx``/``ceny``.
        """
        from xsvs_bluesky.core.geometry import Geometry

        rows, cols = (int(n) for n in shape)
        return Geometry(
            wavelength=self.wavelength,
            distance=self.sddist,
            pixel_size=self.pix,
            center_x=self.cenx,
            center_y=self.ceny,
            shape=(rows, cols),
            one_based=True,
        )

    @property
    def n_partitions(self) -> int:
        """Number of q partitions, ``round((q2 - q1) / qs) + 1``."""
        return round((self.q2 - self.q1) / self.qs) + 1

    def partition_centers(self) -> NDArray[np.float64]:
        """Partition centres ``q1, q1 + qs, ..., q2`` [1/Angstrom]."""
        from xsvs_bluesky.core.geometry import partition_centers

        return partition_centers(self.q1, self.q2, self.qs)

    def partitions(
        self, q_map: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
    ) -> Partitions:
        """Build the core q partitions on ``q_map`` (True in ``mask`` = excluded)."""
        from xsvs_bluesky.core.geometry import Partitions

        return Partitions.from_range(
            q_map, self.q1, self.q2, self.qs, self.dq, mask=mask
        )

    def read_mask(self, shape: Sequence[int]) -> NDArray[np.bool_] | None:
        """Union of ``default mask`` and ``mask`` (True = excluded), or None.

        The legacy tool used only ``mask``; applying both is a no-op when
        ``mask`` already contains the detector's bad pixels.
        """
        from xsvs_bluesky.legacy.edf import read_mask

        combined: NDArray[np.bool_] | None = None
        for path, one_is_bad in (
            (self.default_mask, True),
            (self.mask, self.mask_one_is_bad),
        ):
            if path is None:
                continue
            part = read_mask(path, shape, one_is_bad=one_is_bad)
            combined = part if combined is None else combined | part
        return combined

    def read_flat_field(
        self, shape: Sequence[int], mask: NDArray[np.bool_] | None = None
    ) -> NDArray[np.float64] | None:
        """Read the flat field as float64 (checked where not masked), or None."""
        from xsvs_bluesky.legacy.edf import read_flat_field

        if self.flat_field is None:
            return None
        return read_flat_field(self.flat_field, shape, mask=mask)

    # -- convenience --------------------------------------------------------
    def acquired_exposures(self) -> tuple[ExposureSpec, ...]:
        """Return the exposures as acquired, before any binning.

        XSVS mode: :attr:`exposures`.  XPCS mode: the one series of
        ``[Exp_bins]``, named ``"Exp_bins"``, at the exposure time of one
        file (``bin_factor`` 1); :attr:`bin_factors` say how the analysis
        sums its frames into the exposures of :attr:`exposures`.
        """
        if not self.bin_factors:
            return self.exposures
        first = self.exposures[0]
        return (
            dataclasses.replace(
                first,
                name="Exp_bins",
                index=0,
                exposure_time=first.frame_time,
                bin_factor=1,
            ),
        )

    def all_files(self) -> tuple[Path, ...]:
        """Every frame file of every exposure, once, in first-use order."""
        return tuple(dict.fromkeys(f for e in self.exposures for f in e.files))

    def exposure(self, name: str) -> ExposureSpec:
        """Return the exposure called ``name`` (KeyError naming the known ones)."""
        for spec in self.exposures:
            if spec.name == name:
                return spec
        known = ", ".join(e.name for e in self.exposures)
        raise NotFoundError(f"no exposure {name!r} in {self.path}; known: {known}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for run metadata (paths as strings)."""

        def text(p: Path | None) -> str | None:
            return None if p is None else str(p)

        return {
            "ini_file": str(self.path),
            "layout": self.layout,
            "save_dir": str(self.save_dir),
            "data_dir": str(self.data_dir),
            "flat_field": text(self.flat_field),
            "default_mask": text(self.default_mask),
            "mask": text(self.mask),
            "mask_one_is_bad": self.mask_one_is_bad,
            "q1": self.q1,
            "q2": self.q2,
            "qs": self.qs,
            "dq": self.dq,
            "sample_name": self.sample_name,
            "wavelength": self.wavelength,
            "cenx": self.cenx,
            "ceny": self.ceny,
            "pix": self.pix,
            "sddist": self.sddist,
            "figure_title": self.figure_title,
            "mode": self.mode,
            "bin_factors": list(self.bin_factors),
            "exposures": [e.to_dict() for e in self.exposures],
        }


def frame_file_names(
    data_dir: Path,
    prefix: str,
    suffix: str,
    first: int,
    last: int,
    files_in_step: int | None = None,
    useful_frames: int | None = None,
) -> tuple[Path, ...]:
    """Frame file paths of one exposure, as pyxsvs built them.

    Name = ``prefix + "%04d" % number + suffix`` (at least 4 digits, more when
    the number needs them). With ``files_in_step`` and ``useful_frames`` only
    the first ``useful_frames`` files of each spot of ``files_in_step`` files
    (spots starting at ``first, first + files_in_step, ...``) are kept; files
    after ``last`` are never included.

    Parameters
    ----------
    data_dir : Path
        Folder of the frames.
    prefix, suffix : str
        File name prefix and suffix (suffix includes the extension).
    first, last : int
        First and last file number, inclusive.
    files_in_step, useful_frames : int or None
        Partial-spot selection (both or neither).

    Returns
    -------
    tuple of Path
    """
    if files_in_step is None or useful_frames is None:
        numbers: Sequence[int] = range(first, last + 1)
    else:
        numbers = [
            n
            for start in range(first, last + 1, files_in_step)
            for n in range(start, min(start + useful_frames, last + 1))
        ]
    return tuple(data_dir / f"{prefix}{n:04d}{suffix}" for n in numbers)


def xpcs_bin_factors(bin_start: float, bin_stop: float, bin_step: int) -> list[int]:
    """Binning factors of the pyxsvs XPCS mode.

    pyxsvs used ``[int(x) for x in logspace(bin start, bin stop, bin step)]``:
    ``bin start`` and ``bin stop`` are base-10 exponents and ``bin step`` is
    the number of points. We do the same, truncating to integers, except
    that a value within 1e-9 (relative) below an integer counts as that
    integer (``10**2`` computed as 99.99999999999997 gives 100, not 99), and
    duplicates are dropped (pyxsvs analysed them twice). Sorted, unique.

    Examples
    --------
    >>> xpcs_bin_factors(0, 2, 5)
    [1, 3, 10, 31, 100]
    >>> xpcs_bin_factors(0, 1, 6)
    [1, 2, 3, 6, 10]
    """
    values = np.logspace(bin_start, bin_stop, bin_step)
    factors = np.floor(values * (1.0 + 1e-9)).astype(np.int64)
    return sorted({int(f) for f in factors})


#: Exposure section names: Exp_1, Exp_2, ... (any case).
EXPOSURE_SECTION = re.compile(r"exp_(\d+)", re.IGNORECASE)
