"""The analysis of one raw run: documents in, one derived run out.

:class:`RunAnalyser` is the per-run :class:`event_model.DocumentRouter` that
:class:`xsvs_bluesky.callback.XSVSCallback` creates through its RunRouter.
It groups frames by (stream, exposure time), feeds one ExposureAnalysis per
exposure, throttles progress events, refits the dynamics whenever an
exposure completes and turns any failure into a failed derived run.  A raw
run whose start document asks for frame binning (:data:`BINNING_KEY`, a
replayed pyxsvs XPCS-mode series) has each frame of such a stream analysed
once per binning factor, summed over non-overlapping groups of consecutive
frames, as ``analyze`` does.

It depends on no callback object: it takes a frozen :class:`RunConfig` (how
to analyse) and a :class:`RunSink` (where documents, results and the final
:class:`RunRecord` go), which :class:`~xsvs_bluesky.callback.XSVSCallback`
satisfies.  :class:`RunRecord` is re-exported by :mod:`xsvs_bluesky.callback`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from event_model import DocumentRouter

from xsvs_bluesky.analysis import (
    AnalysisSetup,
    ExposureAnalysis,
    ExposureResult,
    dynamics_q,
)
from xsvs_bluesky.callback._access import FrameAccess
from xsvs_bluesky.callback._frames import FrameBatch, RunFrames
from xsvs_bluesky.callback._shards import DaskShards, DatumTask
from xsvs_bluesky.core.dynamics import fit_dynamics
from xsvs_bluesky.core.histogram import FrameBinner
from xsvs_bluesky.derived import DerivedRun, histogram_backend
from xsvs_bluesky.errors import LimitError, OptionError, XSVSError
from xsvs_bluesky.options import DEFAULT_LIMITS, DynamicsModel, Limits

__all__ = [
    "BINNING_KEY",
    "Emitter",
    "RunAnalyser",
    "RunConfig",
    "RunRecord",
    "RunSink",
    "frame_binning",
]

Emitter = Callable[[str, dict[str, Any]], object]  # any return value is ignored
Status = Literal["success", "abort", "fail"]

logger = logging.getLogger(__name__)

BINNING_KEY = "xsvs_binning"
"""Start-document key of a raw run whose frames are analysed binned.

``{stream: [n1, n2, ...]}``: the frames of that stream are analysed once per
factor ``n``, summed over non-overlapping groups of ``n`` consecutive frames
(the remainder dropped), as exposures of ``n`` times the frames' exposure
time (``n = 1``: the frames as they are).  A replayed pyxsvs XPCS-mode
series records its binning factors so.
"""
MAX_BIN_FACTORS = 256
"""Most binning factors per stream (each is one more exposure analysed)."""


def frame_binning(start: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Return the binning factors per stream that a start document asks for.

    Parameters
    ----------
    start : mapping
        Start document of a raw run; :data:`BINNING_KEY` may be absent
        (no binning: an empty dict).

    Returns
    -------
    dict
        ``{stream: (n1, n2, ...)}``, factors distinct integers >= 1, in the
        order given (the order of the exposures they make).

    Raises
    ------
    OptionError
        On a value that is not such a mapping, naming the key and the value.
    LimitError
        On more than :data:`MAX_BIN_FACTORS` factors for one stream.
    """
    raw = start.get(BINNING_KEY)
    if raw is None:
        return {}
    expected = "expected {stream: [n, ...]} with distinct integers n >= 1"
    if not isinstance(raw, Mapping):
        raise OptionError(f"start document key {BINNING_KEY} = {raw!r}: {expected}")
    out: dict[str, tuple[int, ...]] = {}
    for stream, factors in raw.items():
        what = f"start document key {BINNING_KEY}[{stream!r}]"
        if not isinstance(factors, Sequence) or isinstance(factors, str | bytes):
            raise OptionError(f"{what} = {factors!r}: {expected}")
        if len(factors) > MAX_BIN_FACTORS:
            raise LimitError(
                f"{what} lists {len(factors)} binning factors, more than the limit "
                f"of {MAX_BIN_FACTORS}; give fewer"
            )
        bad = [
            n for n in factors if isinstance(n, bool) or not isinstance(n, int) or n < 1
        ]
        if not factors or bad or len(set(factors)) != len(factors):
            raise OptionError(f"{what} = {list(factors)!r}: {expected}")
        out[str(stream)] = tuple(int(n) for n in factors)
    return out


