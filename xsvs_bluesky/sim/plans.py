"""Bluesky plan of an XSVS series: one run, one stream per exposure time.

Document layout of the run :func:`xsvs_series` produces
---------------------------------------------------------
Start document (keys never contain ``.`` or ``/``)::

    plan_name = "xsvs_series", detectors = [<detector name>],
    sample_name, num_points (total frames),
    xsvs_exposure_times      [s, one per stream, in stream order]
    xsvs_frames_per_exposure [int, one per stream]
    xsvs_streams             [stream names]
    xsvs_acquisition         "fly" or "step"
    xsvs_geometry            Geometry.to_dict() (Angstrom, mm, px), if known
    xsvs_partitions          {q1, q2, qs, dq} or {centers, dq}, if given
    xsvs_simulation          SpeckleModel.to_dict(), simulated detectors only

Streams ``exposure_0, exposure_1, ...`` (zero-padded when there are more
than ten, so they sort), one per exposure time, each with its own
descriptor whose detector configuration holds the exposure time
(``<det>-acquire_time`` for ophyd-async, ``<det>_acquire_time`` for ophyd).

- fly (ophyd-async detectors, default for them): per stream stage, prepare
  (``TriggerInfo(number_of_events=n, livetime=t_e)``), declare the stream,
  kickoff, then collect while completing.  Only StreamResource/StreamDatum
  documents carry the frames (one HDF5 file per stream): **no Event
  documents**.  Consumers are driven by ``stream_datum``.
- step: per stream one Event per frame (``trigger_and_read``): inline
  arrays for ophyd v1 detectors, Events plus StreamDatum for ophyd-async.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Flyable, Preparable
from bluesky.utils import Msg
from ophyd_async.core import TriggerInfo

from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.sim.speckle import SpeckleModel

__all__ = ["stream_names", "xsvs_series"]

MsgGenerator = Generator[Msg, Any, Any]


def stream_names(n_exposures: int, prefix: str = "exposure") -> list[str]:
    """Names of the exposure streams: ``exposure_0 ..`` (zero-padded, sortable)."""
    width = len(str(max(n_exposures - 1, 0)))
    return [f"{prefix}_{i:0{width}d}" for i in range(n_exposures)]


def _check_keys(md: Mapping[str, Any], where: str = "md") -> None:
    for key, value in md.items():
        if not isinstance(key, str) or "." in key or "/" in key:
            raise OptionError(
                f"metadata key {where}[{key!r}] is invalid: keys must be strings "
                "without '.' or '/'"
            )
        if isinstance(value, Mapping):
            _check_keys(value, f"{where}[{key!r}]")


def _series_lists(
    exposure_times: Sequence[float], frames_per_exposure: int | Sequence[int]
) -> tuple[list[float], list[int]]:
    times = [float(t) for t in exposure_times]
    if not times or not all(math.isfinite(t) and t > 0 for t in times):
        raise OptionError(
            f"exposure_times = {list(exposure_times)!r}; give one or more finite "
            "times > 0, in s"
        )
    if isinstance(frames_per_exposure, int):
        frames = [frames_per_exposure] * len(times)
    else:
        frames = [int(n) for n in frames_per_exposure]
    if len(frames) != len(times) or min(frames) < 1:
        raise OptionError(
            f"frames_per_exposure = {frames_per_exposure!r}; give an integer >= 1 or "
            f"one per exposure time ({len(times)})"
        )
    return times, frames


def xsvs_series(
    detector: Any,
    exposure_times: Sequence[float],
    frames_per_exposure: int | Sequence[int],
    *,
    sample_name: str,
    geometry: Geometry | Mapping[str, Any] | None = None,
    partitions: Mapping[str, Any] | None = None,
    md: Mapping[str, Any] | None = None,
    fly: bool | None = None,
    flush_period: float = 0.5,
    deadtime: float = 0.0,
    exposure_signal: Any = None,
) -> MsgGenerator:
    """Acquire an XSVS series: one run, one stream per exposure time.

    Parameters
    ----------
    detector : device
        An ophyd-async ``StandardDetector`` (e.g.
        :class:`~xsvs_bluesky.sim.maxipix.SimMaxipix`) or an ophyd v1 device
        with an exposure-time signal (e.g.
        :class:`~xsvs_bluesky.sim.inline.InlineMaxipix`).
    exposure_times : sequence of float
        Exposure time of each stream, s.
    frames_per_exposure : int or sequence of int
        Frames per exposure time (one number or one per exposure).
    sample_name : str
        Recorded as ``sample_name`` in the start document.
    geometry : Geometry or mapping, optional
        Detector geometry; default the simulated detector's model geometry.
        Recorded as ``xsvs_geometry``.
    partitions : mapping, optional
        q partitions for the analysis (``{q1, q2, qs, dq}`` or
        ``{centers, dq}``, 1/Angstrom), recorded as ``xsvs_partitions``.
    md : mapping, optional
        More start metadata (overrides the defaults).
    fly : bool, optional
        Fly (no Event documents) or step; default fly when the detector is
        preparable and flyable.
    flush_period : float
        Fly: seconds between two collects while frames arrive.
    deadtime : float
        Dead time between frames, s (``TriggerInfo.deadtime``).
    exposure_signal : signal, optional
        Step scans with ophyd v1 detectors: the signal set to each exposure
        time (default ``detector.acquire_time``).

    Returns
    -------
    generator
        The plan (arguments are checked at once); run it with
        ``RE(xsvs_series(...))``.

    Raises
    ------
    ValueError
        On invalid times, frame counts, metadata keys, or ``fly=True`` for a
        detector that cannot fly.
    """
    times, frames = _series_lists(exposure_times, frames_per_exposure)
    names = stream_names(len(times))
    preparable = isinstance(detector, Preparable)
    if fly is None:
        fly = preparable and isinstance(detector, Flyable)
    if fly and not (preparable and isinstance(detector, Flyable)):
        raise OptionError(f"detector {detector.name!r} cannot fly; use fly=False")
    if not preparable:
        exposure_signal = exposure_signal or getattr(detector, "acquire_time", None)
        if exposure_signal is None:
            raise OptionError(
                f"detector {detector.name!r} has no acquire_time; give exposure_signal"
            )
    model = getattr(detector, "model", None)
    if geometry is None:
        geometry = getattr(model, "geometry", None)
    start: dict[str, Any] = {
        "plan_name": "xsvs_series",
        "detectors": [detector.name],
        "plan_args": {"exposure_times": times, "frames_per_exposure": frames},
        "num_points": sum(frames),
        "sample_name": sample_name,
        "xsvs_exposure_times": times,
        "xsvs_frames_per_exposure": frames,
        "xsvs_streams": names,
        "xsvs_acquisition": "fly" if fly else "step",
    }
    if geometry is not None:
        start["xsvs_geometry"] = (
            geometry.to_dict() if isinstance(geometry, Geometry) else dict(geometry)
        )
    if partitions is not None:
        start["xsvs_partitions"] = dict(partitions)
    if isinstance(model, SpeckleModel):
        start["xsvs_simulation"] = model.to_dict()
    start.update(md or {})
    _check_keys(start)

    def one_exposure(name: str, t_e: float, n: int) -> MsgGenerator:
        if fly:
            yield from bps.stage(detector, wait=True)
            info = TriggerInfo(number_of_events=n, livetime=t_e, deadtime=deadtime)
            yield from bps.prepare(detector, info, wait=True)
            yield from bps.declare_stream(detector, name=name, collect=True)
            yield from bps.kickoff(detector, wait=True)
            yield from bps.collect_while_completing(
                [detector], [detector], flush_period=flush_period, stream_name=name
            )
            yield from bps.unstage(detector, wait=True)
            return
        if preparable:
            yield from bps.stage(detector, wait=True)
            info = TriggerInfo(livetime=t_e, deadtime=deadtime)
            yield from bps.prepare(detector, info, wait=True)
        else:
            yield from bps.mv(exposure_signal, t_e)
        yield from bps.declare_stream(detector, name=name)
        for _ in range(n):
            yield from bps.trigger_and_read([detector], name=name)
        if preparable:
            yield from bps.unstage(detector, wait=True)

    def series() -> MsgGenerator:
        for name, t_e, n in zip(names, times, frames, strict=True):
            yield from one_exposure(name, t_e, n)

    plan = series()
    if not preparable:
        plan = bpp.stage_wrapper(plan, [detector])
    return bpp.run_wrapper(plan, md=start)
