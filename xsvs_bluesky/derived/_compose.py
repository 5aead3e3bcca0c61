"""The implementation of :mod:`xsvs_bluesky.derived` (private; see its docstring)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from event_model import compose_run

from xsvs_bluesky._version import __version__
from xsvs_bluesky.analysis import ExposureResult
from xsvs_bluesky.core.dynamics import DiffusionFit, DynamicsFit
from xsvs_bluesky.derived._layout import (
    DYNAMICS,
    DYNAMICS_FLAG_NAMES,
    HISTOGRAMS,
    IMAGES,
    LAYOUT_VERSION,
    PROGRESS,
    PROVENANCE_KEYS,
    RESULT_FLAGS,
    RESULTS,
    TRACE,
    StreamLayout,
    encode_flags,
    estimator_key,
)

__all__ = ["DerivedRun", "software_versions"]

logger = logging.getLogger(__name__)

Emitter = Callable[[str, dict[str, Any]], object]  # any return value is ignored
_VERSIONED = ("numpy", "scipy", "numba", "event-model", "bluesky", "tiled")


@lru_cache(maxsize=1)
def software_versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on (None if not installed)."""
    out: dict[str, str | None] = {"xsvs_bluesky": __version__}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def histogram_backend(requested: str) -> str:
    """Return the histogram backend ``requested`` resolves to (``auto``: numba)."""
    if requested != "auto":
        return requested
    return "numba" if importlib.util.find_spec("numba") is not None else "numpy"


_SUFFIXES: tuple[str, ...] = ()
_MAX_SUFFIXES = 1 << 16  # ~4 MB of strings at most


def _row_uids(n: int) -> list[str]:
    """``n`` event uids ``"<uuid4>-0"``, ``"<uuid4>-1"``, ... of one page.

    The ``"-i"`` suffixes are made once and kept (up to
    :data:`_MAX_SUFFIXES`): a trace page has a row per frame and partition,
    and formatting each number again cost more than the rest of the page.
    The kept tuple is replaced whole, never changed: callbacks in other
    threads read a complete one.
    """
    global _SUFFIXES
    stem = str(uuid.uuid4())
    suffixes = _SUFFIXES
    if len(suffixes) < min(n, _MAX_SUFFIXES):
        more = range(len(suffixes), min(n, _MAX_SUFFIXES))
        _SUFFIXES = suffixes = suffixes + tuple(f"-{i}" for i in more)
    out = [stem + suffix for suffix in suffixes[:n]]
    out.extend(f"{stem}-{i}" for i in range(len(out), n))
    return out


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel()]


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