@dataclass(frozen=True, eq=False)
class RunRecord:
    """What the callback did with one raw run.

    Parameters
    ----------
    raw_uid : str
        uid of the raw run.
    derived_uid : str or None
        uid of the derived run, None if none was started (no frames).
    exit_status : str
        As in the derived run's stop document: ``"success"``; ``"abort"``
        when the raw run was aborted, ``"fail"`` when it failed (the partial
        results are kept, the reason says how far the raw run got), when no
        frame arrived or when the analysis failed.
    reason : str
        Failure reason or a note, empty otherwise.
    results : tuple of ExposureResult
        Final results, one per exposure.
    """

    raw_uid: str
    derived_uid: str | None
    exit_status: str
    reason: str
    results: tuple[ExposureResult, ...]


class RunSink(Protocol):
    """Where a :class:`RunAnalyser` sends what it makes."""

    @property
    def emit_targets(self) -> Sequence[Emitter]:
        """``(name, doc)`` consumers of the derived run's documents."""
        ...

    def publish(self, result: ExposureResult) -> None:
        """Take a progress snapshot or final result of one exposure."""
        ...

    def record(self, record: RunRecord) -> None:
        """Take the record of the run, at its end."""
        ...


@dataclass(frozen=True)
class RunConfig:
    """How a :class:`RunAnalyser` analyses one run.

    Parameters
    ----------
    setup_for : callable
        ``setup_for(start_doc) -> AnalysisSetup``, called once, when the
        first frames are announced (may raise: the run then fails).
    detector_key : str or None
        Data key of the frames; None for the largest 2-d data key.
    frame_shape : tuple of int or None
        Expected frame shape (rows, cols), when known in advance.
    read_timeout_s : float
        At the stop document, how long to wait for HDF5 frames, s.
    progress_interval_s : float
        Minimum time between two progress events of one exposure, s.
    progress_every_frames : int
        Minimum number of new frames between two progress events.
    frame_access : FrameAccess or None
        Path map, allowed roots and Tiled fallback of StreamResource files
        (a callback fed from a network); None reads every file as named.
    dynamics_model : DynamicsModel or None
        Model of the ``dynamics`` stream; None for none.
    limits : Limits
        Checked on the frame shape of each descriptor (the setup checks the
        geometry and partitions).
    shards : DaskShards or None
        Analyse the frames of each HDF5 StreamDatum on Dask workers and
        merge the partials in order; None analyses every frame here.
    """

    setup_for: Callable[[Mapping[str, Any]], AnalysisSetup]
    detector_key: str | None = None
    frame_shape: tuple[int, int] | None = None
    read_timeout_s: float = 5.0
    progress_interval_s: float = 1.0
    progress_every_frames: int = 1
    dynamics_model: DynamicsModel | None = DynamicsModel.EXPONENTIAL
    frame_access: FrameAccess | None = None
    limits: Limits = DEFAULT_LIMITS
    shards: DaskShards | None = None


class _Exposure:
    """One exposure of a run and its progress bookkeeping.

    An exposure is a (stream, exposure time) of the raw run, or one binning
    factor of it (``binner`` sums the frames before the analysis).
    """

    def __init__(
        self,
        index: int,
        analysis: ExposureAnalysis,
        binner: FrameBinner | None = None,
    ) -> None:
        self.index = index
        self.analysis = analysis
        self.binner = binner
        self.progress_time = time.monotonic()
        self.progress_frames = 0
        self.published = -1
        self.final: ExposureResult | None = None

    def finish(self) -> ExposureResult:
        if self.final is None or self.final.n_frames != self.analysis.n_frames:
            self.final = self.analysis.result(final=True)
        return self.final


