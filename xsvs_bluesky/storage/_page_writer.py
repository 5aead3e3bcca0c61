"""Write a derived run (layout 2) into Tiled: one request per EventPage.

Private; :func:`xsvs_bluesky.storage.make_tiled_writer` routes derived runs
here.  The nodes are those ``bluesky_tiled_plugins.TiledWriter`` creates (a
``BlueskyRun`` container, per stream a ``BlueskyEventStream``/``composite``
container holding the ``internal`` table of scalar columns with ``seq_num``,
``time`` and ``ts_<key>``, and one array node per array field), so every
Bluesky Tiled client reads them as it reads TiledWriter's.  What differs:

- each EventPage is written as it arrives, with one append (rows) and one
  write per array field, so a completed exposure is in Tiled at once
  instead of at the stop document (TiledWriter writes per ``batch_size``
  events, one request per event at ``batch_size=1``);
- array nodes get the dimension names of their data key (``dims``), the
  first being ``time`` as for the table columns;
- the writes go out from one worker thread, so the analysis goes on while
  they travel; the worker writes the stream of the oldest waiting page with
  every page of that stream waiting then, so pages that come while another
  stream is written join their stream's next write (a server slower than
  the analysis gets one request per stream for the backlog: after the
  replay's raw stop, the last exposure's pages joined the one before it's
  instead of following them); the stop document waits for all of them,
  then writes the stop metadata, so the run is complete in Tiled when
  ``stop`` returns.  One thread: Tiled shares one DuckDB connection between
  the requests of a server; concurrent appends failed ("No active
  transaction, cannot commit") and lost rows (our data folders' servers now
  take them one at a time, decision 0010; other servers may not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["PageWriter", "create_stream_node", "is_page_run"]

logger = logging.getLogger(__name__)


def is_page_run(start: Mapping[str, Any]) -> bool:
    """Whether a start document is a derived run of layout >= 2."""
    if start.get("plan_name") != "xsvs_analysis":
        return False
    xsvs = start.get("xsvs") or {}
    try:
        return int(xsvs.get("schema_version", 1)) >= 2
    except (TypeError, ValueError):
        return False


def create_stream_node(
    root: Any,
    descriptor: Mapping[str, Any],
    access_tags: Any,
    *,
    clean: Callable[[Any], Any] | None = None,
) -> Any:
    """Create a stream's node as TiledWriter does; return its plain container.

    A ``BlueskyEventStream``/``composite`` container named by the
    descriptor, whose metadata is the descriptor without ``name``,
    ``object_keys`` and ``run_start`` (made JSON-safe when ``json``).  Both
    our writers (derived runs, replayed raw runs) make their streams here.
    """
    from tiled.structures.core import Spec

    metadata = {
        k: v
        for k, v in descriptor.items()
        if k not in ("name", "object_keys", "run_start")
    }
    node = root.create_container(
        key=str(descriptor["name"]),
        metadata=metadata if clean is None else clean(metadata),
        specs=[Spec("BlueskyEventStream", version="3.0"), Spec("composite")],
        access_tags=access_tags,
    )
    # a CompositeClient's own nodes; a plain container client is that
    return getattr(node, "base", node)


def _retry(request: Callable[[], Any], attempts: int = 4) -> Any:
    """Run ``request``, again after a server error (HTTP 5xx).

    Two appends that create tables of one schema at once (parallel streams)
    get an HTTP 500 from Tiled's SQL table storage; the second try works.
    Appends here are not retried by the Tiled client itself because a lost
    response could duplicate rows; a 5xx means the server did not write them.
    """
    import httpx

    for attempt in range(attempts):
        try:
            return request()
        except httpx.HTTPStatusError as err:
            if err.response.status_code < 500 or attempt == attempts - 1:
                raise
            logger.info("Tiled answered %s; trying again", err.response.status_code)
            time.sleep(0.05 * (attempt + 1))
    return None


def _merge(
    batch: list[tuple[str, Mapping[str, Any]]],
) -> list[tuple[str, dict[str, Any]]]:
    """Join the pages of each stream in ``batch`` (order kept per stream)."""
    out: dict[str, dict[str, Any]] = {}
    for stream, page in batch:
        joined = out.get(stream)
        if joined is None:
            out[stream] = {
                "seq_num": [page["seq_num"]],
                "time": [page["time"]],
                "data": {k: [v] for k, v in page["data"].items()},
                "timestamps": {k: [v] for k, v in page["timestamps"].items()},
            }
            continue
        joined["seq_num"].append(page["seq_num"])
        joined["time"].append(page["time"])
        for key, value in page["data"].items():
            joined["data"][key].append(value)
        for key, value in page["timestamps"].items():
            joined["timestamps"][key].append(value)
    for joined in out.values():
        joined["seq_num"] = _join(joined["seq_num"])
        joined["time"] = _join(joined["time"])
        for part in ("data", "timestamps"):
            for key, parts in joined[part].items():
                joined[part][key] = _join(parts)
    return list(out.items())


def _join(parts: list[Any]) -> Any:
    """One column from the columns of pages (numpy if any of them is)."""
    if len(parts) == 1:
        return parts[0]
    if any(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate([np.asarray(p) for p in parts])
    return [v for p in parts for v in p]


_INT64 = {"dtype": "integer", "dtype_numpy": "<i8"}
_FLOAT64 = {"dtype": "number", "dtype_numpy": "<f8"}


def _column(values: Any, data_key: Mapping[str, Any]) -> Any:
    """Return the Arrow array of one column, of its data key's type.

    Built from buffers: ``pyarrow.array`` imports pandas (~0.3 s, in the
    writer's thread while the analysis runs) to ask whether its input is a
    pandas object.  Values with a None in them go through
    ``pyarrow.array``.
    """
    import pyarrow as pa

    if data_key.get("dtype") == "string":
        if any(v is None for v in values):
            return pa.array(values, pa.string())
        encoded = [str(v).encode() for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return pa.Array.from_buffers(
            pa.string(),
            len(encoded),
            [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
        )
    dtype = np.dtype(data_key.get("dtype_numpy") or "<f8")
    if not isinstance(values, np.ndarray) and any(v is None for v in values):
        return pa.array(values, pa.from_numpy_dtype(dtype))
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    data = np.packbits(array, bitorder="little") if dtype == np.bool_ else array
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(array.dtype), len(array), [None, pa.py_buffer(data)]
    )


class PageWriter:
    """Write the documents of one derived run (layout >= 2) into a container.

    Pages are queued and written by one worker thread, a stream at a time:
    when pages pile up (the server is slower than the analysis) the pages
    of one stream waiting together are written as one (one append, one
    array write).

    Parameters
    ----------
    container : tiled client container
        A ``CatalogOfBlueskyRuns`` container.
    """

    def __init__(self, container: Any) -> None:
        self._container = container
        self._root: Any = None
        self._access_tags: Any = None
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._data_keys: dict[str, Mapping[str, Any]] = {}
        self._descriptors: dict[str, Mapping[str, Any]] = {}  # first per stream
        self._nodes: dict[str, Any] = {}  # stream name -> its container
        self._tables: dict[str, Any] = {}
        self._arrays: dict[tuple[str, str], Any] = {}
        self._rows: dict[tuple[str, str], int] = {}
        self._queue: list[tuple[str, Mapping[str, Any]]] = []
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._errors: list[BaseException] = []
        self._worker = threading.Thread(
            target=self._work, name="xsvs-tiled-page-writer", daemon=True
        )
        self._worker.start()

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Handle one document of the run."""
        handler: Callable[[Any], None] | None = getattr(self, f"_{name}", None)
        if handler is not None:
            handler(doc)

    # ---------------------------------------------------------- documents
    def _start(self, doc: Mapping[str, Any]) -> None:
        from tiled.structures.core import Spec

        start = dict(doc)
        self._access_tags = start.pop("tiled_access_tags", None)
        self._root = self._container.create_container(
            key=start["uid"],
            metadata={"start": start},
            specs=[Spec("BlueskyRun", version="3.0")],
            access_tags=self._access_tags,
        )

    def _descriptor(self, doc: Mapping[str, Any]) -> None:
        stream = doc["name"]
        self._streams[doc["uid"]] = stream
        if stream in self._data_keys:
            return
        self._data_keys[stream] = doc.get("data_keys", {})
        self._descriptors[stream] = doc

    def _event(self, doc: Mapping[str, Any]) -> None:
        self._event_page(
            {
                "descriptor": doc["descriptor"],
                "seq_num": [doc["seq_num"]],
                "time": [doc["time"]],
                "data": {k: [v] for k, v in doc["data"].items()},
                "timestamps": {k: [v] for k, v in doc["timestamps"].items()},
            }
        )

    def _event_page(self, doc: Mapping[str, Any]) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream is None or not len(doc["seq_num"]):
            return
        with self._cond:
            self._queue.append((stream, doc))
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the pages handed over so far are written.

        Returns False if ``timeout`` (s) passed first.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._queue or self._busy), timeout=timeout
            )

    def discard(self, wait_s: float = 0.0) -> None:
        """Write nothing more: drop the queued pages, end the worker.

        Waits up to ``wait_s`` for a request in flight to end.
        """
        with self._cond:
            self._queue.clear()
            self._closed = True
            self._cond.notify_all()
        self._worker.join(wait_s)

    def _stop(self, doc: Mapping[str, Any]) -> None:
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()
            self._closed = True
            self._cond.notify_all()
        self._worker.join()
        if self._root is not None:
            self._root.update_metadata(metadata={"stop": dict(doc)})
        if self._errors:
            raise self._errors[0]

    # ---------------------------------------------------------- writing
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                # every page waiting for the stream of the oldest one: pages
                # that come while a stream is written join their stream's
                # next write (one request for the backlog of a slow server)
                stream = self._queue[0][0]
                batch = [item for item in self._queue if item[0] == stream]
                self._queue = [item for item in self._queue if item[0] != stream]
                self._busy = True
            try:
                if not self._errors:
                    for stream, page in _merge(batch):
                        self._write_page(stream, page)
            except BaseException as err:  # raised at the stop document
                logger.debug("writing a derived run to Tiled failed", exc_info=True)
                self._errors.append(err)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _node(self, stream: str) -> Any:
        node = self._nodes.get(stream)
        if node is None:
            node = self._nodes[stream] = create_stream_node(
                self._root, self._descriptors[stream], self._access_tags
            )
        return node

    def _write_page(self, stream: str, doc: Mapping[str, Any]) -> None:
        import pyarrow as pa

        node = self._node(stream)
        keys = self._data_keys[stream]
        n = len(doc["seq_num"])
        columns: dict[str, Any] = {
            "seq_num": _column(doc["seq_num"], _INT64),
            "time": _column(doc["time"], _FLOAT64),
        }
        for key, values in doc["data"].items():
            data_key = keys.get(key, {})
            if data_key.get("dtype") == "array":
                self._write_array(stream, node, key, np.asarray(values), data_key)
                continue
            columns[key] = _column(values, data_key)
        for key, values in doc["timestamps"].items():
            if keys.get(key, {}).get("dtype") != "array":
                columns[f"ts_{key}"] = _column(values, _FLOAT64)
        table = pa.Table.from_arrays(list(columns.values()), names=list(columns))
        assert table.num_rows == n
        client = self._tables.get(stream)
        if client is None:
            metadata = {k: v for k, v in keys.items() if k in table.column_names}
            client = node.create_appendable_table(
                schema=table.schema,
                key="internal",
                metadata=metadata,
                access_tags=self._access_tags,
            )
            self._tables[stream] = client
        _retry(lambda: client.append_partition(0, table))

    def _write_array(
        self,
        stream: str,
        node: Any,
        key: str,
        values: np.ndarray[Any, Any],
        data_key: Mapping[str, Any],
    ) -> None:
        from xsvs_bluesky.storage._light import write_array

        dtype = data_key.get("dtype_numpy")
        array = np.ascontiguousarray(values, dtype=dtype)
        client = self._arrays.get((stream, key))
        offset = self._rows.get((stream, key), 0)
        self._rows[stream, key] = offset + array.shape[0]
        if client is None:
            dims = ("time", *data_key.get("dims", ()))
            if len(dims) != array.ndim:
                dims = ("time", *(f"{key}_dim_{i}" for i in range(1, array.ndim)))
            self._arrays[stream, key] = write_array(
                node,
                array,
                key=key,
                metadata=dict(data_key),
                dims=dims,
                access_tags=self._access_tags,
            )
        else:
            client.patch(array, offset=(offset,), extend=True)
