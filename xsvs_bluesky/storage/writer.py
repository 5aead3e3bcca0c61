"""The TiledWriter every part of xsvs_bluesky uses, configured once.

``bluesky_tiled_plugins.TiledWriter`` (not bluesky's own copy, which fails
on inline 2-d arrays) with:

- ``max_array_size=0``: every inline array of an Event (frames, but also
  small per-q result arrays of a few elements) is stored as a Tiled array
  node.  The default (16) stores arrays of <= 16 elements in the SQL table,
  which fails for some shapes and dtypes;
- a batch size chosen for the job (see :data:`DEFAULT_BATCH_SIZE`).

Batch size: the writer caches Event rows and StreamDatum index ranges and
writes them when ``batch_size`` have accumulated, and at the stop document.
Each write costs one or a few HTTP requests (~10-120 ms for an inline
256x256 frame).  ``batch_size=1`` makes every Event and StreamDatum visible
in Tiled at once (live viewers, remote consumers polling Tiled) at that
price per document; a large batch is cheapest but shows nothing until the
run stops and holds the cached inline arrays in memory.  The default, 50,
bounds the memory (50 inline MAXIPIX frames are 6.5 MB) and the delay of
step scans.  Derived runs emit few Events (throttled progress, one per
exposure at the end): use ``batch_size=1`` for them so progress shows live.

Raw runs of a legacy replay (``plan_type == "legacy_replay"``) are not
given to the TiledWriter: a writer of the same nodes registers each
exposure's frames with one request (:mod:`._raw_writer`), without
importing ``bluesky_tiled_plugins``.

Derived runs of layout 2 (``xsvs.schema_version >= 2``) are not given to
the TiledWriter either: :class:`RunWriter` routes them to a writer that stores
each EventPage with one request as it arrives (a completed exposure is in
Tiled at once) and writes the streams in parallel, into the same nodes
TiledWriter would create.  ``batch_size`` does not apply to them.

Externally written files (HDF5 referenced by StreamResource) are registered
by reference: the server must be allowed to read them (its *readable
storage*; :func:`~xsvs_bluesky.storage.server.open_catalogs` sets this up for
the embedded server), otherwise registration fails with "Refusing to serve
... outside the readable storage area".
"""

from __future__ import annotations

from typing import Any

from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.storage._page_writer import PageWriter, is_page_run
from xsvs_bluesky.storage._raw_writer import RawRunWriter, is_raw_replay_run

__all__ = ["DEFAULT_BATCH_SIZE", "LIVE_BATCH_SIZE", "RunWriter", "make_tiled_writer"]

#: Events or StreamDatum rows cached before a write (raw runs).
DEFAULT_BATCH_SIZE = 50
#: Write every document at once (derived runs, live viewers).
LIVE_BATCH_SIZE = 1


