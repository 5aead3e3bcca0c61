"""Bookkeeping of a derived XSVS run for live consumers (private).

:class:`DerivedRunRouter` follows the documents of the current derived run
(``plan_name = "xsvs_analysis"``; other runs are ignored), keeps the latest
values per exposure and the frames/s, and calls hooks that the consumers of
:mod:`xsvs_bluesky.live` implement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from event_model import DocumentRouter, unpack_event_page

from xsvs_bluesky.core.dynamics import DiffusionFit
from xsvs_bluesky.derived import (
    DYNAMICS,
    DYNAMICS_FLAG_NAMES,
    HISTOGRAMS,
    PROGRESS,
    RESULTS,
)
from xsvs_bluesky.live._dynamics_text import diffusion_from_record
from xsvs_bluesky.results import (
    build_dynamics,
    decode_flags,
    layout_version,
    pivot_dynamics,
)

__all__ = ["DerivedRunRouter"]

_PLAN = "xsvs_analysis"


class DerivedRunRouter(DocumentRouter):
    """Bookkeeping shared by the live consumers of a derived run.

    Attributes
    ----------
    run_start : dict or None
        Start document of the current derived run (None outside one).
    snapshots : dict
        Latest values per exposure index: ``exposure_time``, ``n_frames``,
        ``q``, ``kbar``, ``beta``, ``beta_err`` (and every ``results`` key once
        the exposure's results event arrived).
    rate : float
        Frames per second between the last two progress events (NaN before).
    dynamics : pandas.DataFrame or None
        The latest dynamics table (``results.build_dynamics``).
    diffusion : DiffusionFit or None
        The latest ``Gamma = D q^2`` fit, rebuilt from the ``dynamics``
        event (its ``status`` and ``describe()`` say whether ``D`` stands).
    """

    def __init__(self) -> None:
        super().__init__()
        self.run_start: dict[str, Any] | None = None
        self._dynamics_keys: dict[str, Any] = {}
        self._n_points = 0
        self.streams: dict[str, str] = {}
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.history: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.final: set[int] = set()
        self.dynamics: Any = None
        self.diffusion: DiffusionFit | None = None
        self.rate = math.nan
        self._last: tuple[int | None, int, float] = (None, 0, 0.0)
        self._version = 1

    # -------------------------------------------------------- documents
    def start(self, doc: Any) -> None:
        if doc.get("plan_name") != _PLAN and "original_run_uid" not in doc:
            self.run_start = None
            return
        self.run_start = dict(doc)
        self._version = layout_version(doc)
        self.streams.clear()
        self.snapshots.clear()
        self.history.clear()
        self.final.clear()
        self.dynamics = None
        self.diffusion = None
        self.rate = math.nan
        self._last = (None, 0, float(doc.get("time", time.time())))
        self.on_start()

    def descriptor(self, doc: Any) -> None:
        if self.run_start is not None and doc.get("run_start") == self.run_start["uid"]:
            self.streams[doc["uid"]] = doc["name"]
            if doc["name"] == "dynamics":
                self._dynamics_keys = doc.get("data_keys", {})

    def event_page(self, doc: Any) -> Any:
        stream = self.streams.get(doc.get("descriptor", ""))
        if stream is None:
            return
        if self._version < 2:  # layout 1: one event per exposure
            for event in unpack_event_page(doc):
                self.event(event)
            return
        self._rows(stream, doc)

    def _rows(self, stream: str, doc: Any) -> None:
        """Layout 2: rows of one exposure (or one fit) in one EventPage."""
        data = {k: np.asarray(v) for k, v in doc["data"].items()}
        if not data or not len(doc["seq_num"]):
            return
        if stream == DYNAMICS.name:
            arrays = pivot_dynamics(data)
            names = self._dynamics_keys.get("flags", {}).get("flag_names", ())
            self.dynamics = build_dynamics(arrays, names)
            record = {
                k: np.asarray(v).ravel()[0] for k, v in arrays.items() if v.ndim == 1
            }
            if "D_flags" in record:  # layout 2: a bitmask, legend in the data key
                legend = self._dynamics_keys.get("D_flags", {}).get("flag_names", ())
                record["D_flags"] = ",".join(
                    decode_flags(int(record["D_flags"]), legend or DYNAMICS_FLAG_NAMES)
                )
            self.diffusion = diffusion_from_record(record)
            points = np.asarray(data.get("n_points", [0]), dtype=np.int64)
            self._n_points = int(points.max()) if points.size else 0
            self.on_dynamics()
            return
        index = int(data["exposure_index"][-1])
        if stream == HISTOGRAMS.name:
            n_q = int(data["partition"].max()) + 1
            snap = self.snapshots.setdefault(index, {})
            snap["probability"] = data["probability"].reshape(n_q, -1)
            return
        if stream not in (PROGRESS.name, RESULTS.name):
            return
        order = np.argsort(data["partition"], kind="stable")
        values: dict[str, Any] = {}
        for key, col in data.items():
            if key in ("partition", "flags"):
                continue
            if key in ("raw_stream", "estimator") or key in (
                "exposure_index",
                "exposure_time",
                "n_frames",
                "n_bins",
            ):
                values[key] = col[0].item()
            else:
                values[key] = col[order]
        if stream == PROGRESS.name:
            n_frames = int(values["n_frames"])
            self._rate(index, n_frames, float(doc["time"][-1]))
            self.snapshots.setdefault(index, {}).update(values)
            beta = np.asarray(values["beta"], dtype=np.float64)
            self.history.setdefault(index, []).append((n_frames, beta))
            self.on_progress(index)
        else:
            self.snapshots.setdefault(index, {}).update(values)
            self.final.add(index)
            self.on_result(index)

    def event(self, doc: Any) -> Any:
        stream = self.streams.get(doc.get("descriptor", ""))
        if stream is None:
            return
        data = doc["data"]
        if stream == "progress":
            index = int(data["exposure_index"])
            self._rate(index, int(data["n_frames"]), float(doc.get("time", 0.0)))
            snap = self.snapshots.setdefault(index, {})
            snap.update(data)
            beta = np.asarray(data["beta"], dtype=np.float64)
            self.history.setdefault(index, []).append((int(data["n_frames"]), beta))
            self.on_progress(index)
        elif stream == "results":
            index = int(data.get("exposure_index", len(self.final)))
            self.snapshots.setdefault(index, {}).update(data)
            self.final.add(index)
            self.on_result(index)
        elif stream == "dynamics":
            arrays = {k: np.asarray([v]) for k, v in data.items()}
            names = self._dynamics_keys.get("flags", {}).get("flag_names", ())
            self.dynamics = build_dynamics(arrays, names)
            self.diffusion = diffusion_from_record(
                {k: np.asarray(v).item() for k, v in data.items() if np.ndim(v) == 0}
            )
            points = np.asarray(data.get("n_points", [0]), dtype=np.int64)
            self._n_points = int(points.max()) if points.size else 0
            self.on_dynamics()

    def stop(self, doc: Any) -> None:
        if self.run_start is not None and doc.get("run_start") == self.run_start["uid"]:
            self.on_stop(doc)
            self.run_start = None

    def _rate(self, index: int, n_frames: int, t: float) -> None:
        last_index, last_frames, last_t = self._last
        new = n_frames - last_frames if last_index == index else n_frames
        if t > last_t and new >= 0:
            self.rate = new / (t - last_t)
        self._last = (index, n_frames, t)

    # -------------------------------------------------------- hooks
    def on_start(self) -> None:
        """Call when a derived run starts."""

    def on_progress(self, index: int) -> None:
        """Call after a progress event of exposure ``index``."""

    def on_result(self, index: int) -> None:
        """Call after the results event of exposure ``index``."""

    def on_dynamics(self) -> None:
        """Call after the dynamics event."""

    def on_stop(self, doc: Mapping[str, Any]) -> None:
        """Call at the stop document of the derived run."""

    @property
    def run_label(self) -> str:
        """``derived <uid8> of raw <uid8> (sample)`` of the current run."""
        start = self.run_start or {}
        text = f"derived run {str(start.get('uid', ''))[:8]}"
        raw = start.get("original_run_uid")
        if raw:
            text += f" of raw run {str(raw)[:8]}"
        if start.get("sample_name"):
            text += f" ({start['sample_name']})"
        return text
