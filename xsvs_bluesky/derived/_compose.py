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

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from event_model import compose_run
from numpy.typing import NDArray

from xsvs_bluesky._version import __version__
from xsvs_bluesky.analysis import FLAG_FIT_FAILED, ExposureResult
from xsvs_bluesky.core.dynamics import DYNAMICS_FLAGS, DiffusionFit, DynamicsFit
from xsvs_bluesky.core.estimators import FLAGS

__all__ = [
    "DYNAMICS_STREAM",
    "PROGRESS_STREAM",
    "RESULTS_STREAM",
    "DerivedRun",
    "estimator_key",
]

logger = logging.getLogger(__name__)

PROGRESS_STREAM = "progress"
RESULTS_STREAM = "results"
DYNAMICS_STREAM = "dynamics"
Emitter = Callable[[str, dict[str, Any]], object]  # any return value is ignored


def estimator_key(name: str) -> str:
    """Data-key stem of an estimator, e.g. ``"low-count"`` -> ``"low_count"``."""
    return name.replace("-", "_").replace(".", "_").replace("/", "_")


def _key(
    dtype: str, shape: Sequence[int], units: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Make a DataKey; numeric keys carry ``dtype_numpy``."""
    json_type = {"f": "number", "i": "integer", "U": "string"}[dtype[1]]
    out: dict[str, Any] = {
        "source": "xsvs_bluesky",
        "dtype": "array" if shape else json_type,
        "shape": [int(s) for s in shape],
    }
    if json_type != "string":
        out["dtype_numpy"] = dtype
    if units is not None:
        out["units"] = units
    out.update(extra)
    return out


class _FlagBits:
    """Stable bit assignment for estimator flag strings (bit i = ``1 << i``)."""

    def __init__(self, known: Sequence[str] = (*FLAGS, FLAG_FIT_FAILED)) -> None:
        self.names: list[str] = list(known)

    def encode(self, flags: Sequence[Sequence[str]]) -> NDArray[np.int64]:
        out = np.zeros(len(flags), dtype=np.int64)
        for j, names in enumerate(flags):
            for name in names:
                if name not in self.names:
                    self.names.append(name)
                bit = self.names.index(name)
                if bit < 63:
                    out[j] |= np.int64(1) << np.int64(bit)
        return out


def _pad(arr: NDArray[Any], shape: tuple[int, ...], fill: float) -> NDArray[Any]:
    out = np.full(shape, fill, dtype=arr.dtype if fill == 0 else np.float64)
    out[tuple(slice(0, s) for s in arr.shape)] = arr
    return out


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
        The ``xsvs`` dict of the start document (settings, geometry, ...).
    """

    def __init__(
        self,
        emit: Sequence[Emitter],
        *,
        raw_start: Mapping[str, Any],
        xsvs: Mapping[str, Any],
    ) -> None:
        self._targets = list(emit)
        metadata: dict[str, Any] = {
            "plan_name": "xsvs_analysis",
            "plan_type": "analysis",
            "original_run_uid": raw_start["uid"],
            "xsvs": {"package_version": __version__, **dict(xsvs)},
        }
        if isinstance(raw_start.get("scan_id"), int):
            metadata["scan_id"] = raw_start["scan_id"]
        sample = raw_start.get("sample_name", raw_start.get("sample"))
        if isinstance(sample, str):
            metadata["sample_name"] = sample
        if isinstance(raw_start.get("plan_name"), str):
            metadata["raw_plan_name"] = raw_start["plan_name"]
        self._bundle = compose_run(metadata=metadata)
        self.start_doc = self._bundle.start_doc
        self.uid: str = self.start_doc["uid"]
        self._descriptors: dict[str, Any] = {}
        self._flag_bits = _FlagBits()
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

    def _event(
        self, stream: str, data_keys: dict[str, Any], data: dict[str, Any], **desc: Any
    ) -> None:
        if stream not in self._descriptors:
            # our layouts are fixed (checked against the schema in the
            # tests); validating the results descriptor costs ~30 ms
            bundle = self._bundle.compose_descriptor(
                name=stream, data_keys=data_keys, validate=False, **desc
            )
            self._descriptors[stream] = bundle
            self._emit("descriptor", dict(bundle.descriptor_doc))
        now = time.time()
        # keys and shapes are ours and fixed; schema validation of the
        # arrays would cost ~20 ms per event
        event = self._descriptors[stream].compose_event(
            data=data, timestamps=dict.fromkeys(data, now), time=now, validate=False
        )
        self._emit("event", dict(event))

    def progress(self, index: int, result: ExposureResult) -> None:
        """Emit one ``progress`` event for exposure number ``index``."""
        n_q = int(result.q.size)
        data_keys = {
            "raw_stream": _key("<U0", ()),
            "exposure_index": _key("<i8", ()),
            "exposure_time": _key("<f8", (), "s"),
            "n_frames": _key("<i8", ()),
            "q": _key("<f8", (n_q,), "1/Angstrom", dims=["q"]),
        }
        for name in ("kbar", "kbar_err"):
            data_keys[name] = _key("<f8", (n_q,), "counts/pixel/frame", dims=["q"])
        for name in ("beta", "beta_err"):
            data_keys[name] = _key("<f8", (n_q,), dims=["q"])
        data = {
            "raw_stream": result.stream,
            "exposure_index": int(index),
            "exposure_time": float(result.exposure_time),
            "n_frames": int(result.n_frames),
            "q": result.q,
            "kbar": result.kbar,
            "kbar_err": result.kbar_err,
            "beta": result.beta,
            "beta_err": result.beta_err,
        }
        self._event(PROGRESS_STREAM, data_keys, data)

    def results(self, results: Sequence[ExposureResult]) -> None:
        """Emit the ``results`` stream: one event per exposure, in order."""
        if not results:
            return
        n_q = int(results[0].q.size)
        n_k = max(max(r.n_bins for r in results), 1)
        n_f = max(max(r.n_frames for r in results), 1)
        extra = sorted({name for r in results for name in r.extra_estimates})
        flags = [self._flag_bits.encode(r.flags) for r in results]
        q1 = (n_q,)
        count_units = "counts/pixel/frame"
        data_keys: dict[str, Any] = {
            "raw_stream": _key("<U0", ()),
            "exposure_index": _key("<i8", ()),
            "exposure_time": _key("<f8", (), "s"),
            "n_frames": _key("<i8", ()),
            "n_bins": _key("<i8", ()),
            "estimator": _key("<U0", ()),
            "q": _key("<f8", q1, "1/Angstrom", dims=["q"]),
            "n_pixels": _key("<i8", q1, dims=["q"]),
            "kbar": _key("<f8", q1, count_units, dims=["q"]),
            "kbar_err": _key("<f8", q1, count_units, dims=["q"]),
            "kbar_frame_std": _key("<f8", q1, count_units, dims=["q"]),
            "beta": _key("<f8", q1, dims=["q"]),
            "beta_err": _key("<f8", q1, dims=["q"]),
            "M": _key("<f8", q1, dims=["q"]),
            "M_err": _key("<f8", q1, dims=["q"]),
            "n_samples": _key("<i8", q1, dims=["q"]),
            "flags": _key(
                "<i8", q1, dims=["q"], flag_names=list(self._flag_bits.names)
            ),
            "counts": _key("<i8", (n_q, n_k), dims=["q", "k"]),
            "probability": _key("<f8", (n_q, n_k), dims=["q", "k"]),
            "probability_std": _key("<f8", (n_q, n_k), dims=["q", "k"]),
            "trace": _key("<f8", (n_f, n_q), count_units, dims=["frame", "q"]),
            "intensity": _key("<f8", q1, count_units, dims=["q"]),
            "intensity_err": _key("<f8", q1, count_units, dims=["q"]),
        }
        for name in extra:
            stem = estimator_key(name)
            data_keys[f"beta_{stem}"] = _key("<f8", q1, dims=["q"])
            data_keys[f"beta_{stem}_err"] = _key("<f8", q1, dims=["q"])
        shapes = {r.mean_image.shape for r in results if r.mean_image is not None}
        image_shape = shapes.pop() if len(shapes) == 1 else None
        if image_shape is not None:
            data_keys["mean_image"] = _key(
                "<f8", image_shape, count_units, dims=["row", "col"]
            )
        for index, (r, bits) in enumerate(zip(results, flags, strict=True)):
            data: dict[str, Any] = {
                "raw_stream": r.stream,
                "exposure_index": index,
                "exposure_time": float(r.exposure_time),
                "n_frames": int(r.n_frames),
                "n_bins": int(r.n_bins),
                "estimator": r.estimator,
                "q": r.q,
                "n_pixels": r.n_pixels.astype(np.int64),
                "kbar": r.kbar,
                "kbar_err": r.kbar_err,
                "kbar_frame_std": r.kbar_frame_std,
                "beta": r.beta,
                "beta_err": r.beta_err,
                "M": r.M,
                "M_err": r.M_err,
                "n_samples": np.array([e.n_samples for e in r.estimates], np.int64),
                "flags": bits,
                "counts": _pad(r.counts.reshape(n_q, -1), (n_q, n_k), 0),
                "probability": _pad(r.probability.reshape(n_q, -1), (n_q, n_k), 0),
                "probability_std": _pad(
                    r.probability_std.reshape(n_q, -1), (n_q, n_k), 0
                ),
                "trace": _pad(r.trace, (n_f, n_q), np.nan),
                "intensity": r.intensity,
                "intensity_err": r.intensity_err,
            }
            for name in extra:
                stem = estimator_key(name)
                est = r.extra_estimates.get(name)
                beta = np.full(n_q, np.nan)
                err = np.full(n_q, np.nan)
                if est is not None:
                    beta = np.array([e.beta for e in est], dtype=np.float64)
                    err = np.array([e.beta_err for e in est], dtype=np.float64)
                data[f"beta_{stem}"] = beta
                data[f"beta_{stem}_err"] = err
            if image_shape is not None:
                data["mean_image"] = (
                    r.mean_image
                    if r.mean_image is not None
                    else np.full(image_shape, np.nan)
                )
            self._event(
                RESULTS_STREAM,
                data_keys,
                data,
                configuration={
                    "xsvs": {
                        "data": {"flag_names": list(self._flag_bits.names)},
                        "timestamps": {"flag_names": time.time()},
                        "data_keys": {
                            "flag_names": {
                                "source": "xsvs_bluesky",
                                "dtype": "array",
                                "shape": [len(self._flag_bits.names)],
                            }
                        },
                    }
                },
            )

    def dynamics(
        self, fits: Sequence[DynamicsFit], diffusion: DiffusionFit, model: str
    ) -> None:
        """Emit the ``dynamics`` stream: one event, arrays over partitions."""
        n_q = len(fits)
        bits = _FlagBits(DYNAMICS_FLAGS)
        flags = bits.encode([f.flags for f in fits])
        q1 = (n_q,)
        data_keys: dict[str, Any] = {
            "model": _key("<U0", ()),
            "q": _key("<f8", q1, "1/Angstrom", dims=["q"]),
            "gamma": _key("<f8", q1, "1/s", dims=["q"]),
            "gamma_err": _key("<f8", q1, "1/s", dims=["q"]),
            "beta0": _key("<f8", q1, dims=["q"]),
            "beta0_err": _key("<f8", q1, dims=["q"]),
            "exponent": _key("<f8", q1, dims=["q"]),
            "exponent_err": _key("<f8", q1, dims=["q"]),
            "chi2": _key("<f8", q1, dims=["q"]),
            "dof": _key("<i8", q1, dims=["q"]),
            "n_points": _key("<i8", q1, dims=["q"]),
            "flags": _key("<i8", q1, dims=["q"], flag_names=list(bits.names)),
            "D": _key("<f8", (), "Angstrom^2/s"),
            "D_err": _key("<f8", (), "Angstrom^2/s"),
            "q_exponent": _key("<f8", ()),
            "q_exponent_err": _key("<f8", ()),
            "D_chi2": _key("<f8", ()),
            "D_dof": _key("<i8", ()),
            "D_flags": _key("<U0", ()),
        }

        def col(name: str, dtype: type = np.float64) -> NDArray[Any]:
            return np.array([getattr(f, name) for f in fits], dtype=dtype)

        data = {
            "model": model,
            "q": col("q"),
            "gamma": col("gamma"),
            "gamma_err": col("gamma_err"),
            "beta0": col("beta0"),
            "beta0_err": col("beta0_err"),
            "exponent": col("exponent"),
            "exponent_err": col("exponent_err"),
            "chi2": col("chi2"),
            "dof": col("dof", np.int64),
            "n_points": col("n_points", np.int64),
            "flags": flags,
            "D": float(diffusion.D),
            "D_err": float(diffusion.D_err),
            "q_exponent": float(diffusion.exponent),
            "q_exponent_err": float(diffusion.exponent_err),
            "D_chi2": float(diffusion.chi2),
            "D_dof": int(diffusion.dof),
            "D_flags": ",".join(diffusion.flags),
        }
        self._event(DYNAMICS_STREAM, data_keys, data)

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
