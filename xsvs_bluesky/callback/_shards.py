"""The frames of each StreamDatum analysed on Dask distributed workers.

:class:`DaskShards` hands one task per StreamDatum to a Dask cluster: the
worker opens the HDF5 file itself (the path after the path map: it must see
the files), reads the datum's frames, histograms them and sums their image
with an analysis built from the setup's :func:`shard_recipe`, and returns the
partial analysis as plain numpy arrays
(:meth:`~xsvs_bluesky.analysis.ExposureAnalysis.to_arrays`).  The
:class:`~xsvs_bluesky.callback.RunAnalyser` absorbs the partials in
acquisition order, so its derived run equals an in-process analysis bit for
bit.

Transport: Dask moves tasks and results between its processes with its own
serialisation (numpy buffers as raw frames, the rest with pickle or
cloudpickle): that is the trusted cluster's transport, between processes of
one operator.  Nothing read from the document bus is ever unpickled; what
is sent holds only numpy arrays, numbers, strings and this module's task
function, imported by name on the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from xsvs_bluesky.analysis import (
    AnalysisSetup,
    ExposureAnalysis,
    analysis_from_recipe,
    shard_recipe,
)
from xsvs_bluesky.callback._hdf5 import HDF5FrameReader
from xsvs_bluesky.errors import FrameDataError, OptionError

__all__ = ["DaskShards", "DatumTask", "analyse_datum"]

logger = logging.getLogger(__name__)

PIECE_FRAMES = 32
"""Frames a worker reads and histograms at a time (as the in-process path)."""

_CACHE_SIZE = 4
_templates: OrderedDict[str, ExposureAnalysis] = OrderedDict()
_templates_lock = threading.Lock()


@dataclass(frozen=True)
class DatumTask:
    """The frames of one StreamDatum, for a worker to read.

    ``resource`` is the StreamResource with its ``uri`` already mapped to
    the path the workers see.
    """

    stream: str
    exposure_time: float | None
    resource: Mapping[str, Any]
    datum_shape: tuple[int, ...]
    start: int
    stop: int


def _template(recipe: Mapping[str, Any]) -> ExposureAnalysis:
    """Return the worker's empty analysis of a recipe, built once per recipe."""
    key = str(recipe["key"])
    with _templates_lock:
        found = _templates.get(key)
        if found is not None:
            _templates.move_to_end(key)
            return found
    built = analysis_from_recipe(recipe)
    with _templates_lock:
        _templates[key] = built
        while len(_templates) > _CACHE_SIZE:
            _templates.popitem(last=False)
    return built


