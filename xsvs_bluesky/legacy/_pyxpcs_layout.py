"""The older pyxpcs INI layout that pyxsvs also accepted (private).

Sections and keys, as pyxsvs's own reader (``_parseOldInput``) used them::

    [Directories]  save dir, data dir, flat field, mask, default mask
    [Analysis]     q1, q2, qs, dq
    [Filenames]    sample name, data prefix, data suffix,
                   first data file, last data file
    [Beam]         wavelength, cenx, ceny
    [Detector]     pix, sddist

Differences from the [Main] layout: the user ``mask`` has the opposite
polarity (1 = good pixel; pyxsvs inverted it before use) and there is no
exposure time, so we require ``exp time`` (s) in [Filenames]. The series is
read as one exposure named ``Exp_1``.
"""

from __future__ import annotations

import configparser
from pathlib import Path

from xsvs_bluesky.legacy._ini_sections import (
    WHAT,
    read_exposure,
    read_geometry,
    section,
)
from xsvs_bluesky.legacy.config import LegacyConfig

__all__ = ["read_pyxpcs"]


def read_pyxpcs(
    ini: Path, parser: configparser.RawConfigParser, sections: dict[str, str]
) -> LegacyConfig:
    """Read the older layout (all five sections are known to be present)."""
    base = ini.parent
    dirs = section(ini, parser, sections["directories"])
    analysis = section(ini, parser, sections["analysis"])
    names = section(ini, parser, sections["filenames"])
    beam = section(ini, parser, sections["beam"])
    detector = section(ini, parser, sections["detector"])

    data_dir = dirs.path("data dir", WHAT["data dir"], base)
    save_dir = dirs.optional_path("save dir", base) or base
    mask = dirs.path("mask", "the mask EDF file (pyxpcs layout: 1 = good pixel)", base)
    flat_field = dirs.optional_path("flat field", base)
    default_mask = dirs.optional_path("default mask", base)

    g = read_geometry(analysis, beam, detector)

    if not names.has("exp time"):
        raise names.error(
            "exp time",
            None,
            "the older pyxpcs layout has no exposure time; add "
            "'exp time = <seconds>' (a number > 0) to [Filenames]",
        )
    exposure = read_exposure(names, data_dir, name="Exp_1", index=1)
    sample_name = names.text("sample name", "the sample name", default="")
    for sec in (dirs, analysis, names, beam, detector):
        sec.log_unused()
    return LegacyConfig(
        path=ini,
        layout="pyxpcs",
        save_dir=save_dir,
        data_dir=data_dir,
        flat_field=flat_field,
        default_mask=default_mask,
        mask=mask,
        sample_name=sample_name,
        figure_title=None,
        mode="XSVS",
        exposures=(exposure,),
        mask_one_is_bad=False,
        **g,  # q range, beam and detector keys (read_geometry)
    )
