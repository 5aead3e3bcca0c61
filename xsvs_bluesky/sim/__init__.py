"""Simulated XSVS acquisition: speckle physics, MAXIPIX detectors and plans.

- :class:`SpeckleModel`: Brownian speckle frames with known truth
  (``beta_true(q, t_e)``, ``kbar_true``, the flat field, q partitions);
- :class:`SimMaxipix`: ophyd-async detector writing HDF5 (StreamResource /
  StreamDatum, fly scans without Event documents);
- :class:`InlineMaxipix`: ophyd v1 detector with frames inline in Events;
- :func:`xsvs_series`: one run, one stream per exposure time.
"""

from xsvs_bluesky.sim.inline import InlineMaxipix
from xsvs_bluesky.sim.maxipix import (
    DATA_PATH,
    SimMaxipix,
    SpeckleFileWriter,
    directory_path_provider,
)
from xsvs_bluesky.sim.plans import stream_names, xsvs_series
from xsvs_bluesky.sim.speckle import MAXIPIX_GEOMETRY, FrameSampler, SpeckleModel

__all__ = [
    "DATA_PATH",
    "MAXIPIX_GEOMETRY",
    "FrameSampler",
    "InlineMaxipix",
    "SimMaxipix",
    "SpeckleFileWriter",
    "SpeckleModel",
    "directory_path_provider",
    "stream_names",
    "xsvs_series",
]
