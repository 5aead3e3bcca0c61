"""The implementation of :mod:`xsvs_bluesky.results` (private; see its docstring)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.derived import DYNAMICS, HISTOGRAMS, IMAGES, RESULTS, TRACE
from xsvs_bluesky.results._pivot import layout_version, pivot_dynamics, pivot_results
from xsvs_bluesky.results._query import find_run, search_runs
from xsvs_bluesky.results._streams import (
    ANALYSIS_PLAN_NAME,
    MemorySource,
    RunNotFoundError,
    StreamSource,
    TiledSource,
)
from xsvs_bluesky.results._tables import (
    DYNAMICS_KEYS,
    RECORD_KEYS,
    build_dynamics,
    decode_flags,
    dynamics_records,
    format_dynamics,
    format_table,
    records,
    table_columns,
    to_csv,
    to_json,
)

if TYPE_CHECKING:  # xarray, pandas: imported on first use (~0.3 s each)
    import pandas as pd
    import xarray as xr

__all__ = [
    "ANALYSIS_PLAN_NAME",
    "DYNAMICS_KEYS",
    "RECORD_KEYS",
    "RunNotFoundError",
    "RunResults",
    "count_exposures",
    "dynamics_records",
    "find_run",
    "format_dynamics",
    "format_table",
    "load_results",
    "records",
    "search_runs",
    "to_csv",
    "to_json",
]

logger = logging.getLogger(__name__)

_UNITS = "counts/pixel/frame"
_LAZY_FIELDS = (
    "table",
    "histograms",
    "histograms_std",
    "counts",
    "images",
    "intensity",
    "intensity_err",
    "trace",
    "dynamics",
    "diffusion",
    "streams",
)
#: the arrays of the ``results`` stream that the table shows
_TABLE_KEYS = (
    "q",
    "exposure_index",
    "exposure_time",
    "n_frames",
    "n_pixels",
    "estimator",
    "flags",
    *("kbar", "kbar_err", "beta", "beta_err", "M", "M_err"),
)
_HIST_DIMS = ("exposure", "partition", "k")
_DIFFUSION_KEYS = (
    "D",
    "D_err",
    "q_exponent",
    "q_exponent_err",
    "D_chi2",
    "D_dof",
    "D_flags",
    "D_status",  # absent in runs written before them
    "D_error_scale",
)


@dataclass(frozen=True, eq=False)
class RunResults:
    """Everything a derived XSVS run holds, as tables and labelled arrays.

    Build it with :func:`load_results` (a run in Tiled) or
    :meth:`from_documents`.  The tables and arrays below are read on first
    access (from Tiled: one request per array, so the catalog must still be
    open) and then kept; :meth:`fetch` reads them all at once.

    Dimensions: ``exposure`` (coordinates ``exposure_time`` in s,
    ``n_frames``, ``n_bins``), ``partition`` (coordinate ``q`` in
    1/Angstrom), ``k`` (photons per pixel), ``frame``, ``y``/``x`` (image
    rows/columns, px).

    Attributes
    ----------
    uid : str
        uid of the derived run.
    raw_uid : str or None
        uid of the raw run it analysed (``original_run_uid``).
    start, stop : mapping
        Start and stop documents (``stop`` None while the run is open).
    source : StreamSource
        Where the arrays come from.
    table : pandas.DataFrame
        Tidy ``beta(t_e, q)``: one row per exposure and partition, columns
        :data:`RECORD_KEYS` (``flags`` lists of str).
    table_columns : dict
        The same table as ``{column: values}`` without pandas (what
        ``format_table``, ``records`` and ``to_json`` also take).
    histograms, histograms_std : xarray.DataArray
        Mean over frames of the per-frame ``P(k)`` and its per-frame standard
        deviation, dims ``(exposure, partition, k)``; zero beyond
        ``n_bins`` of each exposure.
    counts : xarray.DataArray
        Summed per-frame histograms (same dims, int64).
    images : xarray.DataArray or None
        Averaged frame of each exposure (counts/pixel/frame), dims
        ``(exposure, y, x)``.
    intensity, intensity_err : xarray.DataArray
        ``I(q)`` and its standard error per exposure (counts/pixel/frame),
        dims ``(exposure, partition)``.
    trace : xarray.DataArray
        Mean count per pixel of every frame, dims ``(exposure, frame,
        partition)``, NaN beyond ``n_frames``.
    dynamics : pandas.DataFrame or None
        Fit of ``beta(t_e)`` per partition (:data:`DYNAMICS_KEYS`, then
        ``exponent``, ``exponent_err``, ``chi2``, ``dof``, ``flags``); None
        when the run has no ``dynamics`` stream.
    diffusion : dict or None
        ``D``, ``D_err`` (Angstrom^2/s), ``q_exponent``, ``q_exponent_err``,
        ``D_chi2``, ``D_dof``, ``D_flags``, ``D_status`` and
        ``D_error_scale`` of the ``Gamma = D q^2`` fit (the last two only
        when the run stored them).
    streams : dict
        Every array of every stream, ``{stream: {key: array}}``, stacked over
        events on the first axis (what :mod:`xsvs_bluesky.export` writes).
    """

    uid: str
    raw_uid: str | None
    start: Mapping[str, Any]
    stop: Mapping[str, Any] | None
    source: StreamSource = field(repr=False)

    # ------------------------------------------------------------ builders
    @classmethod
    def from_source(cls, source: StreamSource) -> RunResults:
        """Wrap a :class:`StreamSource` (documents in memory or a Tiled run)."""
        raw = source.start.get("original_run_uid")
        return cls(
            uid=str(source.start.get("uid", "")),
            raw_uid=None if raw is None else str(raw),
            start=source.start,
            stop=source.stop,
            source=source,
        )

    @classmethod
    def from_documents(
        cls, docs: Iterable[tuple[str, Mapping[str, Any]]], uid: str | None = None
    ) -> RunResults:
        """Build the results of a derived run from its documents.

        Parameters
        ----------
        docs : iterable of (name, doc)
            Documents as emitted by ``XSVSCallback`` (``event`` or
            ``event_page``); other runs' documents are ignored.
        uid : str, optional
            uid (or its start) of the derived run; default the last derived
            run among ``docs``.

        Returns
        -------
        RunResults

        Raises
        ------
        RunNotFoundError
            If ``docs`` hold no derived run (or none with ``uid``).
        """
        return cls.from_source(MemorySource(docs, uid))

    def fetch(self) -> RunResults:
        """Read every table and array now (e.g. before closing the catalogs).

        Returns
        -------
        RunResults
            ``self``, fully loaded.
        """
        for name in _LAZY_FIELDS:
            getattr(self, name)
        return self

    # ------------------------------------------------------------ helpers
    @property
    def schema_version(self) -> int:
        """Layout version of the run (``xsvs.schema_version``; 1 when absent)."""
        return layout_version(self.start)

    def _columns(self, stream: str) -> dict[str, NDArray[Any]]:
        """Every column of a layout-2 stream (empty when the run lacks it)."""
        if stream not in self.source.stream_names:
            return {}
        return dict(self.source.view(stream))

    @cached_property
    def _arrays(self) -> Mapping[str, NDArray[Any]]:
        """Per-exposure arrays keyed as layout 1's ``results`` stream."""
        if self.schema_version < 2:
            return self.source.view(RESULTS.name)
        return pivot_results(
            self._columns(RESULTS.name),
            self._columns(HISTOGRAMS.name),
            self._columns(TRACE.name),
            self._columns(IMAGES.name),
        )

    @cached_property
    def _table_arrays(self) -> Mapping[str, NDArray[Any]]:
        """What the table needs: layout 2's ``results`` stream alone."""
        if self.schema_version < 2:
            return self._arrays
        return pivot_results(self._columns(RESULTS.name))

    @cached_property
    def _dynamics_arrays(self) -> Mapping[str, NDArray[Any]]:
        """The dynamics fit keyed as layout 1's ``dynamics`` stream."""
        if DYNAMICS.name not in self.source.stream_names:
            return {}
        if self.schema_version < 2:
            return self.source.view(DYNAMICS.name)
        return pivot_dynamics(self._columns(DYNAMICS.name))

    def _get(
        self, key: str, shape: tuple[int, ...], fill: Any = np.nan
    ) -> NDArray[Any]:
        if key in self._arrays:
            return np.asarray(self._arrays[key])
        return np.full(shape, fill)

    @cached_property
    def _coords(self) -> dict[str, Any]:
        n_exp = self._n_exposures
        if "exposure_index" in self._arrays:
            exposure = self._get("exposure_index", (n_exp,)).astype(np.int64)
        else:
            exposure = np.arange(n_exp, dtype=np.int64)
        return {
            "exposure": exposure,
            "exposure_time": (("exposure",), self._get("exposure_time", (n_exp,))),
            "n_frames": (("exposure",), self._get("n_frames", (n_exp,), 0)),
            "n_bins": (("exposure",), self._get("n_bins", (n_exp,), 0)),
            "partition": np.arange(self.q.size),
            "q": (("partition",), self.q),
        }

    @cached_property
    def _n_exposures(self) -> int:
        if "exposure_time" in self._arrays:
            return int(np.asarray(self._arrays["exposure_time"]).shape[0])
        return 0

    def _per_exposure(self, key: str, dims: tuple[str, ...], **attrs: Any) -> Any:
        n_exp, n_q = self._n_exposures, self.q.size
        shape = {"exposure": n_exp, "partition": n_q}
        values = self._get(key, tuple(shape.get(d, 0) for d in dims))
        coords = dict(self._coords)
        if "k" in dims:
            coords["k"] = np.arange(values.shape[dims.index("k")])
        if "frame" in dims:
            coords["frame"] = np.arange(values.shape[dims.index("frame")])
        return _data_array(values, dims, coords, **attrs)

    # ------------------------------------------------------------ views
    @property
    def metadata(self) -> dict[str, Any]:
        """The start document's ``xsvs`` dict (how the results were made)."""
        return dict(self.start.get("xsvs") or {})

    @property
    def geometry(self) -> Geometry | None:
        """Detector geometry of the analysis, None when not recorded."""
        geo = self.metadata.get("geometry")
        return Geometry.from_dict(geo) if isinstance(geo, Mapping) else None

    @cached_property
    def q(self) -> NDArray[np.float64]:
        """Partition centres, 1/Angstrom."""
        if self._n_exposures and "q" in self._arrays:
            return np.asarray(self._arrays["q"], np.float64)[0]
        centres = self.metadata.get("partitions", {}).get("centers", [])
        return np.asarray(centres, dtype=np.float64)

    @property
    def q_half_width(self) -> float:
        """Partition half-width, 1/Angstrom (NaN when not recorded)."""
        return float(self.metadata.get("partitions", {}).get("half_width", math.nan))

    @property
    def exposure_times(self) -> NDArray[np.float64]:
        """Exposure time of one frame of each exposure, s."""
        return np.asarray(self._coords["exposure_time"][1], dtype=np.float64)

    @property
    def n_frames(self) -> NDArray[np.int64]:
        """Frames analysed per exposure."""
        return np.asarray(self._coords["n_frames"][1], dtype=np.int64)

    @property
    def exit_status(self) -> str | None:
        """The stop document's ``exit_status`` (None while the run is open)."""
        return None if self.stop is None else self.stop.get("exit_status")

    def matrix(self, column: str) -> NDArray[Any]:
        """Return a table column as an ``(exposure, partition)`` array.

        Parameters
        ----------
        column : str
            One of the numeric :data:`RECORD_KEYS`, e.g. ``"beta"``.
        """
        n_q = self.q.size
        values = np.asarray(self.table_columns[column])
        return values.reshape(-1, n_q) if n_q else values.reshape(0, 0)

    @cached_property
    def table(self) -> pd.DataFrame:  # noqa: D102
        import pandas as pd

        return pd.DataFrame(self.table_columns, columns=list(RECORD_KEYS))

    @cached_property
    def table_columns(self) -> dict[str, Any]:
        """:attr:`table` as ``{column: values}`` (same rows), without pandas."""
        return table_columns(
            self.uid,
            self.raw_uid,
            self._table_arrays,
            self.source.flag_names(RESULTS.name),
        )

    @cached_property
    def histograms(self) -> xr.DataArray:  # noqa: D102
        hist = self._per_exposure("probability", _HIST_DIMS, long_name="P(k)")
        return hist.astype(np.float64)

    @cached_property
    def histograms_std(self) -> xr.DataArray:  # noqa: D102
        return self._per_exposure(
            "probability_std",
            _HIST_DIMS,
            long_name="per-frame standard deviation of P(k)",
        ).astype(np.float64)

    @cached_property
    def counts(self) -> xr.DataArray:  # noqa: D102
        return self._per_exposure("counts", _HIST_DIMS).fillna(0).astype(np.int64)

    @cached_property
    def images(self) -> xr.DataArray | None:  # noqa: D102
        if "mean_image" not in self._arrays:
            return None
        return self._per_exposure(
            "mean_image",
            ("exposure", "y", "x"),
            units=_UNITS,
            long_name="averaged frame",
        ).astype(np.float64)

    @cached_property
    def intensity(self) -> xr.DataArray:  # noqa: D102
        return self._per_exposure(
            "intensity", ("exposure", "partition"), units=_UNITS, long_name="I(q)"
        ).astype(np.float64)

    @cached_property
    def intensity_err(self) -> xr.DataArray:  # noqa: D102
        return self._per_exposure(
            "intensity_err", ("exposure", "partition"), units=_UNITS
        ).astype(np.float64)

    @cached_property
    def trace(self) -> xr.DataArray:  # noqa: D102
        return self._per_exposure(
            "trace", ("exposure", "frame", "partition"), units=_UNITS
        ).astype(np.float64)

    @cached_property
    def dynamics(self) -> pd.DataFrame | None:  # noqa: D102
        if not self._dynamics_arrays:
            return None
        return build_dynamics(
            self._dynamics_arrays, self.source.flag_names(DYNAMICS.name)
        )

    @cached_property
    def diffusion(self) -> dict[str, Any] | None:  # noqa: D102
        if self.dynamics is None:
            return None
        view = self._dynamics_arrays
        out = {
            k: _scalar(np.asarray(view[k])[-1]) for k in _DIFFUSION_KEYS if k in view
        }
        if isinstance(out.get("D_flags"), int):  # layout 2: a bitmask
            names = self.source.flag_names(DYNAMICS.name, "D_flags")
            out["D_flags"] = ",".join(decode_flags(out["D_flags"], names))
        return out

    @cached_property
    def streams(self) -> dict[str, dict[str, NDArray[Any]]]:  # noqa: D102
        return {name: dict(self.source.view(name)) for name in self.source.stream_names}


