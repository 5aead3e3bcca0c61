"""Legacy inputs: pyxsvs INI files and EDF frames, masks and flat fields.

Examples
--------
>>> from xsvs_bluesky.legacy import read_ini, FrameSeries  # doctest: +SKIP
>>> config = read_ini("analysis/xsvs/xsvs_input.txt")  # doctest: +SKIP
>>> for exposure in config.exposures:  # doctest: +SKIP
...     for stack in FrameSeries(exposure.files, threads=2).chunks(64):
...         ...
"""

from xsvs_bluesky.legacy._inputs import (
    LegacyInputs,
    file_sha256,
    read_inputs,
    refine_beam_center,
)
from xsvs_bluesky.legacy.config import (
    ExposureSpec,
    LegacyConfig,
    frame_file_names,
    xpcs_bin_factors,
)
from xsvs_bluesky.legacy.edf import (
    GUNZIP_BACKEND,
    EDFFrame,
    read_edf,
    read_flat_field,
    read_frame,
    read_header,
    read_mask,
)
from xsvs_bluesky.legacy.frames import FrameSeries, check_files_exist
from xsvs_bluesky.legacy.ini import read_ini
from xsvs_bluesky.legacy.metadata import header_metadata, header_value

__all__ = [
    "GUNZIP_BACKEND",
    "EDFFrame",
    "ExposureSpec",
    "FrameSeries",
    "LegacyConfig",
    "LegacyInputs",
    "check_files_exist",
    "file_sha256",
    "frame_file_names",
    "header_metadata",
    "header_value",
    "read_edf",
    "read_flat_field",
    "read_frame",
    "read_header",
    "read_ini",
    "read_inputs",
    "read_mask",
    "refine_beam_center",
    "xpcs_bin_factors",
]
