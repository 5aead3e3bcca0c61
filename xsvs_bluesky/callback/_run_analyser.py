"""The analysis of one raw run: documents in, one derived run out.

:class:`RunAnalyser` is the per-run :class:`event_model.DocumentRouter` that
:class:`xsvs_bluesky.callback.XSVSCallback` creates through its RunRouter.
It groups frames by (stream, exposure time), feeds one ExposureAnalysis per
exposure, throttles progress events, refits the dynamics whenever an
exposure completes and turns any failure into a failed derived run.
:class:`RunRecord` is re-exported by :mod:`xsvs_bluesky.callback`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from event_model import DocumentRouter

from xsvs_bluesky.analysis import AnalysisSetup, ExposureAnalysis, ExposureResult
from xsvs_bluesky.callback._frames import FrameBatch, RunFrames
from xsvs_bluesky.core.dynamics import fit_dynamics
from xsvs_bluesky.derived import DerivedRun, histogram_backend
from xsvs_bluesky.errors import XSVSError

if TYPE_CHECKING:
    from xsvs_bluesky.callback import XSVSCallback

__all__ = ["RunAnalyser", "RunRecord"]

logger = logging.getLogger(__name__)


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
        ``"success"`` or ``"fail"`` (as in the derived run's stop document).
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


class _Exposure:
    """One (stream, exposure time) of a run and its progress bookkeeping."""

    def __init__(self, index: int, analysis: ExposureAnalysis) -> None:
        self.index = index
        self.analysis = analysis
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

    def __init__(self, owner: XSVSCallback, start: Mapping[str, Any]) -> None:
        super().__init__()
        self._owner = owner
        self._start = start
        self._uid = str(start["uid"])
        geometry = owner.geometry
        self._frames = RunFrames(
            start,
            self._add,
            detector_key=owner.detector_key,
            frame_shape=None if geometry is None else geometry.shape,
        )
        self._setup: AnalysisSetup | None = None
        self._derived: DerivedRun | None = None
        self._exposures: dict[tuple[str, float | None], _Exposure] = {}
        self._current: _Exposure | None = None
        self._done = False

    def __call__(
        self, name: str, doc: dict[str, Any], validate: bool = False
    ) -> tuple[str, dict[str, Any]]:
        if self._done:
            return name, doc
        try:
            return super().__call__(name, doc, validate)
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
        missing = self._frames.stop(doc, timeout_s=self._owner.read_timeout_s)
        self._done = True
        if self._derived is None:
            return
        results = tuple(self._close(exp) for exp in self._exposures.values())
        notes = []
        if missing:
            notes.append(f"{missing} frames could not be read in time")
        if doc.get("exit_status", "success") != "success":
            notes.append(f"raw run exit_status {doc.get('exit_status')!r}")
        status: Literal["success", "fail"] = "success"
        if not any(r.n_frames for r in results):
            status, notes = "fail", ["no frames received", *notes]
        self._dynamics(results)
        self._finish(status, "; ".join(notes), results)

    # ---------------------------------------------------------- analysis
    def _begin(self, frame_key: str = "") -> None:
        if self._derived is not None:
            return
        owner = self._owner
        try:
            self._setup = owner.setup_for(self._start)
        finally:  # even without a setup, a derived run records the failure
            xsvs = dict(self._setup.description) if self._setup else {}
            if self._setup is not None:
                xsvs.update(
                    n_bins=int(self._setup.n_bins),
                    histogram_backend=histogram_backend(str(self._setup.backend)),
                )
            xsvs.update(
                detector_key=frame_key,
                progress_interval_s=owner.progress_interval_s,
                progress_every_frames=owner.progress_every_frames,
                dynamics_model=owner.dynamics_model,
            )
            self._derived = DerivedRun(
                owner.emit_targets, raw_start=self._start, xsvs=xsvs
            )

    def _add(self, batch: FrameBatch) -> None:
        self._begin()
        assert self._setup is not None
        key = (batch.stream, batch.exposure_time)
        exp = self._exposures.get(key)
        if exp is None:
            t_e = math.nan if batch.exposure_time is None else batch.exposure_time
            analysis = self._setup.new_exposure(batch.stream, t_e, source=self._uid)
            exp = self._exposures[key] = _Exposure(len(self._exposures), analysis)
        if self._current is not None and self._current is not exp:
            self._close(self._current)
            # an exposure completed: refit beta(t_e) live over the completed ones
            done = [e.final for e in self._exposures.values() if e.final is not None]
            self._dynamics(done)
        self._current = exp
        exp.analysis.update(batch.frames)
        owner = self._owner
        if (
            exp.analysis.n_frames - exp.progress_frames >= owner.progress_every_frames
            and time.monotonic() - exp.progress_time >= owner.progress_interval_s
        ):
            self._progress(exp, exp.analysis.result(final=False))

    def _dynamics(self, results: Sequence[ExposureResult]) -> None:
        """Fit beta(t_e) per partition when there are >= 2 exposure times.

        Called whenever an exposure completes (a refit, one more event of the
        ``dynamics`` stream) and at the end of the run (the final fit).
        """
        model = self._owner.dynamics_model
        usable = [r for r in results if r.n_frames and math.isfinite(r.exposure_time)]
        if model is None or len({r.exposure_time for r in usable}) < 2:
            return
        beta = np.stack([r.beta for r in usable])
        err = np.stack([r.beta_err for r in usable])
        bad = ~np.isfinite(err) | (err <= 0)
        try:
            fits, diffusion = fit_dynamics(
                [r.exposure_time for r in usable],
                usable[0].q,
                np.where(bad, np.nan, beta),
                np.where(bad, 1.0, err),
                model=model,
            )
        except (XSVSError, ValueError) as err_:
            logger.warning("run %s: no dynamics fit: %s", self._uid, err_)
            return
        assert self._derived is not None
        self._derived.dynamics(fits, diffusion, model, n_exposures=len(usable))

    def _progress(self, exp: _Exposure, result: ExposureResult) -> None:
        exp.progress_frames = result.n_frames
        exp.progress_time = time.monotonic()
        assert self._derived is not None
        self._derived.progress(exp.index, result)
        self._owner.publish(result)

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
            self._owner.publish(final)
        return final

    def _finish(
        self,
        status: Literal["success", "fail"],
        reason: str,
        results: tuple[ExposureResult, ...],
    ) -> None:
        self._done = True
        self._frames.close()
        derived = self._derived
        if derived is not None:
            derived.stop(exit_status=status, reason=reason)
        self._owner.record(
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
                    self._owner.emit_targets, raw_start=self._start, xsvs={}
                )
            self._finish("fail", reason, ())
        except Exception:
            logger.exception("could not record the failure of run %s", self._uid)
            self._done = True