class RunAnalyser(DocumentRouter):
    """Analysis of one raw run; every failure ends in a failed derived run."""

    def __init__(
        self, start: Mapping[str, Any], config: RunConfig, sink: RunSink
    ) -> None:
        super().__init__()
        self._config = config
        self._sink = sink
        self._start = start
        self._uid = str(start["uid"])
        self._frames = RunFrames(
            start,
            self._add,
            detector_key=config.detector_key,
            frame_shape=config.frame_shape,
            access=config.frame_access,
            limits=config.limits,
            on_datum=None if config.shards is None else self._datum,
        )
        # partial analyses in flight on Dask workers, in acquisition order
        self._inflight: deque[tuple[tuple[str, float | None], Any]] = deque()
        self._recipe: Any = None
        self._setup: AnalysisSetup | None = None
        self._derived: DerivedRun | None = None
        self._binning: dict[str, tuple[int, ...]] = {}
        # every exposure in order of first frame; per (stream, exposure time)
        # the exposures its frames feed (one per binning factor)
        self._exposures: list[_Exposure] = []
        self._groups: dict[tuple[str, float | None], list[_Exposure]] = {}
        self._current: list[_Exposure] | None = None
        self._done = False

    def __call__(
        self, name: str, doc: dict[str, Any], validate: bool = False
    ) -> tuple[str, dict[str, Any]]:
        if self._done:
            return name, doc
        try:
            out = super().__call__(name, doc, validate)
            if self._inflight and not self._done:
                self._collect(wait=False)
            return out
        except Exception as err:
            self._fail(err)
        return name, doc

    # ---------------------------------------------------------- documents
    def descriptor(self, doc: Any) -> None:
        info = self._frames.descriptor(doc)
        if info is not None:
            self._begin(info.frame_key)

    def event_page(self, doc: Any) -> Any:
        self._frames.event_page(doc)

    def stream_resource(self, doc: Any) -> None:
        self._frames.stream_resource(doc)

    def stream_datum(self, doc: Any) -> None:
        self._frames.stream_datum(doc)

    def resource(self, doc: Any) -> None:
        self._frames.resource(doc)

    def datum_page(self, doc: Any) -> None:
        self._frames.datum_page(doc)

    def stop(self, doc: Any) -> None:
        missing = self._frames.stop(doc, timeout_s=self._config.read_timeout_s)
        self._collect(wait=True)
        self._done = True
        if self._derived is None:
            return
        self._log_unbinned()
        results = tuple(self._close(exp) for exp in self._exposures)
        notes = []
        status: Status = "success"
        raw_status = str(doc.get("exit_status", "success"))
        if raw_status != "success":
            # partial results of an interrupted or failed raw run are kept,
            # but the derived run says it is not a complete analysis
            status = "abort" if raw_status == "abort" else "fail"
            notes.append(self._raw_incomplete(raw_status, doc, results))
        if missing:
            why = "; ".join(self._frames.problems)
            notes.append(
                f"{missing} frames could not be read in time"
                + (f" ({why})" if why else "")
            )
        if not any(r.n_frames for r in results):
            status, notes = "fail", ["no frames received", *notes]
        self._dynamics(results)
        self._finish(status, "; ".join(notes), results)

    def abort(self, reason: str) -> None:
        """End the derived run now with ``exit_status="abort"`` (no raw stop).

        The frames analysed so far are stored as results; used when the
        source of the documents goes away mid-run (a listener shutting down).
        """
        if self._done:
            return
        try:
            self._collect(wait=True)  # datums in flight: bounded by max_pending
            self._done = True
            results: tuple[ExposureResult, ...] = ()
            if self._derived is not None:  # closing writes each exposure's rows
                results = tuple(self._close(exp) for exp in self._exposures)
            self._finish("abort", reason, results)
        except Exception as err:
            self._fail(err)

    @property
    def done(self) -> bool:
        """Whether the derived run is finished (or was never needed)."""
        return self._done

    # ---------------------------------------------------------- analysis
    def _begin(self, frame_key: str = "") -> None:
        if self._derived is not None:
            return
        config = self._config
        try:
            self._binning = frame_binning(self._start)
            self._setup = config.setup_for(self._start)
        finally:  # even without a setup, a derived run records the failure
            xsvs = dict(self._setup.description) if self._setup else {}
            if self._binning:
                xsvs["binning"] = {k: list(v) for k, v in self._binning.items()}
            model = config.dynamics_model
            if self._setup is not None:
                xsvs.update(
                    n_bins=int(self._setup.options.n_bins),
                    histogram_backend=histogram_backend(
                        str(self._setup.options.histogram_backend)
                    ),
                )
            xsvs.update(
                detector_key=frame_key,
                progress_interval_s=config.progress_interval_s,
                progress_every_frames=config.progress_every_frames,
                dynamics_model=None if model is None else model.value,
            )
            self._derived = DerivedRun(
                self._sink.emit_targets, raw_start=self._start, xsvs=xsvs
            )

    def _group(self, stream: str, exposure_time: float | None) -> list[_Exposure]:
        """Return the exposures these frames feed; close the previous ones on a change.

        One exposure per (stream, exposure time), or one per binning factor
        of the stream (:data:`BINNING_KEY`), all made at its first frames.
        """
        assert self._setup is not None
        key = (stream, exposure_time)
        group = self._groups.get(key)
        if group is None:
            t_e = math.nan if exposure_time is None else exposure_time
            group = []
            for n in self._binning.get(stream, (1,)):
                analysis = self._setup.new_exposure(stream, t_e * n, source=self._uid)
                exp = _Exposure(
                    len(self._exposures), analysis, FrameBinner(n) if n > 1 else None
                )
                self._exposures.append(exp)
                group.append(exp)
            self._groups[key] = group
        if self._current is not None and self._current is not group:
            for exp in self._current:
                self._close(exp)
            # an exposure completed: refit beta(t_e) live over the completed ones
            done = [e.final for e in self._exposures if e.final is not None]
            self._dynamics(done)
        self._current = group
        return group

    def _add(self, batch: FrameBatch) -> None:
        self._begin()
        if self._inflight:  # frames read here come after those in flight
            self._collect(wait=True)
        for exp in self._group(batch.stream, batch.exposure_time):
            frames = batch.frames
            if exp.binner is not None:
                frames = exp.binner.push(frames)
                if not frames.shape[0]:
                    continue
            exp.analysis.update(frames)
            self._progress_due(exp)

    def _datum(self, task: DatumTask) -> bool:
        """Hand a StreamDatum to the Dask workers; False to read it here."""
        shards = self._config.shards
        assert shards is not None
        self._begin()
        assert self._setup is not None
        if self._recipe is None:
            try:
                self._recipe = shards.recipe_for(self._setup)
            except OptionError as err:
                logger.warning("run %s analysed in this process: %s", self._uid, err)
                self._recipe = False
        if self._recipe is False or task.stream in self._binning:
            return False  # binned frames are summed here, in order
        future = shards.submit(self._recipe, task)
        self._inflight.append(((task.stream, task.exposure_time), future))
        while len(self._inflight) > shards.max_pending:
            self._collect_one()
        return True

    def _collect(self, *, wait: bool) -> None:
        """Merge the finished partials at the head of the queue, in order."""
        while self._inflight and (wait or self._inflight[0][1].done()):
            self._collect_one()

    def _collect_one(self) -> None:
        (stream, t_e), future = self._inflight.popleft()
        arrays = future.result()  # a worker's error is raised here
        (exp,) = self._group(stream, t_e)  # never a binned stream
        exp.analysis.absorb(arrays)
        self._progress_due(exp)

    def _progress_due(self, exp: _Exposure) -> None:
        config = self._config
        if (
            exp.analysis.n_frames - exp.progress_frames >= config.progress_every_frames
            and time.monotonic() - exp.progress_time >= config.progress_interval_s
        ):
            self._progress(exp, exp.analysis.result(final=False))

    def _dynamics(self, results: Sequence[ExposureResult]) -> None:
        """Fit beta(t_e) per partition when there are >= 2 exposure times.

        Called whenever an exposure completes (a refit, one more event of the
        ``dynamics`` stream) and at the end of the run (the final fit).
        ``Gamma = D q^2`` is fitted against :func:`dynamics_q` (each ring's
        ``q_eff`` from ``mle-intensity``, else the partition centres).
        """
        model = self._config.dynamics_model
        usable = [r for r in results if r.n_frames and math.isfinite(r.exposure_time)]
        if model is None or len({r.exposure_time for r in usable}) < 2:
            return
        beta = np.stack([r.beta for r in usable])
        err = np.stack([r.beta_err for r in usable])
        bad = ~np.isfinite(err) | (err <= 0)
        try:
            fits, diffusion = fit_dynamics(
                [r.exposure_time for r in usable],
                dynamics_q(usable),
                np.where(bad, np.nan, beta),
                np.where(bad, 1.0, err),
                model=model.value,
            )
        except (XSVSError, ValueError) as err_:
            logger.warning("run %s: no dynamics fit: %s", self._uid, err_)
            return
        assert self._derived is not None
        self._derived.dynamics(fits, diffusion, model.value, n_exposures=len(usable))

    def _progress(self, exp: _Exposure, result: ExposureResult) -> None:
        exp.progress_frames = result.n_frames
        exp.progress_time = time.monotonic()
        assert self._derived is not None
        self._derived.progress(exp.index, result)
        self._sink.publish(result)

    def _close(self, exp: _Exposure) -> ExposureResult:
        """Return the final result of an exposure, published once per frame count.

        Publishing writes the exposure's rows to the derived run at once
        (results, histograms, trace, image), so they are in Tiled while the
        scan goes on.
        """
        final = exp.finish()
        if exp.published != final.n_frames:
            exp.published = final.n_frames
            assert self._derived is not None
            # the results rows are the end point of the exposure's progress
            exp.progress_frames = final.n_frames
            if final.n_frames:
                self._derived.exposure(exp.index, final)
            self._sink.publish(final)
        return final

    def _log_unbinned(self) -> None:
        """Log the frames of binned streams left over after the last whole group."""
        for exp in self._exposures:
            if exp.binner is not None and exp.binner.pending:
                logger.info(
                    "run %s: %d frames of stream %r left over after binning by %d "
                    "are not used",
                    self._uid,
                    exp.binner.pending,
                    exp.analysis.stream,
                    exp.binner.n,
                )

    def _raw_incomplete(
        self,
        raw_status: str,
        stop: Mapping[str, Any],
        results: Sequence[ExposureResult],
    ) -> str:
        """Say how far the raw run got: ``raw run aborted after 5 of 8 exposures``."""
        word = {"abort": "aborted", "fail": "failed"}.get(raw_status, raw_status)
        done = sum(1 for r in results if r.n_frames)
        planned = self._start.get("xsvs_exposure_times")
        total = ""
        if isinstance(planned, Sequence):  # binned streams make several each
            extra = sum(len(f) - 1 for f in self._binning.values())
            total = f" of {len(planned) + extra}"
        frames = sum(r.n_frames for r in results)
        text = f"raw run {word} after {done}{total} exposures ({frames} frames)"
        if stop.get("reason"):
            text += f": {stop['reason']}"
        return text

    def _finish(
        self,
        status: Status,
        reason: str,
        results: tuple[ExposureResult, ...],
    ) -> None:
        self._done = True
        self._frames.close()
        for _, future in self._inflight:
            future.cancel()
        self._inflight.clear()
        derived = self._derived
        if derived is not None:
            derived.stop(exit_status=status, reason=reason)
        self._sink.record(
            RunRecord(
                raw_uid=self._uid,
                derived_uid=None if derived is None else derived.uid,
                exit_status=status,
                reason=reason,
                results=results,
            )
        )

    def _fail(self, err: BaseException) -> None:
        logger.error(
            "XSVS analysis of run %s failed; its derived run is marked failed and "
            "the scan goes on",
            self._uid,
            exc_info=err,
        )
        reason = f"{type(err).__name__}: {err}"
        try:
            if self._derived is None:
                self._derived = DerivedRun(
                    self._sink.emit_targets, raw_start=self._start, xsvs={}
                )
            self._finish("fail", reason, ())
        except Exception:
            logger.exception("could not record the failure of run %s", self._uid)
            self._done = True
