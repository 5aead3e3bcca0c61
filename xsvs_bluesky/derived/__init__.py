"""The derived (analysis) bluesky run: its layout, defined once, and its documents.

One :class:`DerivedRun` per analysed raw run composes the documents; the
streams, keys, dtypes, dimensions, units, hints and flag legends are the
:class:`StreamLayout` objects below (layout version :data:`LAYOUT_VERSION`),
from which the documents are composed and every reader reads.  Why it looks
like this: ``docs/explanation/derived-run.md``; key by key:
``docs/reference/derived-run-schema.md``.

- start: ``plan_name="xsvs_analysis"``, ``plan_type="analysis"``,
  ``original_run_uid``, ``scan_id``, ``sample_name``, the raw run's
  :data:`PROVENANCE_KEYS` and an ``xsvs`` dict saying how the result was
  made (``schema_version``);
- streams :data:`PROGRESS`, :data:`RESULTS`, :data:`HISTOGRAMS`,
  :data:`TRACE`, :data:`IMAGES`, :data:`DYNAMICS`: rows of scalars, one
  event per row, one EventPage per occasion;
- stop: ``exit_status`` ``"success"`` or ``"fail"`` with the reason.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xsvs_bluesky.derived._layout import (
    DYNAMICS,
    DYNAMICS_FLAG_NAMES,
    HISTOGRAMS,
    IMAGES,
    LAYOUT_VERSION,
    OBJECT_NAME,
    PROGRESS,
    PROVENANCE_KEYS,
    RESULT_FLAGS,
    RESULTS,
    STREAMS,
    TRACE,
    FieldLayout,
    StreamLayout,
    encode_flags,
    estimator_key,
    schema_markdown,
)

if TYPE_CHECKING:
    from xsvs_bluesky.derived._compose import (
        DerivedRun,
        histogram_backend,
        software_versions,
    )

#: The composer imports the analysis (numba, scipy); readers of the layout
#: (``results``) need none of it, so it is imported on first use.
_COMPOSE = ("DerivedRun", "histogram_backend", "software_versions")


def __getattr__(name: str) -> Any:
    if name in _COMPOSE:
        return getattr(importlib.import_module("xsvs_bluesky.derived._compose"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Stream names (kept for readers of layout 1, whose names were the same).
PROGRESS_STREAM = PROGRESS.name
RESULTS_STREAM = RESULTS.name
DYNAMICS_STREAM = DYNAMICS.name

__all__ = [
    "DYNAMICS",
    "DYNAMICS_FLAG_NAMES",
    "DYNAMICS_STREAM",
    "HISTOGRAMS",
    "IMAGES",
    "LAYOUT_VERSION",
    "OBJECT_NAME",
    "PROGRESS",
    "PROGRESS_STREAM",
    "PROVENANCE_KEYS",
    "RESULTS",
    "RESULTS_STREAM",
    "RESULT_FLAGS",
    "STREAMS",
    "TRACE",
    "DerivedRun",
    "FieldLayout",
    "StreamLayout",
    "encode_flags",
    "estimator_key",
    "histogram_backend",
    "schema_markdown",
    "software_versions",
]
