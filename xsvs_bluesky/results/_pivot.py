"""Rows of a layout-2 derived run pivoted to per-exposure arrays (private).

Layout 2 stores every stream as rows of scalars (see
:mod:`xsvs_bluesky.derived`); :class:`~xsvs_bluesky.results.RunResults`
serves labelled arrays over ``(exposure, partition, ...)``.  The functions
here turn the columns of a stream (each key an array over rows) into the
arrays the layout-1 ``results`` and ``dynamics`` streams held, one entry per
exposure (or fit) on the first axis, so the table builders serve both
layouts.  Rows written again for the same index (an exposure completed a
second time) supersede the earlier ones: the last row wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.derived import (
    DYNAMICS,
    HISTOGRAMS,
    IMAGES,
    RESULTS,
    TRACE,
    StreamLayout,
)

__all__ = [
    "layout_version",
    "pivot_dynamics",
    "pivot_results",
]

Columns = Mapping[str, NDArray[Any]]


def layout_version(start: Mapping[str, Any]) -> int:
    """``xsvs.schema_version`` of a derived run's start document (1 if absent)."""
    xsvs = start.get("xsvs") or {}
    try:
        return int(xsvs.get("schema_version", 1))
    except (TypeError, ValueError):
        return 1


def _last_rows(cols: Columns, index: Sequence[str]) -> NDArray[np.intp]:
    """Row numbers of the last row of each distinct ``index``, sorted by index."""
    keys = [np.asarray(cols[k], dtype=np.int64) for k in index]
    n = keys[0].size if keys else 0
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    # reversed so that np.unique's first occurrence is the last row written
    rev = [k[::-1] for k in keys]
    stacked = np.stack(rev, axis=1)
    _, first = np.unique(stacked, axis=0, return_index=True)
    return np.asarray(n - 1 - first, dtype=np.intp)  # unique sorts by index


def _fill(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iub":
        return 0
    return ""


def _grid(
    cols: Columns,
    stream: StreamLayout,
    exposures: NDArray[np.int64],
    keys: Sequence[str],
    fills: Mapping[str, Any] | None = None,
) -> dict[str, NDArray[Any]]:
    """Arrays ``(exposure, *other index)`` of ``keys`` from the rows of ``stream``.

    The first index field is the exposure (or fit); the others are
    non-negative integers; cells without a row get NaN (floats) or 0.
    """
    fills = fills or {}
    present = [k for k in keys if k in cols]
    if not present or any(k not in cols for k in stream.index):
        return {}
    rows = _last_rows(cols, stream.index)
    idx = [np.asarray(cols[k], dtype=np.int64)[rows] for k in stream.index]
    pos = np.searchsorted(exposures, idx[0])
    keep = (pos < exposures.size) & (
        exposures[np.minimum(pos, exposures.size - 1)] == idx[0]
    )
    pos, rows = pos[keep], rows[keep]
    others = [i[keep] for i in idx[1:]]
    shape = (exposures.size, *[(int(o.max()) + 1 if o.size else 0) for o in others])
    out: dict[str, NDArray[Any]] = {}
    for key in present:
        values = np.asarray(cols[key])
        dtype = values.dtype if values.dtype.kind in "fiub" else np.dtype(object)
        cell_shape = values.shape[1:]
        arr = np.full(shape + cell_shape, fills.get(key, _fill(dtype)), dtype=dtype)
        arr[(pos, *others)] = values[rows]
        out[key] = arr
    return out


def pivot_results(
    results: Columns,
    histograms: Columns | None = None,
    trace: Columns | None = None,
    images: Columns | None = None,
) -> dict[str, NDArray[Any]]:
    """Per-exposure arrays of a layout-2 run, keyed as layout 1's ``results``.

    Parameters
    ----------
    results, histograms, trace, images : mapping
        Columns of the streams of those names (each key an array over rows).

    Returns
    -------
    dict
        ``exposure_index``, ``exposure_time``, ``n_frames``, ``n_bins``,
        ``raw_stream``, ``estimator`` of shape ``(E,)``; the per-partition
        columns ``(E, Q)``; ``counts``, ``probability``, ``probability_std``
        ``(E, Q, K)``; ``trace`` ``(E, F, Q)``; ``mean_image`` ``(E, R, C)``
        when present.  Empty when there are no rows.
    """
    if "exposure_index" not in results or not len(results["exposure_index"]):
        return {}
    exposures = np.unique(np.asarray(results["exposure_index"], dtype=np.int64))
    per_q = [f.name for f in RESULTS.fields if f.name not in RESULTS.index]
    per_q += [k for k in results if k.startswith("beta_") and k not in per_q]
    grid = _grid(results, RESULTS, exposures, per_q)
    out: dict[str, NDArray[Any]] = {"exposure_index": exposures}
    for key in ("exposure_time", "n_frames", "n_bins", "raw_stream", "estimator"):
        if key in grid:
            out[key] = grid.pop(key)[:, 0]
    out.update(grid)
    if histograms:
        hist = _grid(
            histograms,
            HISTOGRAMS,
            exposures,
            ("counts", "probability", "probability_std"),
            fills={"probability": 0.0, "probability_std": 0.0},
        )
        out.update(hist)
    if trace:
        per_frame = _grid(trace, TRACE, exposures, ("trace",))
        if per_frame:
            out["trace"] = per_frame["trace"]  # (E, F, Q): index order
    if images and "mean_image" in images:
        img = _grid(images, IMAGES, exposures, ("mean_image",))
        if img:
            out["mean_image"] = img["mean_image"]  # (E, R, C)
    return out


def pivot_dynamics(dynamics: Columns) -> dict[str, NDArray[Any]]:
    """Return the last fit of a layout-2 ``dynamics`` stream, keyed as in layout 1.

    Returns
    -------
    dict
        Per-partition keys of shape ``(1, Q)`` and the ``Gamma(q)`` fit
        (``D``, ``D_err``, ...) of shape ``(1,)``, as one layout-1 event;
        empty when the stream has no rows.
    """
    if "fit_index" not in dynamics or not len(dynamics["fit_index"]):
        return {}
    fits = np.asarray(dynamics["fit_index"], dtype=np.int64)
    last = np.unique(fits)[-1:]
    per_q = [f.name for f in DYNAMICS.fields if f.name not in DYNAMICS.index]
    grid = _grid(dynamics, DYNAMICS, last, per_q)
    out: dict[str, NDArray[Any]] = {}
    for key, value in grid.items():
        if key in ("model", "n_exposures") or key.startswith(("D", "q_exponent")):
            out[key] = value[:, 0]
        else:
            out[key] = value
    return out
