"""Read the INI input files of the 2014 pyxsvs tool.

The format (keys are case-insensitive, values may contain spaces, relative
paths resolve against the INI file's folder, ``;`` after a space starts a
comment as in Python 2's ConfigParser)::

    [Main]
    data dir = ../../data/xsvs-series/
    mask = ../mask.edf
    q1 = 0.002
    ...
    [Exp_1]
    data prefix = sid1-1_40C_
    data suffix = .edf.gz
    first data file = 1
    last data file = 360
    exp time = 5e-5

Every key, its unit, default and validity: ``docs/reference/ini-format.md``.
"""

from __future__ import annotations

import configparser
import logging
from os import PathLike
from pathlib import Path
from typing import TypedDict

from xsvs_bluesky.errors import InputFileError
from xsvs_bluesky.legacy._ini_values import SectionValues, one_line
from xsvs_bluesky.legacy.config import (
    EXPOSURE_SECTION,
    ExposureSpec,
    LegacyConfig,
    frame_file_names,
    xpcs_bin_factors,
)

__all__ = ["read_ini"]

logger = logging.getLogger(__name__)

_PYXSVS_HINT = "a pyxsvs input file has a [Main] section and [Exp_1], [Exp_2], ..."
_PYXPCS_SECTIONS = ("Directories", "Analysis", "Filenames", "Beam", "Detector")

