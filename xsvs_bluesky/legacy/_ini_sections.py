"""Sections, geometry and exposures of a legacy INI file, shared by both layouts.

Private to :mod:`xsvs_bluesky.legacy`: :mod:`.ini` (pyxsvs) and
:mod:`._pyxpcs_layout` (the older pyxpcs layout) read their sections with it.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import TypedDict

from xsvs_bluesky.legacy._ini_values import SectionValues
from xsvs_bluesky.legacy.config import (
    ExposureSpec,
    frame_file_names,
)

__all__ = ["WHAT", "IniGeometry", "read_exposure", "read_geometry", "section"]

# What each value means (used in error messages: "expected <what>").
WHAT = {
    "save dir": "the output folder (path, relative to the INI folder)",
    "data dir": "the folder of the frame files (path, relative to the INI folder)",
    "mask": "the mask EDF file (1 = bad pixel; path relative to the INI folder)",
    "q1": "the first partition centre, a number >= 0 in 1/Angstrom",
    "q2": "the last partition centre, a number >= q1 in 1/Angstrom",
    "qs": "the step between partition centres, a number > 0 in 1/Angstrom",
    "dq": "the partition half-width, a number > 0 in 1/Angstrom",
    "wavelength": "the X-ray wavelength, a number > 0 in Angstrom",
    "cenx": "the beam centre column, a number in pixels (1-based)",
    "ceny": "the beam centre row, a number in pixels (1-based)",
    "pix": "the pixel size, a number > 0 in mm",
    "sddist": "the sample-detector distance, a number > 0 in mm",
    "mode": "XSVS or XPCS",
    "data prefix": "the frame file name prefix (text, may be empty)",
    "data suffix": "the frame file name suffix, e.g. .edf.gz",
    "first data file": "the first file number, an integer >= 0",
    "last data file": "the last file number, an integer >= first data file",
    "exp time": "the exposure time of one frame, a number > 0 in s",
    "files in step": "the number of files per sample spot, an integer >= 1",
    "useful frames": "the number of files used per spot, an integer >= 1",
    "bin start": "the log10 of the smallest binning factor, a number >= 0",
    "bin stop": "the log10 of the largest binning factor, a number >= bin start",
    "bin step": "the number of binning factors, an integer >= 1",
}


def section(
    ini: Path, parser: configparser.RawConfigParser, name: str
) -> SectionValues:
    """Give typed access to section ``name`` (its key/value pairs, no defaults)."""
    return SectionValues(ini, name, dict(parser.items(name, raw=True)))


class IniGeometry(TypedDict):
    """The q range [1/A], beam [A, px] and detector [mm] keys of an INI."""

    q1: float
    q2: float
    qs: float
    dq: float
    wavelength: float
    cenx: float
    ceny: float
    pix: float
    sddist: float


def read_geometry(
    q_sec: SectionValues, beam_sec: SectionValues, detector_sec: SectionValues
) -> IniGeometry:
    """Read the q range [1/A], beam [A, px] and detector [mm] keys.

    The [Main] layout has them all in [Main]; the pyxpcs layout spreads
    them over [Analysis], [Beam] and [Detector].
    """
    q1 = q_sec.number("q1", WHAT["q1"], non_negative=True)
    qs = q_sec.number("qs", WHAT["qs"], positive=True)
    q2 = q_sec.number("q2", WHAT["q2"], non_negative=True)
    if q2 < q1:
        raise q_sec.error(
            "q2",
            q_sec.raw("q2", WHAT["q2"]),
            f"smaller than q1 = {q1:g}; expected q2 >= q1",
        )
    return IniGeometry(
        q1=q1,
        q2=q2,
        qs=qs,
        dq=q_sec.number("dq", WHAT["dq"], positive=True),
        wavelength=beam_sec.number("wavelength", WHAT["wavelength"], positive=True),
        cenx=beam_sec.number("cenx", WHAT["cenx"]),
        ceny=beam_sec.number("ceny", WHAT["ceny"]),
        pix=detector_sec.number("pix", WHAT["pix"], positive=True),
        sddist=detector_sec.number("sddist", WHAT["sddist"], positive=True),
    )


def read_exposure(
    sec: SectionValues,
    data_dir: Path,
    *,
    name: str,
    index: int,
    exposure_time: float | None = None,
    bin_factor: int = 1,
) -> ExposureSpec:
    """Read the file keys of one exposure section ([Exp_n] or [Exp_bins])."""
    prefix = sec.raw("data prefix", WHAT["data prefix"])
    suffix = sec.raw("data suffix", WHAT["data suffix"])
    first = sec.integer("first data file", WHAT["first data file"], minimum=0)
    last = sec.integer("last data file", WHAT["last data file"], minimum=0)
    if last < first:
        raise sec.error(
            "last data file",
            sec.raw("last data file", WHAT["last data file"]),
            f"smaller than first data file = {first}; "
            f"expected {WHAT['last data file']}",
        )
    if exposure_time is None:
        exposure_time = sec.number("exp time", WHAT["exp time"], positive=True)
    step = sec.optional_integer("files in step", WHAT["files in step"], minimum=1)
    useful = sec.optional_integer("useful frames", WHAT["useful frames"], minimum=1)
    if (step is None) != (useful is None):
        given, other = (
            ("files in step", "useful frames")
            if step is not None
            else ("useful frames", "files in step")
        )
        raise sec.error(
            other,
            None,
            f"'{given}' is given without '{other}'; give both "
            f"(partial-spot mode) or neither",
        )
    if step is not None and useful is not None and useful > step:
        raise sec.error(
            "useful frames",
            sec.raw("useful frames", WHAT["useful frames"]),
            f"larger than files in step = {step}; expected 1 <= useful frames "
            f"<= files in step",
        )
    files = frame_file_names(data_dir, prefix, suffix, first, last, step, useful)
    return ExposureSpec(
        name=name,
        index=index,
        exposure_time=exposure_time * bin_factor,
        data_prefix=prefix,
        data_suffix=suffix,
        first=first,
        last=last,
        files=files,
        files_in_step=step,
        useful_frames=useful,
        bin_factor=bin_factor,
    )