class DerivedRun:
    """Documents of one derived run, sent to ``emit`` as they are composed.

    Parameters
    ----------
    emit : sequence of callables
        ``(name, doc)`` consumers (e.g. a TiledWriter).  A consumer that
        raises is logged and dropped for the rest of this run; the others
        go on.
    raw_start : mapping
        Start document of the raw run.
    xsvs : mapping
        The ``xsvs`` dict of the start document (settings, geometry, ...);
        ``schema_version``, ``package_version`` and ``versions`` are added.
    """

    def __init__(
        self,
        emit: Sequence[Emitter],
        *,
        raw_start: Mapping[str, Any],
        xsvs: Mapping[str, Any],
    ) -> None:
        self._targets = list(emit)
        settings = dict(xsvs)
        self._extra = tuple(str(e) for e in settings.get("extra_estimators") or ())
        metadata: dict[str, Any] = {
            "plan_name": "xsvs_analysis",
            "plan_type": "analysis",
            "original_run_uid": raw_start["uid"],
            "hints": {"dimensions": [[["exposure_time"], RESULTS.name]]},
            "xsvs": {
                "schema_version": LAYOUT_VERSION,
                "package_version": __version__,
                "versions": software_versions(),
                **settings,
            },
        }
        if isinstance(raw_start.get("scan_id"), int):
            metadata["scan_id"] = raw_start["scan_id"]
        sample = raw_start.get("sample_name", raw_start.get("sample"))
        if isinstance(sample, str):
            metadata["sample_name"] = sample
        if isinstance(raw_start.get("plan_name"), str):
            metadata["raw_plan_name"] = raw_start["plan_name"]
        for key in PROVENANCE_KEYS:
            if raw_start.get(key) is not None:
                metadata[key] = raw_start[key]
        self._bundle = compose_run(metadata=metadata)
        self.start_doc = self._bundle.start_doc
        self.uid: str = self.start_doc["uid"]
        self._descriptors: dict[str, Any] = {}
        self._seq: dict[str, int] = {}
        self._fits = 0
        self.stopped = False
        self._emit("start", dict(self.start_doc))

    def _emit(self, name: str, doc: dict[str, Any]) -> None:
        for target in list(self._targets):
            try:
                target(name, doc)
            except Exception:
                logger.exception(
                    "consumer %r of derived run %s failed on a %r document; it "
                    "gets no more documents of this run",
                    target,
                    self.uid,
                    name,
                )
                self._targets.remove(target)

    def _page(
        self,
        stream: StreamLayout,
        data: dict[str, Any],
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """Emit the rows ``data`` (equal-length columns) as one EventPage."""
        n = len(next(iter(data.values())))
        if n == 0:
            return
        if stream.name not in self._descriptors:
            # our layouts are fixed (checked against the schema in the tests)
            bundle = self._bundle.compose_descriptor(
                **stream.descriptor(self._extra, shapes), validate=False
            )
            self._descriptors[stream.name] = bundle
            self._seq[stream.name] = 1
            self._emit("descriptor", dict(bundle.descriptor_doc))
        first = self._seq[stream.name]
        self._seq[stream.name] = first + n
        now = time.time()
        # time stamps as numpy columns, not a Python float per row: a trace
        # page has a row per frame and partition, and its backup line wrote
        # each as JSON text (~85 % of the line's cost, in the analysis' thread)
        page = self._descriptors[stream.name].compose_event_page(
            data=data,
            timestamps={k: np.full(n, now) for k in data},
            seq_num=list(range(first, first + n)),  # integers for the schema
            uid=_row_uids(n),
            time=np.full(n, now),
            validate=False,
        )
        self._emit("event_page", dict(page))

    def progress(self, index: int, result: ExposureResult) -> None:
        """Emit the ``progress`` rows of exposure number ``index``."""
        n_q = int(result.q.size)
        self._page(
            PROGRESS,
            {
                "exposure_index": [int(index)] * n_q,
                "raw_stream": [result.stream] * n_q,
                "exposure_time": [float(result.exposure_time)] * n_q,
                "n_frames": [int(result.n_frames)] * n_q,
                "partition": list(range(n_q)),
                "q": _floats(result.q),
                "kbar": _floats(result.kbar),
                "kbar_err": _floats(result.kbar_err),
                "beta": _floats(result.beta),
                "beta_err": _floats(result.beta_err),
            },
        )

    def exposure(self, index: int, result: ExposureResult) -> None:
        """Emit the rows of a completed exposure: results, histograms, trace, image.

        Called once per exposure when its last frame is analysed (and again
        if more frames arrive later: the new rows supersede the old ones).
        """
        n_q = int(result.q.size)
        rows = list(range(n_q))
        t_e = float(result.exposure_time)
        data: dict[str, Any] = {
            "exposure_index": [int(index)] * n_q,
            "raw_stream": [result.stream] * n_q,
            "exposure_time": [t_e] * n_q,
            "partition": rows,
            "q": _floats(result.q),
            "n_pixels": _ints(result.n_pixels),
            "n_frames": [int(result.n_frames)] * n_q,
            "n_bins": [int(result.n_bins)] * n_q,
            "estimator": [result.estimator] * n_q,
            "kbar": _floats(result.kbar),
            "kbar_err": _floats(result.kbar_err),
            "kbar_frame_std": _floats(result.kbar_frame_std),
            "beta": _floats(result.beta),
            "beta_err": _floats(result.beta_err),
            "M": _floats(result.M),
            "M_err": _floats(result.M_err),
            "n_samples": [int(e.n_samples) for e in result.estimates],
            "flags": [encode_flags(f, RESULT_FLAGS) for f in result.flags],
            "intensity": _floats(result.intensity),
            "intensity_err": _floats(result.intensity_err),
        }
        for name in self._extra:
            stem = estimator_key(name)
            est = result.extra_estimates.get(name)
            nan = [float("nan")] * n_q
            data[f"beta_{stem}"] = (
                nan if est is None else _floats([e.beta for e in est])
            )
            data[f"beta_{stem}_err"] = (
                nan if est is None else _floats([e.beta_err for e in est])
            )
        self._page(RESULTS, data)

        counts = np.asarray(result.counts).reshape(n_q, -1)
        n_k = counts.shape[1]
        self._page(
            HISTOGRAMS,
            {
                "exposure_index": [int(index)] * (n_q * n_k),
                "partition": np.repeat(np.arange(n_q), n_k).tolist(),
                "k": np.tile(np.arange(n_k), n_q).tolist(),
                "counts": counts.astype(np.int64).ravel().tolist(),
                "probability": _floats(result.probability),
                "probability_std": _floats(result.probability_std),
            },
        )

        trace = np.asarray(result.trace, dtype=np.float64).reshape(-1, n_q)
        n_f = trace.shape[0]
        # a row per frame and partition: numpy columns, as the image's (a
        # Python object per value cost more than the rest of the exposure)
        self._page(
            TRACE,
            {
                "exposure_index": np.full(n_f * n_q, index, dtype=np.int64),
                "frame": np.repeat(np.arange(n_f, dtype=np.int64), n_q),
                "partition": np.tile(np.arange(n_q, dtype=np.int64), n_f),
                "trace": trace.ravel().copy(),
            },
        )

        image = result.mean_image
        if image is not None:
            image = np.ascontiguousarray(image, dtype=np.float64)
            n_rows, n_cols = image.shape
            self._page(
                IMAGES,
                {
                    "exposure_index": [int(index)] * n_rows,
                    "exposure_time": [t_e] * n_rows,
                    "row": list(range(n_rows)),
                    "mean_image": image,
                },
                shapes={"mean_image": (n_cols,)},
            )

    def dynamics(
        self,
        fits: Sequence[DynamicsFit],
        diffusion: DiffusionFit,
        model: str,
        n_exposures: int = 0,
    ) -> None:
        """Emit the ``dynamics`` rows of one fit (one row per partition)."""
        n_q = len(fits)
        if n_q == 0:
            return
        fit_index = self._fits
        self._fits += 1

        def col(name: str) -> list[Any]:
            return [getattr(f, name) for f in fits]

        self._page(
            DYNAMICS,
            {
                "fit_index": [fit_index] * n_q,
                "n_exposures": [int(n_exposures)] * n_q,
                "model": [model] * n_q,
                "partition": list(range(n_q)),
                "q": _floats(col("q")),
                "gamma": _floats(col("gamma")),
                "gamma_err": _floats(col("gamma_err")),
                "beta0": _floats(col("beta0")),
                "beta0_err": _floats(col("beta0_err")),
                "exponent": _floats(col("exponent")),
                "exponent_err": _floats(col("exponent_err")),
                "chi2": _floats(col("chi2")),
                "dof": _ints(col("dof")),
                "n_points": _ints(col("n_points")),
                "flags": [encode_flags(f.flags, DYNAMICS_FLAG_NAMES) for f in fits],
                "D": [float(diffusion.D)] * n_q,
                "D_err": [float(diffusion.D_err)] * n_q,
                "q_exponent": [float(diffusion.exponent)] * n_q,
                "q_exponent_err": [float(diffusion.exponent_err)] * n_q,
                "D_chi2": [float(diffusion.chi2)] * n_q,
                "D_dof": [int(diffusion.dof)] * n_q,
                "D_flags": [encode_flags(diffusion.flags, DYNAMICS_FLAG_NAMES)] * n_q,
                "D_status": [diffusion.status] * n_q,
                "D_error_scale": [float(diffusion.error_scale)] * n_q,
            },
        )

    def stop(
        self,
        exit_status: Literal["success", "abort", "fail"] = "success",
        reason: str = "",
    ) -> None:
        """Emit the stop document (once)."""
        if self.stopped:
            return
        self.stopped = True
        stop = self._bundle.compose_stop(exit_status=exit_status, reason=reason)
        self._emit("stop", dict(stop))
