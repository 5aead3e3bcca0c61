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

from xsvs_bluesky.errors import InputFileError
from xsvs_bluesky.legacy._ini_sections import (
    WHAT,
    read_exposure,
    read_geometry,
    section,
)
from xsvs_bluesky.legacy._ini_values import one_line
from xsvs_bluesky.legacy.config import (
    EXPOSURE_SECTION,
    ExposureSpec,
    LegacyConfig,
    xpcs_bin_factors,
)

__all__ = ["read_ini"]

logger = logging.getLogger(__name__)

_PYXSVS_HINT = "a pyxsvs input file has a [Main] section and [Exp_1], [Exp_2], ..."
_PYXPCS_SECTIONS = ("Directories", "Analysis", "Filenames", "Beam", "Detector")


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


def _inis_in(folder: Path) -> str:
    """Say which files in ``folder`` (3 levels down at most) may be INI files."""
    found: list[str] = []
    for depth in range(3):
        for pattern in ("*.ini", "*input*.txt"):
            found += sorted(
                str(p.relative_to(folder))
                for p in folder.glob("*/" * depth + pattern)
                if p.is_file()
            )
    if not found:
        return "give the pyxsvs input file"
    more = f" ({len(found) - 3} more)" if len(found) > 3 else ""
    return f"give the pyxsvs input file, such as {', '.join(found[:3])}{more} in it"


def _parse(ini: Path) -> configparser.RawConfigParser:
    """Parse the file like Python 2's RawConfigParser did."""
    if ini.is_dir():
        raise InputFileError(f"{ini}: is a folder, not an INI file; {_inis_in(ini)}")
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


def _read_pyxsvs(
    ini: Path, parser: configparser.RawConfigParser, sections: dict[str, str]
) -> LegacyConfig:
    base = ini.parent
    main = section(ini, parser, sections["main"])
    data_dir = main.path("data dir", WHAT["data dir"], base)
    save_dir = main.optional_path("save dir", base) or base
    mask = main.path("mask", WHAT["mask"], base)
    flat_field = main.optional_path("flat field", base)
    default_mask = main.optional_path("default mask", base)
    g = read_geometry(main, main, main)
    sample_name = main.text("sample name", "the sample name", default="")
    figure_title = main.optional_text("figure title")
    mode_text = main.text("mode", WHAT["mode"], default="XSVS")
    mode = mode_text.upper()
    if mode not in ("XSVS", "XPCS"):
        raise main.error("mode", mode_text, f"unknown mode; expected {WHAT['mode']}")
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
    start = sec.number("bin start", WHAT["bin start"], non_negative=True)
    stop = sec.number("bin stop", WHAT["bin stop"], non_negative=True)
    if stop < start:
        raise sec.error(
            "bin stop",
            sec.raw("bin stop", WHAT["bin stop"]),
            f"smaller than bin start = {start:g}; expected {WHAT['bin stop']}",
        )
    count = sec.integer("bin step", WHAT["bin step"], minimum=1)
    sec.log_unused()
    factors = tuple(xpcs_bin_factors(start, stop, count))
    if factors[-1] > series.n_files:
        raise sec.error(
            "bin stop",
            sec.raw("bin stop", WHAT["bin stop"]),
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
