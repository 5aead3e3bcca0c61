r"""The simulated XSVS series of the demo, and the live wiring it runs through.

The demo's physics (:func:`demo_model`): Brownian particles seen on a
simulated 256x256 MAXIPIX, q resolved to about a pixel (rings of constant q
1e-4 1/Angstrom wide) and a flat field, so the pixels of each analysis
partition (five rings, 5e-4 1/Angstrom wide) have their own mean counts and
contrasts and the partition's truth is the ring truth
``sum(mu_i^2 beta_i) / sum(mu_i^2)`` (``SpeckleModel.ring_beta``).
:func:`sim_detector` makes the detector and :func:`series_plan` the fly scan
over :data:`DEMO_EXPOSURE_TIMES`.

The live path of ``docs/how-to/live-at-beamline.md`` is re-exported here:
:class:`LiveSession` wires a RunEngine to Tiled and to the analysis, which
runs in a :class:`QueuedCallback` worker so the RunEngine never waits for it;
:func:`close_engine` ends a RunEngine's event loop; :class:`AbortOnSignal`
makes the first Ctrl-C or SIGTERM abort the running plan at once.  The
``xsvs-bluesky demo`` command, the IPython ``profile_collection`` and the
tests use the same pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xsvs_bluesky.live import AbortOnSignal, LiveSession, QueuedCallback, close_engine
from xsvs_bluesky.sim.speckle import SpeckleModel

__all__ = [
    "AbortOnSignal",
    "DEMO_EXPOSURE_TIMES",
    "DEMO_RINGS",
    "LiveSession",
    "QueuedCallback",
    "close_engine",
    "demo_model",
    "demo_partitions",
    "series_plan",
    "sim_detector",
]

#: Exposure times of the demo series: 8 doubling from 5e-5 s, in s.
DEMO_EXPOSURE_TIMES: tuple[float, ...] = tuple(5e-5 * 2.0**i for i in range(8))
#: Rings of constant q (``SpeckleModel.ring_width``) per demo partition.
DEMO_RINGS = 5


def demo_model(seed: int = 0) -> SpeckleModel:
    """Physics of the demo: known ``beta(q, t_e)`` over the 8 exposures.

    Brownian particles with ``D = 4e7 Angstrom^2/s`` and ``beta0 = 0.2``
    seen with 2000 counts/px/s (``kbar`` ~0.1 at 5e-5 s to ~13 at 6.4e-3 s),
    10 % pixel efficiency spread (the flat field) and rings of constant q
    1e-4 1/Angstrom wide (about one pixel), five per analysis partition.

    Parameters
    ----------
    seed : int
        Seed of the pixel efficiencies and of the frames.

    Returns
    -------
    SpeckleModel
    """
    return SpeckleModel(count_rate=2000.0, ring_width=1e-4, seed=int(seed))


def demo_partitions(model: SpeckleModel) -> dict[str, Any]:
    """Return the q partitions of the demo: six from 1.5e-3 to 7.5e-3 1/A.

    Each is five whole rings of the model (5e-4 1/Angstrom wide); every
    other one, so that ``beta`` spans the range from nearly ``beta0`` to
    nearly 0 over the exposures.

    Parameters
    ----------
    model : SpeckleModel
        The simulated physics (its rings).

    Returns
    -------
    dict
        ``{"centers": [...], "dq": half_width}`` in 1/Angstrom, as recorded in
        the start document (``xsvs_partitions``); these select exactly the
        pixels of the rings (so the ring truth holds exactly).
    """
    rings = model.partitions(0.0015, 0.0075, rings_per_partition=DEMO_RINGS)
    centers = [float(c) for c in rings.centers[::2]]
    return {"centers": centers, "dq": float(rings.half_width)}


def sim_detector(
    directory: str | Path,
    model: SpeckleModel | None = None,
    *,
    name: str = "maxipix",
    chunk_frames: int = 64,
    threads: int = 1,
    compression: str = "none",
) -> Any:
    """Make a connected :class:`~xsvs_bluesky.sim.SimMaxipix` writing to ``directory``.

    Create the RunEngine first: ophyd-async connects devices in its event
    loop.

    Parameters
    ----------
    directory : path
        Where the HDF5 files go (for Tiled: inside its readable storage).
    model : SpeckleModel, optional
        Physics of the frames (default :func:`demo_model`).
    name : str
        Device name, the frame data key.
    chunk_frames : int
        Frames drawn and written per step.
    threads : int
        Threads of the frame sampler.
    compression : str
        HDF5 compression of the frame files, one of
        :data:`~xsvs_bluesky.options.COMPRESSIONS` (default ``"none"``; the
        ``demo`` command uses ``"blosc-lz4"``: its frames take about a sixth
        of their 131 kB uncompressed).

    Returns
    -------
    xsvs_bluesky.sim.SimMaxipix
    """
    from ophyd_async.core import init_devices

    from xsvs_bluesky.sim import SimMaxipix, directory_path_provider

    provider = directory_path_provider(directory)
    with init_devices():
        det = SimMaxipix(
            provider,
            model if model is not None else demo_model(),
            chunk_frames=chunk_frames,
            threads=threads,
            compression=compression,
            name=name,
        )
    return det


def series_plan(
    detector: Any,
    *,
    frames: int,
    exposure_times: Iterable[float] = DEMO_EXPOSURE_TIMES,
    partitions: Mapping[str, Any] | None = None,
    sample_name: str = "simulated Brownian latex",
    md: Mapping[str, Any] | None = None,
) -> Any:
    """Plan the demo's fly scan: one stream per exposure time.

    Parameters
    ----------
    detector : SimMaxipix
        The simulated detector (its model's geometry is recorded).
    frames : int
        Frames per exposure.
    exposure_times : iterable of float
        Exposure times, s.
    partitions : mapping, optional
        q partitions recorded in the start document (default
        :func:`demo_partitions` of the detector's model).
    sample_name : str
        Recorded as ``sample_name``.
    md : mapping, optional
        More start metadata.

    Returns
    -------
    generator
        The plan of :func:`xsvs_bluesky.sim.xsvs_series`.
    """
    from xsvs_bluesky.sim import xsvs_series

    parts = (
        dict(partitions) if partitions is not None else demo_partitions(detector.model)
    )
    return xsvs_series(
        detector,
        list(exposure_times),
        int(frames),
        sample_name=sample_name,
        partitions=parts,
        md=dict(md or {}),
    )
