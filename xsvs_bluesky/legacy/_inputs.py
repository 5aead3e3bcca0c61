"""Masks, flat field and beam centre of a legacy series (private).

Helpers of :mod:`xsvs_bluesky.offline`: read the ``default mask`` and
``mask`` of a pyxsvs INI file (their union applies, each is checked for the
opposite polarity), the flat field, and refine the beam centre from the
averaged frames.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.core.images import CenterFit, ImageAverager, refine_center
from xsvs_bluesky.errors import FitError, InputFileError
from xsvs_bluesky.legacy.config import LegacyConfig
from xsvs_bluesky.legacy.edf import read_flat_field, read_frame, read_mask
from xsvs_bluesky.legacy.frames import FrameSeries
from xsvs_bluesky.legacy.pipeline import SeriesReader

__all__ = [
    "POOR_CENTER_PX",
    "LegacyInputs",
    "PoorCenterWarning",
    "file_sha256",
    "read_inputs",
    "refine_beam_center",
]

logger = logging.getLogger(__name__)


POOR_CENTER_PX = 0.5
"""A refined centre with a larger one-sigma error (px) is warned about."""


class PoorCenterWarning(UserWarning):
    """The refined beam centre has a large uncertainty."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class LegacyInputs:
    """Detector-side inputs of a legacy series.

    Attributes
    ----------
    shape : tuple of int
        Frame shape (rows, columns) in px.
    dtype : numpy.dtype
        Frame dtype.
    geometry : Geometry
        Geometry from the INI file (1-based centre).
    masks : tuple of (str, ndarray, str)
        ``(file name, excluded pixels, file sha256)`` of each mask given.
    mask : numpy.ndarray
        Union of the masks, True = excluded.
    flat_field : numpy.ndarray or None
        Pixel efficiencies (float64, mean ~1); masked pixels that were not
        finite and positive are set to 1 (never used).
    flat_field_name, flat_field_sha256 : str
        File name and checksum of the flat field ("" when none).
    """

    shape: tuple[int, int]
    dtype: np.dtype
    geometry: Geometry
    masks: tuple[tuple[str, NDArray[np.bool_], str], ...]
    mask: NDArray[np.bool_]
    flat_field: NDArray[np.float64] | None
    flat_field_name: str = ""
    flat_field_sha256: str = ""

    def flat_field_labelled(self) -> tuple[str, NDArray[np.float64], str] | None:
        """``(name, flat field, sha256)`` for ``AnalysisSetup.build``, or None."""
        if self.flat_field is None:
            return None
        return self.flat_field_name, self.flat_field, self.flat_field_sha256


@contextmanager
def _named(config: LegacyConfig, key: str, path: Path) -> Iterator[None]:
    """Prefix errors about the file of INI key ``key`` with the INI file and key."""
    where = (
        f"{config.path}: [Main] {key}"
        if config.layout == "pyxsvs"
        else (f"{config.path}: {key}")
    )
    if not path.is_file():
        raise InputFileError(
            f"{where} = {str(path)!r}: file not found; give an existing EDF file "
            "(paths are relative to the INI file's folder)"
        )
    try:
        yield
    except InputFileError as exc:
        raise InputFileError(f"{where}: {exc}") from None


def _check_first_frame(
    config: LegacyConfig,
    shape: tuple[int, int],
    first_frame: Path | None,
    use_flat: bool,
) -> None:
    """Blame the first frame when it is the odd one out.

    That is when the masks and the flat field agree on a shape other than
    the first frame's, and so does the next frame file of the series.
    """
    if first_frame is None:
        return
    named = [("default mask", config.default_mask), ("mask", config.mask)]
    if use_flat:
        named.append(("flat field", config.flat_field))
    shapes: dict[str, tuple[int, ...]] = {}
    for key, path in named:
        if path is None or not path.is_file():
            continue
        try:
            shapes[key] = tuple(read_frame(path).shape)
        except InputFileError:
            return  # the file's own error comes next, from read_mask/read_flat
    found = set(shapes.values())
    if len(found) != 1 or shape in found:
        return
    (reference,) = found
    files = config.all_files()
    later = files[files.index(first_frame) + 1 :] if first_frame in files else ()
    try:
        next_shape = tuple(read_frame(later[0]).shape) if later else None
    except InputFileError:
        next_shape = None
    if next_shape != reference:
        return  # the frames agree with each other: the mask's error follows
    raise InputFileError(
        f"{config.path}: the first frame file {first_frame} has shape {shape} but "
        f"the {' and the '.join(shapes)} and the next frame file {later[0].name} "
        f"have shape {reference}; the first frame is damaged or from another "
        "series: remove it or check 'first data file'"
    )


