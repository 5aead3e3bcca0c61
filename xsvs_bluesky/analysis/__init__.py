"""The analysis of one exposure: frames in, contrast per q partition out.

:class:`ExposureAnalysis` is the one object both the live callback
(:class:`xsvs_bluesky.callback.XSVSCallback`) and the offline ``analyze``
command feed with frames.  It histograms every frame as it arrives (one
:meth:`HistogramAccumulator.update` per stack), keeps the time-averaged image
and fits the contrast only when asked (:meth:`ExposureAnalysis.result`), so
the cost per frame stays that of a histogram.

The code lives in private modules re-exported here: :class:`ExposureResult`
in ``_result``, :class:`ExposureAnalysis` in ``_exposure``,
:class:`AnalysisSetup` and the input identities in ``_setup``, the
setup as plain arrays for a worker process (:func:`shard_recipe`,
:func:`analysis_from_recipe`) in ``_recipe``; the options
(:class:`AnalysisOptions`, the flat-field modes, :func:`default_estimator`)
are those of :mod:`xsvs_bluesky.options`, re-exported.  None of them
imports a bluesky, tiled or I/O library.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from xsvs_bluesky.analysis._exposure import ExposureAnalysis
from xsvs_bluesky.analysis._recipe import analysis_from_recipe, shard_recipe
from xsvs_bluesky.analysis._result import FLAG_FIT_FAILED, ExposureResult, dynamics_q
from xsvs_bluesky.analysis._setup import (
    AnalysisSetup,
    EmptyPartitionWarning,
    LabelledArray,
    array_identity,
)
from xsvs_bluesky.options import (
    DEFAULT_EXTRA_ESTIMATORS,
    FLAT_FIELD_MODES,
    AnalysisOptions,
    FlatFieldMode,
    default_estimator,
)

__all__ = [
    "EmptyPartitionWarning",
    "DEFAULT_EXTRA_ESTIMATORS",
    "FLAG_FIT_FAILED",
    "FLAT_FIELD_MODES",
    "AnalysisOptions",
    "AnalysisSetup",
    "ExposureAnalysis",
    "ExposureResult",
    "FlatFieldMode",
    "LabelledArray",
    "analysis_from_recipe",
    "array_identity",
    "default_estimator",
    "dynamics_q",
    "shard_recipe",
]
