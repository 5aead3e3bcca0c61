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

Derived runs of layout 2 (``xsvs.schema_version >= 2``) are not given to
the TiledWriter: :class:`RunWriter` routes them to a writer that stores
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

__all__ = ["DEFAULT_BATCH_SIZE", "LIVE_BATCH_SIZE", "RunWriter", "make_tiled_writer"]

#: Events or StreamDatum rows cached before a write (raw runs).
DEFAULT_BATCH_SIZE = 50
#: Write every document at once (derived runs, live viewers).
LIVE_BATCH_SIZE = 1


class RunWriter:
    """A ``(name, doc)`` callback writing runs into one Tiled container.

    Derived runs of layout >= 2 go to a page writer (one request per
    EventPage, streams in parallel); every other run goes to
    :attr:`tiled_writer`, a ``bluesky_tiled_plugins.TiledWriter``.

    Parameters
    ----------
    container : tiled client container
        A ``CatalogOfBlueskyRuns`` container.
    tiled_writer : TiledWriter
        Writer of the other runs.
    """

    def __init__(self, container: Any, tiled_writer: Any) -> None:
        self.container = container
        self.tiled_writer = tiled_writer
        self._runs: dict[str, PageWriter] = {}  # run uid -> writer
        self._descriptors: dict[str, str] = {}  # descriptor uid -> run uid

    def _writer(self, name: str, doc: Any) -> PageWriter | None:
        if name == "start":
            if not is_page_run(doc):
                return None
            writer = self._runs[doc["uid"]] = PageWriter(self.container)
            return writer
        if name in ("descriptor", "stop"):
            run = doc.get("run_start", "")
            if name == "descriptor" and run in self._runs:
                self._descriptors[doc["uid"]] = run
            if name == "stop":
                return self._runs.pop(run, None)
            return self._runs.get(run)
        if name in ("event", "event_page"):
            run = self._descriptors.get(doc.get("descriptor", ""))
            return None if run is None else self._runs.get(run)
        return None

    def __call__(self, name: str, doc: Any) -> Any:
        """Write one document."""
        writer = self._writer(name, doc)
        if writer is None:
            return self.tiled_writer(name, doc)
        if name == "stop":
            self._descriptors = {
                d: r for d, r in self._descriptors.items() if r != doc["run_start"]
            }
        writer(name, doc)
        return None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the pages of open layout-2 derived runs are written.

        Their page writers write in a worker thread; this returns once each
        has written what it was given (False if ``timeout`` s passed first).
        TiledWriter runs write as they are called: nothing to wait for.
        """
        return all(w.flush(timeout) for w in self._runs.values())

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
        for writer in writers:
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
        of layout >= 2 through the page writer, every other run through a
        ``bluesky_tiled_plugins.TiledWriter`` (its ``tiled_writer``).

    Raises
    ------
    ValueError
        If ``batch_size`` < 1.
    """
    from bluesky_tiled_plugins import TiledWriter

    if batch_size < 1:
        raise OptionError(f"batch_size = {batch_size}; give an integer >= 1")
    return RunWriter(
        container,
        TiledWriter(
            container, batch_size=batch_size, max_array_size=max_array_size, **kwargs
        ),
    )