def read_inputs(
    config: LegacyConfig,
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    use_flat: bool = True,
    first_frame: Path | None = None,
) -> LegacyInputs:
    """Read and check the masks and the flat field of ``config``.

    Parameters
    ----------
    config : LegacyConfig
        The parsed INI file.
    shape : tuple of int
        Frame shape (rows, columns).
    dtype : numpy.dtype
        Frame dtype.
    use_flat : bool, optional
        Read the flat field (False: ignore it).
    first_frame : Path, optional
        The frame file ``shape`` was read from: when the masks and the flat
        field agree on another shape, the error names this file (the frame
        is the odd one out), not a mask.

    Returns
    -------
    LegacyInputs

    Raises
    ------
    InputFileError
        A mask or flat field missing, unreadable, of the wrong shape, or a
        flat field not finite and positive at a used pixel.

    Warns
    -----
    MaskPolarityWarning
        A mask excludes more than half of the detector (from ``read_mask``).
    """
    rows, cols = (int(n) for n in shape)
    _check_first_frame(config, (rows, cols), first_frame, use_flat)
    masks: list[tuple[str, NDArray[np.bool_], str]] = []
    for key, path, one_is_bad in (
        ("default mask", config.default_mask, True),
        ("mask", config.mask, config.mask_one_is_bad),
    ):
        if path is None:
            continue
        with _named(config, key, path):
            # read_mask warns (MaskPolarityWarning) when > 50 % is excluded
            excluded = read_mask(path, (rows, cols), one_is_bad=one_is_bad)
        masks.append((path.name, excluded, file_sha256(path)))
    union = np.zeros((rows, cols), dtype=bool)
    for _, excluded, _ in masks:
        union |= excluded
    flat = None
    name = sha = ""
    if use_flat and config.flat_field is not None:
        with _named(config, "flat field", config.flat_field):
            flat = read_flat_field(config.flat_field, (rows, cols), mask=union)
        unusable = ~(np.isfinite(flat) & (flat > 0))
        flat[unusable] = 1.0  # masked pixels only (read_flat_field checked)
        name, sha = config.flat_field.name, file_sha256(config.flat_field)
    return LegacyInputs(
        shape=(rows, cols),
        dtype=np.dtype(dtype),
        geometry=config.geometry((rows, cols)),
        masks=tuple(masks),
        mask=union,
        flat_field=flat,
        flat_field_name=name,
        flat_field_sha256=sha,
    )


def refine_beam_center(
    config: LegacyConfig,
    inputs: LegacyInputs,
    reader: SeriesReader,
    *,
    max_files: int = 360,
    jackknife_sectors: int = 8,
) -> CenterFit:
    """Refine the beam centre from the averaged, flat-corrected frames.

    The frames come from the exposures with the longest exposure time
    first (most photons per file), at most ``max_files`` files in all; the
    averaged image is divided by the flat field (when one is used) and
    fitted with :func:`xsvs_bluesky.core.images.refine_center` with the
    union mask, jackknife errors over ``jackknife_sectors`` azimuthal
    sectors (they include anisotropy and flat-field structure).

    Raises
    ------
    FitError
        No readable frame, or the fit fails (the message names the INI file
        and says how to go on).

    Warns
    -----
    PoorCenterWarning
        When an uncertainty exceeds :data:`POOR_CENTER_PX`.
    """
    order = sorted(
        range(len(reader.exposures)),
        key=lambda i: (-reader.exposures[i].frame_time, -i),
    )
    files: list[Path] = []
    for i in order:
        files.extend(reader.files[i][: max(max_files - len(files), 0)])
    files = list(dict.fromkeys(files))
    average = ImageAverager(inputs.shape)
    series = FrameSeries(
        files,
        skip_bad=reader.skip_bad,
        threads=reader.threads,
        expected_shape=inputs.shape,
        expected_dtype=inputs.dtype,
    )
    for stack in series.chunks(reader.chunk_size):
        average.update(stack)
    hint = "run without --refine-center or correct cenx/ceny in a copy of the INI"
    if average.n_frames == 0:
        raise FitError(
            f"{config.path}: no readable frame to refine the beam centre; {hint}"
        )
    image = average.mean()
    if inputs.flat_field is not None:
        image = image / inputs.flat_field
    try:
        fit = refine_center(
            image,
            inputs.geometry,
            inputs.mask,
            jackknife_sectors=jackknife_sectors,
        )
    except FitError as exc:
        raise FitError(
            f"{config.path}: cannot refine the beam centre (cenx = "
            f"{config.cenx}, ceny = {config.ceny}) from {average.n_frames} "
            f"frames: {exc}; {hint}"
        ) from None
    worst = max(fit.center_x_err, fit.center_y_err)
    if not worst < POOR_CENTER_PX:
        warnings.warn(
            f"{config.path}: the refined beam centre is poorly determined "
            f"(+- {worst:.2g} px from {average.n_frames} frames; is the pattern "
            "isotropic and are the masks right?); check it before trusting the "
            "results, or run without --refine-center",
            PoorCenterWarning,
            stacklevel=2,
        )
    logger.info(
        "beam centre refined from %d frames: cenx %.3f -> %.3f +- %.3f, "
        "ceny %.3f -> %.3f +- %.3f px",
        average.n_frames,
        config.cenx,
        fit.center_x,
        fit.center_x_err,
        config.ceny,
        fit.center_y,
        fit.center_y_err,
    )
    return fit
