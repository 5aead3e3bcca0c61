"""Derived XSVS runs as Python objects: find them in Tiled, load tables and arrays.

A derived run (``plan_name = "xsvs_analysis"``, written by
:class:`xsvs_bluesky.callback.XSVSCallback`; layout in
``docs/reference/derived-run-schema.md``) becomes one :class:`RunResults`:
a tidy ``beta(t_e, q)`` table, the histograms ``P(k)`` and the other arrays as
:class:`xarray.DataArray`, the dynamics fit and the start metadata.  The same
object is built from a run stored in Tiled (:func:`load_results`) or from the
documents of a run held in memory (:meth:`RunResults.from_documents`), so
every table, figure and export works without a server too.

Examples
--------
>>> from xsvs_bluesky.storage import open_catalogs  # doctest: +SKIP
>>> cats = open_catalogs(data_dir="xsvs-data")  # doctest: +SKIP
>>> runs = search_runs(cats.processed, sample_name="silica")  # doctest: +SKIP
>>> res = load_results(runs[-1])  # doctest: +SKIP
>>> print(format_table(res.table))  # doctest: +SKIP
"""

from __future__ import annotations

from xsvs_bluesky.results._pivot import (
    layout_version,
    pivot_dynamics,
    pivot_results,
)
from xsvs_bluesky.results._runs import (
    ANALYSIS_PLAN_NAME,
    DYNAMICS_KEYS,
    RECORD_KEYS,
    RunNotFoundError,
    RunResults,
    count_exposures,
    dynamics_records,
    find_run,
    format_dynamics,
    format_table,
    load_results,
    records,
    search_runs,
    to_csv,
    to_json,
)
from xsvs_bluesky.results._tables import (
    as_text,
    build_dynamics,
    decode_flags,
    exposure_lines,
    pm_text,
    table_columns,
)

__all__ = [
    "ANALYSIS_PLAN_NAME",
    "DYNAMICS_KEYS",
    "RECORD_KEYS",
    "RunNotFoundError",
    "RunResults",
    "as_text",
    "build_dynamics",
    "count_exposures",
    "decode_flags",
    "dynamics_records",
    "exposure_lines",
    "find_run",
    "format_dynamics",
    "format_table",
    "layout_version",
    "load_results",
    "pivot_dynamics",
    "pivot_results",
    "pm_text",
    "records",
    "search_runs",
    "table_columns",
    "to_csv",
    "to_json",
]
