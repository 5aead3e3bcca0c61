"""The implementation of :mod:`xsvs_bluesky.callback` (private; see its docstring)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, Literal

from event_model import RunRouter

from xsvs_bluesky.analysis import AnalysisSetup, ExposureResult, LabelledArray
from xsvs_bluesky.callback._access import FrameAccess
from xsvs_bluesky.callback._run_analyser import (
    Emitter,
    RunAnalyser,
    RunConfig,
    RunRecord,
)
from xsvs_bluesky.callback._shards import DaskShards
from xsvs_bluesky.core.geometry import Geometry, Partitions
from xsvs_bluesky.errors import GeometryError, OptionError
from xsvs_bluesky.options import (
    AnalysisOptions,
    Backend,
    DynamicsModel,
    Estimator,
    FlatFieldMode,
)

__all__ = ["RunRecord", "XSVSCallback"]

logger = logging.getLogger(__name__)


class _Unset(Enum):
    TOKEN = "unset"


_UNSET = _Unset.TOKEN
"""``dynamics_model`` not given (None there means: no dynamics stream)."""

ResultCallback = Callable[[ExposureResult], None]

GEOMETRY_KEYS = ("xsvs_geometry", "geometry")
"""Start-document keys looked up for the geometry (Geometry.to_dict())."""
PARTITION_KEYS = ("xsvs_partitions", "partitions")
"""Start-document keys looked up for the q partition parameters."""


class _PassThroughFiller:
    """A RunRouter filler that neither fills nor copies anything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _same(self, doc: Any) -> Any:
        return doc

    descriptor = event_page = datum_page = resource = _same
    stream_resource = stream_datum = event = datum = _same


def _callables(value: Any) -> list[Any]:
    items = [] if value is None else [value] if callable(value) else list(value)
    for item in items:
        if not callable(item):
            raise OptionError(f"{item!r} is not callable; give callables")
    return items


