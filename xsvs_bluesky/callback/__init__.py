"""The live XSVS analysis callback: raw bluesky documents in, a derived run out.

:class:`XSVSCallback` subscribes to a RunEngine (``RE.subscribe(cb)``) or any
``(name, doc)`` source.  An :class:`event_model.RunRouter` gives every raw
run its own analyser, which histograms frames as they arrive (inline arrays,
StreamResource/StreamDatum HDF5 files, legacy Resource/Datum), groups them by
(stream, exposure time) and publishes a derived run (:mod:`.derived`) to
``emit``.  An exception in the analysis never reaches the RunEngine: it is
logged and the derived run is stopped with ``exit_status="fail"`` and the
reason.  The per-run analyser (:class:`RunAnalyser`, built from a frozen
:class:`RunConfig` and a :class:`RunSink`, no callback needed) and
:class:`RunRecord` live in ``_run_analyser``; :class:`DaskShards`, which
hands the frames of each StreamDatum to Dask distributed workers, in
``_shards``.
"""

from __future__ import annotations

from xsvs_bluesky.callback._access import (
    FrameAccess,
    FrameFallback,
    HeldFrames,
    parse_path_map,
)
from xsvs_bluesky.callback._callback import XSVSCallback
from xsvs_bluesky.callback._frames import uri_to_path
from xsvs_bluesky.callback._run_analyser import (
    BINNING_KEY,
    RunAnalyser,
    RunConfig,
    RunRecord,
    RunSink,
    frame_binning,
)
from xsvs_bluesky.callback._shards import DaskShards

__all__ = [
    "BINNING_KEY",
    "DaskShards",
    "FrameAccess",
    "FrameFallback",
    "HeldFrames",
    "RunAnalyser",
    "RunConfig",
    "RunRecord",
    "RunSink",
    "XSVSCallback",
    "frame_binning",
    "parse_path_map",
    "uri_to_path",
]
