"""XSVS analysis for the Bluesky/Tiled ecosystem.

The numerical core (``xsvs_bluesky.core``) works on numpy arrays alone.  The
stages around it each have a subpackage (``docs/explanation/architecture.md``
draws the flow): the per-exposure analysis (``analysis``), the bluesky
callback (``callback``), the derived-run layout (``derived``), the Tiled
storage (``storage``), reading results back (``results``), legacy inputs
(``legacy``), the workflows (``offline``, ``replay``, ``reanalyze``) and the
presentation (``live``, ``plots``, ``report``, ``export``).

The names a scientist uses most are re-exported here.  Heavy ones are
imported on first use, so ``import xsvs_bluesky`` stays light; type checkers
see the real types through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xsvs_bluesky._lazy import lazy_exports
from xsvs_bluesky._version import __version__
from xsvs_bluesky.errors import (
    DocumentError,
    EstimatorError,
    FitError,
    FolderBusyError,
    FrameDataError,
    GeometryError,
    InputFileError,
    LimitError,
    NoDataError,
    NotFoundError,
    OptionError,
    OversizedFileError,
    PickleRefusedError,
    RunError,
    RunNotFoundError,
    RunNotStoredError,
    ServerUnavailableError,
    StorageError,
    WireFormatError,
    XSVSError,
)

if TYPE_CHECKING:
    from xsvs_bluesky.analysis import AnalysisSetup, ExposureAnalysis, ExposureResult
    from xsvs_bluesky.callback import RunRecord, XSVSCallback
    from xsvs_bluesky.legacy import read_ini
    from xsvs_bluesky.live import LiveSession
    from xsvs_bluesky.offline import LegacyAnalysis, OfflineResult, analyze_legacy
    from xsvs_bluesky.results import (
        RunResults,
        find_run,
        load_results,
        search_runs,
    )
    from xsvs_bluesky.storage import Catalogs, make_tiled_writer, open_catalogs

#: public name -> module that defines it (imported lazily)
_LAZY = {
    "AnalysisSetup": "xsvs_bluesky.analysis",
    "ExposureAnalysis": "xsvs_bluesky.analysis",
    "ExposureResult": "xsvs_bluesky.analysis",
    "RunRecord": "xsvs_bluesky.callback",
    "XSVSCallback": "xsvs_bluesky.callback",
    "read_ini": "xsvs_bluesky.legacy",
    "LiveSession": "xsvs_bluesky.live",
    "LegacyAnalysis": "xsvs_bluesky.offline",
    "OfflineResult": "xsvs_bluesky.offline",
    "analyze_legacy": "xsvs_bluesky.offline",
    "RunResults": "xsvs_bluesky.results",
    "find_run": "xsvs_bluesky.results",
    "load_results": "xsvs_bluesky.results",
    "search_runs": "xsvs_bluesky.results",
    "Catalogs": "xsvs_bluesky.storage",
    "make_tiled_writer": "xsvs_bluesky.storage",
    "open_catalogs": "xsvs_bluesky.storage",
}

__all__ = [
    "AnalysisSetup",
    "Catalogs",
    "DocumentError",
    "EstimatorError",
    "ExposureAnalysis",
    "ExposureResult",
    "FitError",
    "FolderBusyError",
    "FrameDataError",
    "GeometryError",
    "InputFileError",
    "LegacyAnalysis",
    "LimitError",
    "LiveSession",
    "NoDataError",
    "NotFoundError",
    "OfflineResult",
    "OptionError",
    "OversizedFileError",
    "PickleRefusedError",
    "RunError",
    "RunNotFoundError",
    "RunNotStoredError",
    "RunRecord",
    "RunResults",
    "ServerUnavailableError",
    "StorageError",
    "WireFormatError",
    "XSVSCallback",
    "XSVSError",
    "__version__",
    "analyze_legacy",
    "find_run",
    "load_results",
    "make_tiled_writer",
    "open_catalogs",
    "read_ini",
    "search_runs",
]

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