class XSVSCallback:
    """Analyse XSVS frames live and publish the results as a derived run.

    All parameters are keyword-only.  Geometry and partitions given here
    apply to every run; otherwise each run's start document must carry
    them: ``xsvs_geometry`` (``Geometry.to_dict()``) and ``xsvs_partitions``
    (``{"q1", "q2", "qs", "dq"}`` or ``{"centers", "dq"}``, 1/Angstrom).

    Parameters
    ----------
    options : AnalysisOptions, optional
        Estimators, flat-field mode, histogram settings and dynamics model
        (default ``AnalysisOptions()``).  The keyword arguments ``estimator``
        ... ``dynamics_model`` below are a convenience: each one given (not
        None) replaces that field of ``options``; the result is
        :attr:`options`.
    geometry : Geometry or mapping, optional
        Detector geometry (Angstrom, mm, px).
    partitions : Partitions or mapping, optional
        q partitions or their parameters (built on ``geometry``).
    masks : sequence, optional
        Masks (nonzero = excluded): arrays, ``(name, array)`` or ``(name,
        array, file_sha256)``; their union applies.
    flat_field : array_like or tuple, optional
        Pixel efficiencies (mean 1), optionally ``(name, array[, sha256])``.
    flat_field_mode : {"weights", "divide-round", "record-only", "none"}
        See :class:`xsvs_bluesky.options.FlatFieldMode` (default
        ``weights``; the older name ``weighted`` is accepted).
    estimator : str, optional
        Main estimator; default :func:`xsvs_bluesky.options.default_estimator`
        (``"mle-intensity"``; ``"mle"`` in the ``divide-round`` mode; without
        a geometry, ``"mle-weighted"`` with a flat field used as weights,
        else ``"mle"``).
    extra_estimators : sequence of str, optional
        Also reported per exposure (default moments, low-count, r-1).
    estimator_options : mapping, optional
        Keyword arguments for the main estimator.
    n_bins, n_groups : int, optional
        Initial histogram bins (32); efficiency groups per partition (16).
    progress_interval_s : float, optional
        Minimum time between two progress events of one exposure, s
        (default 1.0; 0 for none).
    progress_every_frames : int, optional
        Minimum number of new frames between two progress events of one
        exposure (default 1).  Both conditions must hold.
    emit : callable or sequence of callables, optional
        ``(name, doc)`` consumers of the derived run (e.g. a TiledWriter
        with ``max_array_size=0``), held strongly.
    on_result : callable or sequence of callables, optional
        Called with every :class:`ExposureResult`: progress snapshots
        (``final=False``) and final results (live plots, tables), in the
        thread that delivers the documents (the RunEngine's).
    detector_key : str, optional
        Data key of the frames; default the largest 2-d data key.
    accept : callable, optional
        ``accept(start_doc) -> bool``; runs it rejects are not analysed.
    read_timeout_s : float, optional
        At the end of a run, how long to wait for HDF5 frames not yet
        written, s.
    histogram_backend : str, optional
        ``"auto"`` (default), ``"numba"`` or ``"numpy"``.
    keep_records : int, optional
        Number of :class:`RunRecord` kept in :attr:`records`.
    dynamics_model : str or None, optional
        Model of the ``dynamics`` stream fitted at the end of a run with two
        or more exposure times (``"exponential"``, the default, or
        ``"stretched"``); None for no dynamics stream.
    frame_access : FrameAccess, optional
        Path map, allowed roots and Tiled fallback of the files that
        StreamResource documents name (a callback fed from a network);
        default: read every file as named.
    shards : DaskShards, optional
        Analyse the frames of each HDF5 StreamDatum on Dask distributed
        workers (:class:`~xsvs_bluesky.callback.DaskShards`); the partials
        are merged in acquisition order, so the derived run equals an
        in-process analysis.  Inline frames, files refused here and the
        legacy ``divide-round`` bins are analysed in this process.

    Raises
    ------
    GeometryError
        If the geometry, partitions, masks or flat field given disagree.
    OptionError
        On an unknown estimator, flat-field mode or dynamics model (also a
        ValueError).
    ValueError
        On a non-callable consumer.

    Examples
    --------
    >>> cb = XSVSCallback(geometry=geo, emit=writer,
    ...                   partitions=dict(q1=2e-3, q2=1e-2, qs=1e-3, dq=4e-4))
    ... # doctest: +SKIP
    >>> RE.subscribe(cb)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        options: AnalysisOptions | None = None,
        geometry: Geometry | Mapping[str, Any] | None = None,
        partitions: Partitions | Mapping[str, Any] | None = None,
        masks: Sequence[LabelledArray] = (),
        flat_field: LabelledArray | None = None,
        flat_field_mode: FlatFieldMode | str | None = None,
        estimator: Estimator | str | None = None,
        extra_estimators: Sequence[Estimator | str] | None = None,
        estimator_options: Mapping[str, Any] | None = None,
        n_bins: int | None = None,
        n_groups: int | None = None,
        progress_interval_s: float | None = 1.0,
        progress_every_frames: int | None = 1,
        emit: Emitter | Iterable[Emitter] | None = None,
        on_result: ResultCallback | Iterable[ResultCallback] | None = None,
        detector_key: str | None = None,
        accept: Callable[[Mapping[str, Any]], bool] | None = None,
        read_timeout_s: float = 5.0,
        histogram_backend: Backend | None = None,
        keep_records: int = 8,
        dynamics_model: DynamicsModel | str | None | Literal[_Unset.TOKEN] = _UNSET,
        frame_access: FrameAccess | None = None,
        shards: DaskShards | None = None,
    ) -> None:
        # strong references: event_model's DocumentRouter would hold them weakly
        self.emit_targets: list[Emitter] = _callables(emit)
        self.result_callbacks: list[ResultCallback] = _callables(on_result)
        if isinstance(geometry, Mapping):
            geometry = Geometry.from_dict(geometry)
        self.geometry = geometry
        self.partitions = partitions
        opts = AnalysisOptions.merge(
            options,
            estimator=estimator,
            flat_field_mode=flat_field_mode,
            extra_estimators=extra_estimators,
            estimator_options=estimator_options,
            n_bins=n_bins,
            n_groups=n_groups,
            histogram_backend=histogram_backend,
        )
        if dynamics_model is not _UNSET:  # None: no dynamics stream
            opts = opts.replace(dynamics_model=dynamics_model)
        self.options: AnalysisOptions = opts
        self.masks = tuple(masks)
        self.flat_field = flat_field
        self.progress_interval_s = float(progress_interval_s or 0.0)
        self.progress_every_frames = max(int(progress_every_frames or 1), 1)
        self.detector_key = detector_key
        self.accept = accept
        self.read_timeout_s = float(read_timeout_s)
        self.keep_records = max(int(keep_records), 0)
        self.frame_access = frame_access
        self.shards = shards
        self._analysers: dict[str, RunAnalyser] = {}
        self.records: OrderedDict[str, RunRecord] = OrderedDict()
        self._cache: tuple[str, AnalysisSetup] | None = None
        if partitions is not None and (
            geometry is not None or isinstance(partitions, Partitions)
        ):
            self.setup_for({})  # inconsistent arguments fail here, not mid-scan
        self._routing_errors: set[tuple[str, str]] = set()
        self._router = RunRouter(
            [self._factory],
            filler_class=_PassThroughFiller,  # type: ignore[arg-type]
        )

    def __call__(self, name: str, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Process one document; never raises."""
        try:
            self._router(name, doc)
        except Exception as err:
            # e.g. documents of a run that started before the subscription:
            # the first of a kind with its traceback, the rest at debug level
            kind = (name, type(err).__name__)
            if kind in self._routing_errors:
                logger.debug("XSVSCallback could not route a %r document: %r", *kind)
            else:
                self._routing_errors.add(kind)
                logger.exception("XSVSCallback could not route a %r document", name)
        return name, doc

    def _factory(self, name: str, start: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        if "original_run_uid" in start:
            logger.debug("run %s is a derived run: not analysed", start.get("uid"))
            return [], []
        if self.accept is not None:
            try:
                if not self.accept(start):
                    return [], []
            except Exception:
                logger.exception("accept() raised on run %s", start.get("uid"))
                return [], []
        geometry = self.geometry
        config = RunConfig(
            setup_for=self.setup_for,
            detector_key=self.detector_key,
            frame_shape=None if geometry is None else geometry.shape,
            read_timeout_s=self.read_timeout_s,
            progress_interval_s=self.progress_interval_s,
            progress_every_frames=self.progress_every_frames,
            dynamics_model=self.options.dynamics_model,
            frame_access=self.frame_access,
            limits=self.options.limits,
            shards=self.shards,
        )
        analyser = RunAnalyser(start, config, self)
        self._analysers = {k: a for k, a in self._analysers.items() if not a.done}
        self._analysers[str(start["uid"])] = analyser
        return [analyser], []

    @property
    def dynamics_model(self) -> DynamicsModel | None:
        """Model of the ``dynamics`` stream (``options.dynamics_model``)."""
        return self.options.dynamics_model

    @property
    def open_runs(self) -> list[str]:
        """Return the raw runs being analysed (started, not stopped): uids."""
        return [k for k, a in self._analysers.items() if not a.done]

    def abort_open(self, reason: str) -> list[str]:
        """End the derived run of every open raw run with ``exit_status="abort"``.

        For a consumer that stops before the stop documents arrive (e.g.
        ``xsvs-bluesky listen`` on SIGTERM): the results so far are stored
        and no derived run is left open.

        Returns
        -------
        list of str
            uids of the raw runs aborted.
        """
        uids = self.open_runs
        for uid in uids:
            self._analysers.pop(uid).abort(reason)
        return uids

    def setup_for(self, start: Mapping[str, Any]) -> AnalysisSetup:
        """Return the analysis setup of a run (from the arguments, else its start).

        Raises
        ------
        GeometryError
            When neither defines geometry and partitions, or they are
            inconsistent.
        """
        geometry, spec = self.geometry, self.partitions
        if spec is None or (geometry is None and not isinstance(spec, Partitions)):
            if geometry is None:
                raw = next((start[k] for k in GEOMETRY_KEYS if k in start), None)
                if not isinstance(raw, Mapping):
                    raise GeometryError(
                        f"run {start.get('uid')}: no geometry; give XSVSCallback("
                        f"geometry=...) or the start key {GEOMETRY_KEYS[0]!r}"
                    )
                geometry = Geometry.from_dict(raw)
            if spec is None:
                spec = next((start[k] for k in PARTITION_KEYS if k in start), None)
                if not isinstance(spec, Mapping):
                    raise GeometryError(
                        f"run {start.get('uid')}: no q partitions; give XSVSCallback("
                        f"partitions=...) or the start key {PARTITION_KEYS[0]!r} "
                        "({q1, q2, qs, dq} or {centers, dq}, 1/Angstrom)"
                    )
        key = repr(
            (
                None if geometry is None else geometry.to_dict(),
                ("Partitions", id(spec)) if isinstance(spec, Partitions) else spec,
            )
        )
        if self._cache is None or self._cache[0] != key:
            setup = AnalysisSetup.build(
                partitions=spec,
                geometry=geometry,
                masks=self.masks,
                flat_field=self.flat_field,
                options=self.options,
            )
            self._cache = (key, setup)
        return self._cache[1]

    def record(self, record: RunRecord) -> None:
        """Keep a run record (called by the analysers at the end of a run)."""
        if self.keep_records:
            self.records[record.raw_uid] = record
            while len(self.records) > self.keep_records:
                self.records.popitem(last=False)

    def publish(self, result: ExposureResult) -> None:
        """Send a result to every ``on_result`` callback; never raises."""
        for func in self.result_callbacks:
            try:
                func(result)
            except Exception:
                logger.exception("on_result callback %r failed", func)
