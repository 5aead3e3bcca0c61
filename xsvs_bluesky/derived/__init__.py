"""Compose the documents of a derived (analysis) bluesky run.

One :class:`DerivedRun` per analysed raw run.  Its layout is the contract
described in ``docs/explanation/derived-run.md`` and, key by key, in
``docs/reference/derived-run-schema.md``:

- start: ``plan_name="xsvs_analysis"``, ``plan_type="analysis"``,
  ``original_run_uid``, ``scan_id``, ``sample_name`` and an ``xsvs`` dict
  saying how the result was made;
- stream ``progress``: throttled snapshots while frames arrive;
- stream ``results``: one event per exposure at the end of the run, every
  histogram padded to one ``K`` and every trace to one frame count, both
  declared in the descriptor;
- stop: ``exit_status`` ``"success"`` or ``"fail"`` with the reason.
"""

from __future__ import annotations

from xsvs_bluesky.derived._compose import (
    DYNAMICS_STREAM,
    PROGRESS_STREAM,
    RESULTS_STREAM,
    DerivedRun,
    estimator_key,
)

__all__ = [
    "DYNAMICS_STREAM",
    "PROGRESS_STREAM",
    "RESULTS_STREAM",
    "DerivedRun",
    "estimator_key",
]