def load_results(run: Any) -> RunResults:
    """Read a derived run from Tiled (arrays are fetched on first use).

    Parameters
    ----------
    run : BlueskyRun client
        A derived run, e.g. from :func:`search_runs` or :func:`find_run`.

    Returns
    -------
    RunResults

    Raises
    ------
    RunNotFoundError
        If ``run`` is not a derived XSVS run.
    """
    return RunResults.from_source(TiledSource(run))


def _scalar(value: Any) -> Any:
    """Return a numpy scalar as a Python value (strings of object arrays stay)."""
    return value.item() if isinstance(value, np.generic) else value


def count_exposures(run: Any) -> int:
    """Count the distinct exposures a derived run stored, reading little.

    The stop document's ``num_events`` counts rows: in layout 2 one per
    exposure and partition, but an exposure written again (more frames
    arrived after it was closed) adds rows again.  When the rows are more
    than one exposure's, the ``exposure_index`` column of ``results`` is
    read (one table) and its distinct values are counted.

    Parameters
    ----------
    run : BlueskyRun client
        A derived run.

    Returns
    -------
    int
        Exposures with results (0 for an open run without results).
    """
    start = dict(run.metadata.get("start") or {})
    stop = dict(run.metadata.get("stop") or {})
    events = int((stop.get("num_events") or {}).get(RESULTS.name, 0))
    if layout_version(start) < 2:
        return events  # one event per exposure, written once
    xsvs = start.get("xsvs") or {}
    n_q = len((xsvs.get("partitions") or {}).get("centers", []))
    if n_q and 0 < events <= n_q:
        return 1
    source = TiledSource(run)
    if not source.has(RESULTS.name, "exposure_index"):
        return 0
    return int(np.unique(source.array(RESULTS.name, "exposure_index")).size)


def _data_array(
    values: NDArray[Any], dims: tuple[str, ...], coords: Mapping[str, Any], **attrs: Any
) -> xr.DataArray:
    import xarray as xr

    use = {
        k: v
        for k, v in coords.items()
        if set(v[0] if isinstance(v, tuple) else (k,)) <= set(dims)
    }
    return xr.DataArray(values, dims=dims, coords=use, attrs=attrs)
