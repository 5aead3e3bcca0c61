"""Analysis options shared by every entry point (CLI, callback, replay, reanalyze).

Light on purpose: importing it loads no numba, bluesky or Tiled, so the CLI
can parse options (and print ``--help``) with it.  The modules that act on
these names re-export them (``xsvs_bluesky.core.estimators.ESTIMATORS``,
``xsvs_bluesky.replay.COMPRESSIONS``, ``xsvs_bluesky.reanalyze.FRAME_SOURCES``,
``xsvs_bluesky.demo.DEMO_FRAMES``).
"""

from __future__ import annotations

__all__ = [
    "COMPRESSIONS",
    "DEMO_FRAMES",
    "ESTIMATORS",
    "FLAT_FIELD_CHOICES",
    "FRAME_SOURCES",
    "default_estimator",
]

ESTIMATORS: tuple[str, ...] = (
    "mle",
    "moments",
    "low-count",
    "r-1",
    "pyxsvs-lsq",
    "mle-weighted",
    "mle-frames",
)
"""Contrast estimators accepted by ``estimate_contrast`` and ``--estimator``."""

FLAT_FIELD_CHOICES: tuple[str, ...] = ("weights", "divide-round", "none")
"""``--flat-field`` choices: keep counts and weight the likelihood (default),
the legacy divide-and-round pre-processing, or ignore the flat field."""

COMPRESSIONS: tuple[str, ...] = ("blosc-lz4", "gzip", "lzf", "none")
"""HDF5 compressions of the legacy replay: Blosc LZ4 + bit shuffle
(hdf5plugin; fast, default), gzip level 1 + shuffle and LZF (readable by any
h5py), none."""

FRAME_SOURCES: tuple[str, ...] = ("auto", "file", "tiled")
"""Where a re-analysis reads frames: the HDF5 files when readable here
(``auto``), the files only, or through Tiled's HTTP API."""

DEMO_FRAMES = 500
"""Default frames per exposure of the demo."""


def default_estimator(has_flat_field: bool, flat_field: str = "weights") -> str:
    """``"mle-weighted"`` with a flat field used as weights, else ``"mle"``."""
    return "mle-weighted" if has_flat_field and flat_field == "weights" else "mle"