# What each value means (used in error messages: "expected <what>").
_WHAT = {
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


def read_ini(path: str | PathLike[str]) -> LegacyConfig:
    """Read a pyxsvs INI file.

    Parameters
    ----------
    path : str or path-like
        The INI file. Relative paths inside it resolve against its folder.

    Returns
    -------
    LegacyConfig
        Main settings and the exposures, ordered numerically (Exp_10 after
        Exp_9). Frame files are listed but not checked here.

    Raises
    ------
    InputFileError
        The file is missing or unreadable, a section or key is missing, or a
        value is invalid. The one-line message names the file, section, key
        and value and says what is valid.
    """
    ini = Path(path).expanduser().absolute()
    parser = _parse(ini)
    sections = {name.lower(): name for name in parser.sections()}
    if "main" in sections:
        return _read_pyxsvs(ini, parser, sections)
    if all(s.lower() in sections for s in _PYXPCS_SECTIONS):
        from xsvs_bluesky.legacy._pyxpcs_layout import read_pyxpcs

        return read_pyxpcs(ini, parser, sections)
    found = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
    if "directories" in sections:
        missing = [s for s in _PYXPCS_SECTIONS if s.lower() not in sections]
        raise InputFileError(
            f"{ini}: this looks like the older pyxpcs layout but section(s) "
            f"{', '.join(f'[{s}]' for s in missing)} are missing; that layout "
            f"needs [{'], ['.join(_PYXPCS_SECTIONS)}] (found: {found})"
        )
    raise InputFileError(
        f"{ini}: missing section [Main]; {_PYXSVS_HINT} (found: {found})"
    )


def section(
    ini: Path, parser: configparser.RawConfigParser, name: str
) -> SectionValues:
    """Give typed access to section ``name`` (its key/value pairs, no defaults)."""
    return SectionValues(ini, name, dict(parser.items(name, raw=True)))


def _parse(ini: Path) -> configparser.RawConfigParser:
    """Parse the file like Python 2's RawConfigParser did."""
    if not ini.is_file():
        raise InputFileError(f"{ini}: INI file not found")
    try:
        raw = ini.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{ini}: cannot read the INI file ({exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    parser = configparser.RawConfigParser(
        strict=False, inline_comment_prefixes=(";",), default_section="DEFAULT"
    )
    try:
        parser.read_string(text, source=str(ini))
    except configparser.MissingSectionHeaderError as exc:
        raise InputFileError(
            f"{ini}: line {exc.lineno} {exc.line.strip()!r} comes before any "
            f"section header; {_PYXSVS_HINT}"
        ) from None
    except configparser.Error as exc:
        raise InputFileError(
            f"{ini}: not a valid INI file ({one_line(exc.message)})"
        ) from None
    return parser


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
    q1 = q_sec.number("q1", _WHAT["q1"], non_negative=True)
    qs = q_sec.number("qs", _WHAT["qs"], positive=True)
    q2 = q_sec.number("q2", _WHAT["q2"], non_negative=True)
    if q2 < q1:
        raise q_sec.error(
            "q2",
            q_sec.raw("q2", _WHAT["q2"]),
            f"smaller than q1 = {q1:g}; expected q2 >= q1",
        )
    return IniGeometry(
        q1=q1,
        q2=q2,
        qs=qs,
        dq=q_sec.number("dq", _WHAT["dq"], positive=True),
        wavelength=beam_sec.number("wavelength", _WHAT["wavelength"], positive=True),
        cenx=beam_sec.number("cenx", _WHAT["cenx"]),
        ceny=beam_sec.number("ceny", _WHAT["ceny"]),
        pix=detector_sec.number("pix", _WHAT["pix"], positive=True),
        sddist=detector_sec.number("sddist", _WHAT["sddist"], positive=True),
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
    prefix = sec.raw("data prefix", _WHAT["data prefix"])
    suffix = sec.raw("data suffix", _WHAT["data suffix"])
    first = sec.integer("first data file", _WHAT["first data file"], minimum=0)
    last = sec.integer("last data file", _WHAT["last data file"], minimum=0)
    if last < first:
        raise sec.error(
            "last data file",
            sec.raw("last data file", _WHAT["last data file"]),
            f"smaller than first data file = {first}; "
            f"expected {_WHAT['last data file']}",
        )
    if exposure_time is None:
        exposure_time = sec.number("exp time", _WHAT["exp time"], positive=True)
    step = sec.optional_integer("files in step", _WHAT["files in step"], minimum=1)
    useful = sec.optional_integer("useful frames", _WHAT["useful frames"], minimum=1)
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
            sec.raw("useful frames", _WHAT["useful frames"]),
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


def _read_pyxsvs(
    ini: Path, parser: configparser.RawConfigParser, sections: dict[str, str]
) -> LegacyConfig:
    base = ini.parent
    main = section(ini, parser, sections["main"])
    data_dir = main.path("data dir", _WHAT["data dir"], base)
    save_dir = main.optional_path("save dir", base) or base
    mask = main.path("mask", _WHAT["mask"], base)
    flat_field = main.optional_path("flat field", base)
    default_mask = main.optional_path("default mask", base)
    g = read_geometry(main, main, main)
    sample_name = main.text("sample name", "the sample name", default="")
    figure_title = main.optional_text("figure title")
    mode_text = main.text("mode", _WHAT["mode"], default="XSVS")
    mode = mode_text.upper()
    if mode not in ("XSVS", "XPCS"):
        raise main.error("mode", mode_text, f"unknown mode; expected {_WHAT['mode']}")
    main.log_unused()

    bin_factors: tuple[int, ...] = ()
    if mode == "XSVS":
        exposures = _xsvs_exposures(ini, parser, data_dir)
    else:
        exposures, bin_factors = _xpcs_exposures(ini, parser, sections, data_dir)
    return LegacyConfig(
        path=ini,
        layout="pyxsvs",
        save_dir=save_dir,
        data_dir=data_dir,
        flat_field=flat_field,
        default_mask=default_mask,
        mask=mask,
        sample_name=sample_name,
        figure_title=figure_title,
        mode=mode,
        exposures=exposures,
        bin_factors=bin_factors,
        mask_one_is_bad=True,
        **g,  # q range, beam and detector keys (read_geometry)
    )


def _xsvs_exposures(
    ini: Path, parser: configparser.RawConfigParser, data_dir: Path
) -> tuple[ExposureSpec, ...]:
    numbered: dict[int, str] = {}
    for name in parser.sections():
        match = EXPOSURE_SECTION.fullmatch(name)
        if match is None:
            lower = name.lower()
            if lower.startswith("exp") and lower != "exp_bins":
                raise InputFileError(
                    f"{ini}: section [{name}] is not a valid exposure name; "
                    f"expected [Exp_<number>], e.g. [Exp_1]"
                )
            if lower not in ("main", "exp_bins"):
                logger.warning(
                    "%s: section [%s] is ignored (not [Main] or [Exp_<n>])", ini, name
                )
            continue
        index = int(match.group(1))
        if index in numbered:
            raise InputFileError(
                f"{ini}: sections [{numbered[index]}] and [{name}] have the same "
                f"exposure number {index}; expected one section per number"
            )
        numbered[index] = name
    if not numbered:
        raise InputFileError(
            f"{ini}: no exposure sections; mode XSVS needs [Exp_1], [Exp_2], ... "
            f"with data prefix, data suffix, first data file, last data file "
            f"and exp time"
        )
    exposures = []
    for index in sorted(numbered):
        sec = section(ini, parser, numbered[index])
        exposures.append(read_exposure(sec, data_dir, name=sec.section, index=index))
        sec.log_unused()
    return tuple(exposures)


def _xpcs_exposures(
    ini: Path,
    parser: configparser.RawConfigParser,
    sections: dict[str, str],
    data_dir: Path,
) -> tuple[tuple[ExposureSpec, ...], tuple[int, ...]]:
    if "exp_bins" not in sections:
        raise InputFileError(
            f"{ini}: [Main] mode = XPCS needs an [Exp_bins] section (data prefix, "
            f"data suffix, first data file, last data file, exp time, bin start, "
            f"bin stop, bin step); it is missing"
        )
    sec = section(ini, parser, sections["exp_bins"])
    series = read_exposure(sec, data_dir, name=sec.section, index=0)
    start = sec.number("bin start", _WHAT["bin start"], non_negative=True)
    stop = sec.number("bin stop", _WHAT["bin stop"], non_negative=True)
    if stop < start:
        raise sec.error(
            "bin stop",
            sec.raw("bin stop", _WHAT["bin stop"]),
            f"smaller than bin start = {start:g}; expected {_WHAT['bin stop']}",
        )
    count = sec.integer("bin step", _WHAT["bin step"], minimum=1)
    sec.log_unused()
    factors = tuple(xpcs_bin_factors(start, stop, count))
    if factors[-1] > series.n_files:
        raise sec.error(
            "bin stop",
            sec.raw("bin stop", _WHAT["bin stop"]),
            f"gives a binning factor of {factors[-1]} frames but the series has "
            f"only {series.n_files} files; expected bin stop <= "
            f"log10({series.n_files})",
        )
    for name in parser.sections():
        if EXPOSURE_SECTION.fullmatch(name):
            logger.warning("%s: section [%s] is ignored in mode XPCS", ini, name)
    exposures = tuple(
        ExposureSpec(
            name=f"Exp_{i}",
            index=i,
            exposure_time=series.exposure_time * factor,
            data_prefix=series.data_prefix,
            data_suffix=series.data_suffix,
            first=series.first,
            last=series.last,
            files=series.files,
            files_in_step=series.files_in_step,
            useful_frames=series.useful_frames,
            bin_factor=factor,
        )
        for i, factor in enumerate(factors)
    )
    return exposures, factors