def analyse_datum(
    recipe: Mapping[str, Any],
    resource: Mapping[str, Any],
    datum_shape: Sequence[int],
    start: int,
    stop: int,
    timeout_s: float,
) -> dict[str, NDArray[Any]]:
    """Read, histogram and sum the frames of one datum (runs on a worker).

    Parameters
    ----------
    recipe : mapping
        :func:`~xsvs_bluesky.analysis.shard_recipe` of the run's setup.
    resource : mapping
        The StreamResource, ``uri`` mapped to a path this worker reads.
    datum_shape : sequence of int
        Shape of one datum index (descriptor).
    start, stop : int
        Datum indices.
    timeout_s : float
        How long to wait for frames not yet written, s.

    Returns
    -------
    dict of str to numpy.ndarray
        The partial analysis (:meth:`ExposureAnalysis.to_arrays`).

    Raises
    ------
    FrameDataError
        If the frames are not in the file after ``timeout_s``: names the
        file, the dataset and the indices.
    """
    analysis = _template(recipe).spawn("")
    reader = HDF5FrameReader(resource, datum_shape, reuse_buffer=True)
    deadline = time.monotonic() + max(float(timeout_s), 0.0)
    fpi = reader.frames_per_index
    at = int(start)
    try:
        while at < stop:
            piece = min(int(stop), at + max(1, PIECE_FRAMES // fpi))
            frames = reader.read(at, piece, partial=True)
            if frames is None:
                if time.monotonic() > deadline:
                    exists = "exists" if reader.path.is_file() else "does not exist"
                    raise FrameDataError(
                        f"{reader.path} ({exists}, dataset "
                        f"{reader.dataset_path!r}): datum indices [{at}, {stop}) "
                        f"not readable by the Dask worker after {timeout_s:g} s; "
                        "the workers must see the detector's files (path map)"
                    )
                time.sleep(0.02)
                continue
            analysis.update(frames)
            at += max(1, frames.shape[0] // fpi)
    finally:
        reader.close()
    return analysis.to_arrays()


class DaskShards:
    """Analyse the frames of each StreamDatum on Dask distributed workers.

    Give it to :class:`~xsvs_bluesky.callback.XSVSCallback` (``shards=``).
    Build it with :meth:`connect`, or around a ``distributed.Client``.

    Parameters
    ----------
    client : distributed.Client
        Client of a running cluster whose workers import this package and
        see the detector's files.
    max_pending : int, optional
        Datums in flight per run before the callback waits for the oldest
        (bounds the memory of partials not yet merged); default four per
        worker thread.
    read_timeout_s : float
        How long a worker waits for frames not yet written, s.
    """

    def __init__(
        self,
        client: Any,
        *,
        max_pending: int | None = None,
        read_timeout_s: float = 30.0,
        cluster: Any = None,
    ) -> None:
        self.client = client
        self._cluster = cluster
        if max_pending is None:
            threads = sum(client.nthreads().values()) or 1
            max_pending = 4 * threads
        self.max_pending = max(int(max_pending), 1)
        self.read_timeout_s = float(read_timeout_s)
        self.submitted = 0
        """Datums handed to the workers so far."""
        self._recipes: dict[int, tuple[AnalysisSetup, Any]] = {}
        self._refused: dict[int, str] = {}

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        memory_limit: str = "1GiB",
        max_pending: int | None = None,
        read_timeout_s: float = 30.0,
    ) -> DaskShards:
        """Connect to a scheduler, or start a local cluster (``local:N``).

        Parameters
        ----------
        address : str
            ``tcp://HOST:PORT`` (any address ``distributed.Client`` takes), or
            ``local:N`` / ``local`` for ``N`` (default 2) single-thread worker
            processes on 127.0.0.1.
        memory_limit : str
            Memory limit of each local worker (Dask spills, then pauses it).

        Raises
        ------
        OptionError
            On a bad ``local:N``.
        OSError
            If the scheduler cannot be reached.
        """
        from distributed import Client, LocalCluster

        cluster = None
        if address == "local" or address.startswith("local:"):
            count = address.partition(":")[2] or "2"
            if not count.isdigit() or int(count) < 1:
                raise OptionError(
                    f"--dask {address!r}: give local:N with N >= 1 workers, or a "
                    "scheduler address tcp://HOST:PORT"
                )
            cluster = LocalCluster(
                n_workers=int(count),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=memory_limit,
            )
            client = Client(cluster)
        else:
            client = Client(address, timeout="10s")
        return cls(
            client,
            max_pending=max_pending,
            read_timeout_s=read_timeout_s,
            cluster=cluster,
        )

    @property
    def n_workers(self) -> int:
        """Workers of the cluster now."""
        return len(self.client.nthreads())

    def recipe_for(self, setup: AnalysisSetup) -> Any:
        """Return the setup's recipe, sent once to every worker (a Future).

        Raises
        ------
        OptionError
            If the setup cannot be analysed in parts.
        """
        key = id(setup)
        if key in self._refused:
            raise OptionError(self._refused[key])
        found = self._recipes.get(key)
        if found is not None and found[0] is setup:
            return found[1]
        try:
            recipe = shard_recipe(setup)
        except OptionError as err:
            self._refused[key] = str(err)
            raise
        [future] = self.client.scatter([recipe], broadcast=True, hash=False)
        self._recipes[key] = (setup, future)  # the setup keeps its id unique
        return future

    def submit(self, recipe: Any, task: DatumTask) -> Any:
        """Start the analysis of one datum; return its Future."""
        self.submitted += 1
        return self.client.submit(
            analyse_datum,
            recipe,
            dict(task.resource),
            list(task.datum_shape),
            task.start,
            task.stop,
            self.read_timeout_s,
            pure=False,
        )

    def close(self) -> None:
        """Close the client and the local cluster it started."""
        self._recipes.clear()
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskShards:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
