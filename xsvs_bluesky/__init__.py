"""XSVS analysis for the Bluesky/Tiled ecosystem.

The numerical core (``xsvs_bluesky.core``) works on numpy arrays alone. The
bluesky side (``XSVSCallback``), the legacy readers (``xsvs_bluesky.legacy``),
the Tiled storage helpers (``xsvs_bluesky.storage``) and the results API
(``xsvs_bluesky.results``) are adapters around it. Heavy names below are
imported on first use, so ``import xsvs_bluesky`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import (
    DocumentError,
    EstimatorError,
    FitError,
    FrameDataError,
    GeometryError,
    InputFileError,
    NoDataError,
    NotFoundError,
    OptionError,
    RunError,
    RunNotFoundError,
    StorageError,
    XSVSError,
)

#: public name -> module that defines it (imported lazily)
_LAZY = {
    "XSVSCallback": "xsvs_bluesky.callback",
    "RunRecord": "xsvs_bluesky.callback",
    "ExposureAnalysis": "xsvs_bluesky.analysis",
    "ExposureResult": "xsvs_bluesky.analysis",
    "AnalysisSetup": "xsvs_bluesky.analysis",
    "open_catalogs": "xsvs_bluesky.storage",
    "read_ini": "xsvs_bluesky.legacy",
}

__all__ = [
    "AnalysisSetup",
    "DocumentError",
    "EstimatorError",
    "ExposureAnalysis",
    "ExposureResult",
    "FitError",
    "FrameDataError",
    "GeometryError",
    "InputFileError",
    "NoDataError",
    "NotFoundError",
    "OptionError",
    "RunError",
    "RunNotFoundError",
    "RunRecord",
    "StorageError",
    "XSVSCallback",
    "XSVSError",
    "__version__",
    "open_catalogs",
    "read_ini",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xsvs_bluesky' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
