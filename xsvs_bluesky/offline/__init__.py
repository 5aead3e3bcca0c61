"""Offline analysis of a legacy pyxsvs series (INI + EDF frames), no server.

The pipeline of ``xsvs-bluesky analyze``::

    read_ini -> masks (union of "default mask" and "mask", polarity checked)
             -> flat field -> geometry [-> refined beam centre]
             -> AnalysisSetup (q partitions, estimator, flat-field mode)
             -> frames decoded ahead in a thread pool, histogrammed in stacks
                by the same ExposureAnalysis objects the live callback uses
             -> one ExposureResult per exposure

Nothing is written: the INI file and the data are only read.

Examples
--------
>>> from xsvs_bluesky.offline import analyze_legacy  # doctest: +SKIP
>>> out = analyze_legacy("analysis/xsvs/xsvs_input.txt")  # doctest: +SKIP
>>> [r.beta.round(3) for r in out.results]  # doctest: +SKIP
"""

from __future__ import annotations

from xsvs_bluesky.offline._analysis import (
    FLAT_FIELD_MODES,
    LegacyAnalysis,
    OfflineResult,
    analyze_legacy,
    default_estimator,
    fit_result_dynamics,
)
from xsvs_bluesky.offline._tables import (
    beta_columns,
    beta_table,
    dynamics_table,
)

__all__ = [
    "FLAT_FIELD_MODES",
    "LegacyAnalysis",
    "OfflineResult",
    "analyze_legacy",
    "beta_columns",
    "beta_table",
    "default_estimator",
    "dynamics_table",
    "fit_result_dynamics",
]