class RunWriter:
    """A ``(name, doc)`` callback writing runs into one Tiled container.

    Derived runs of layout >= 2 go to a page writer (one request per
    EventPage, streams in parallel); the raw runs of a legacy replay to a
    raw-run writer (one registration per exposure,
    :mod:`xsvs_bluesky.storage._raw_writer`); every other run to
    :attr:`tiled_writer`, a ``bluesky_tiled_plugins.TiledWriter`` made when
    the first such run starts (a process writing only the first two kinds
    never imports ``bluesky_tiled_plugins``).

    Parameters
    ----------
    container : tiled client container
        A catalog of Bluesky runs (a ``CatalogOfBlueskyRuns`` client, or a
        plain container client of one).
    batch_size : int
        Events or StreamDatum rows cached before a write (TiledWriter runs;
        Event rows of replayed raw runs).
    **tiled_options
        Passed on to ``TiledWriter`` (``max_array_size``, ``backup_directory``,
        ``patches``...).
    """

    def __init__(
        self,
        container: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **tiled_options: Any,
    ) -> None:
        self.container = container
        self.batch_size = batch_size
        self._tiled_options = tiled_options
        self._tiled_writer: Any = None
        self._runs: dict[str, PageWriter | RawRunWriter] = {}  # run uid -> writer
        self._descriptors: dict[str, str] = {}  # descriptor uid -> run uid
        self._resources: dict[str, str] = {}  # stream resource uid -> run uid
        self._other_runs: set[str] = set()  # runs given to the TiledWriter

    @property
    def tiled_writer(self) -> Any:
        """The ``bluesky_tiled_plugins.TiledWriter`` of the other runs (made now)."""
        if self._tiled_writer is None:
            from bluesky_tiled_plugins import TiledWriter

            from xsvs_bluesky.storage._light import bluesky_client

            self._tiled_writer = TiledWriter(
                bluesky_client(self.container),
                batch_size=self.batch_size,
                **self._tiled_options,
            )
        return self._tiled_writer

    def _writer(self, name: str, doc: Any) -> PageWriter | RawRunWriter | None:
        if name == "start":
            uid = doc["uid"]
            writer: PageWriter | RawRunWriter
            if is_page_run(doc):
                writer = PageWriter(self.container)
            elif is_raw_replay_run(doc):
                writer = RawRunWriter(self.container, batch_size=self.batch_size)
            else:
                self._other_runs.add(uid)
                return None
            self._runs[uid] = writer
            return writer
        if name in ("descriptor", "stop"):
            run = doc.get("run_start", "")
            if name == "descriptor" and run in self._runs:
                self._descriptors[doc["uid"]] = run
            if name == "stop":
                self._other_runs.discard(run)
                return self._runs.pop(run, None)
            return self._runs.get(run)
        if name in ("event", "event_page", "stream_datum"):
            run = self._descriptors.get(doc.get("descriptor", ""))
            return None if run is None else self._runs.get(run)
        if name == "stream_resource":
            run = doc.get("run_start") or ""
            if not run and len(self._runs) == 1 and not self._other_runs:
                run = next(iter(self._runs))
            if run in self._runs:
                self._resources[doc["uid"]] = run
            return self._runs.get(run)
        return None

    def __call__(self, name: str, doc: Any) -> Any:
        """Write one document."""
        writer = self._writer(name, doc)
        if writer is None:
            return self.tiled_writer(name, doc)
        if name == "stop":
            run = doc["run_start"]
            self._descriptors = {d: r for d, r in self._descriptors.items() if r != run}
            self._resources = {s: r for s, r in self._resources.items() if r != run}
        writer(name, doc)
        return None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the pages of open layout-2 derived runs are written.

        Their page writers write in a worker thread; this returns once each
        has written what it was given (False if ``timeout`` s passed first).
        The other runs are written as they are called: nothing to wait for.
        """
        return all(
            w.flush(timeout) for w in self._runs.values() if isinstance(w, PageWriter)
        )

    def discard(self, wait_s: float = 0.0) -> None:
        """Drop the runs in progress without writing more of them.

        For a writer given up after a failure (its runs go to a backup and
        are written again whole); it is not used again.  Page writers end
        their worker threads, waiting up to ``wait_s`` each for a request in
        flight.
        """
        writers = list(self._runs.values())
        self._runs.clear()
        self._descriptors.clear()
        self._resources.clear()
        for writer in writers:
            if isinstance(writer, PageWriter):
                writer.discard(wait_s)


def make_tiled_writer(
    container: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_array_size: int = 0,
    **kwargs: Any,
) -> Any:
    """Return a ``bluesky_tiled_plugins.TiledWriter`` writing runs into ``container``.

    Parameters
    ----------
    container : tiled.client.container.Container
        A ``CatalogOfBlueskyRuns`` container (e.g. ``Catalogs.raw``).
    batch_size : int
        Events/StreamDatum rows cached before a write; 1 writes each document
        at once (see the module notes for the trade-off).
    max_array_size : int
        Inline arrays larger than this are written as array nodes; keep 0.
    **kwargs
        Passed on to ``TiledWriter`` (``backup_directory``, ``patches``,
        ``spec_to_mimetype``, ``normalizer``...).

    Returns
    -------
    RunWriter
        A ``(name, doc)`` callback for ``RunEngine.subscribe``: derived runs
        of layout >= 2 through the page writer, raw runs of a legacy replay
        through the raw-run writer, every other run through a
        ``bluesky_tiled_plugins.TiledWriter`` (its ``tiled_writer``, made
        when the first such run starts).

    Raises
    ------
    ValueError
        If ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise OptionError(f"batch_size = {batch_size}; give an integer >= 1")
    return RunWriter(
        container, batch_size=batch_size, max_array_size=max_array_size, **kwargs
    )
