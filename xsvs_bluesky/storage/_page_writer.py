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
- the writes go out from a worker thread, in order, so the analysis goes on
  while they travel; the stop document waits for all of them, then writes
  the stop metadata, so the run is complete in Tiled when ``stop`` returns.
  One worker: concurrent appends to the embedded server's DuckDB table
  storage fail ("No active transaction, cannot commit") and lose rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["PageWriter", "is_page_run"]

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


def _arrow_type(data_key: Mapping[str, Any]) -> Any:
    import pyarrow as pa

    if data_key.get("dtype") == "string":
        return pa.string()
    dtype = np.dtype(data_key.get("dtype_numpy") or "<f8")
    return pa.from_numpy_dtype(dtype)


class PageWriter:
    """Write the documents of one derived run (layout >= 2) into a container.

    Parameters
    ----------
    container : tiled client container
        A ``CatalogOfBlueskyRuns`` container.
    max_workers : int
        Writing threads.  Keep 1 for DuckDB table storage (the embedded
        server): concurrent appends there fail and lose rows.
    """

    def __init__(self, container: Any, *, max_workers: int = 1) -> None:
        self._container = container
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="xsvs-tiled-writer"
        )
        self._root: Any = None
        self._access_tags: Any = None
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._data_keys: dict[str, Mapping[str, Any]] = {}
        self._nodes: dict[str, Any] = {}  # stream name -> its container
        self._tables: dict[str, Any] = {}
        self._arrays: dict[tuple[str, str], Any] = {}
        self._rows: dict[tuple[str, str], int] = {}
        self._last: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []

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
        from tiled.structures.core import Spec

        stream = doc["name"]
        self._streams[doc["uid"]] = stream
        if stream in self._data_keys:
            return
        self._data_keys[stream] = doc.get("data_keys", {})
        metadata = {
            k: v
            for k, v in doc.items()
            if k not in ("name", "object_keys", "run_start")
        }

        def create() -> None:
            self._nodes[stream] = self._root.create_container(
                key=stream,
                metadata=metadata,
                specs=[Spec("BlueskyEventStream", version="3.0"), Spec("composite")],
                access_tags=self._access_tags,
            ).base

        self._submit(stream, create)

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
        self._submit(stream, lambda: self._write_page(stream, doc))

    def _stop(self, doc: Mapping[str, Any]) -> None:
        try:
            for future in list(self._last.values()):
                future.exception()  # wait; errors are collected in _run
            if self._root is not None:
                self._root.update_metadata(metadata={"stop": dict(doc)})
            if self._errors:
                raise self._errors[0]
        finally:
            self._pool.shutdown(wait=True)

    # ---------------------------------------------------------- writing
    def _submit(self, stream: str, job: Callable[[], None]) -> None:
        with self._lock:
            before = self._last.get(stream)
            self._last[stream] = self._pool.submit(self._run, before, job)

    def _run(self, before: Future[None] | None, job: Callable[[], None]) -> None:
        if before is not None:
            before.exception()  # keep the stream's order
        if self._errors:
            return
        try:
            job()
        except BaseException as err:  # reported at the stop document
            logger.exception("writing a derived run to Tiled failed")
            self._errors.append(err)

    def _write_page(self, stream: str, doc: Mapping[str, Any]) -> None:
        import pyarrow as pa

        node = self._nodes[stream]
        keys = self._data_keys[stream]
        n = len(doc["seq_num"])
        columns: dict[str, Any] = {
            "seq_num": pa.array(doc["seq_num"], pa.int64()),
            "time": pa.array(doc["time"], pa.float64()),
        }
        for key, values in doc["data"].items():
            data_key = keys.get(key, {})
            if data_key.get("dtype") == "array":
                self._write_array(stream, node, key, np.asarray(values), data_key)
                continue
            columns[key] = pa.array(values, _arrow_type(data_key))
        for key, values in doc["timestamps"].items():
            if keys.get(key, {}).get("dtype") != "array":
                columns[f"ts_{key}"] = pa.array(values, pa.float64())
        table = pa.table(columns)
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
        dtype = data_key.get("dtype_numpy")
        array = np.ascontiguousarray(values, dtype=dtype)
        client = self._arrays.get((stream, key))
        offset = self._rows.get((stream, key), 0)
        self._rows[stream, key] = offset + array.shape[0]
        if client is None:
            dims = ("time", *data_key.get("dims", ()))
            if len(dims) != array.ndim:
                dims = ("time", *(f"{key}_dim_{i}" for i in range(1, array.ndim)))
            self._arrays[stream, key] = node.write_array(
                array,
                key=key,
                metadata=dict(data_key),
                dims=dims,
                access_tags=self._access_tags,
            )
        else:
            client.patch(array, offset=(offset,), extend=True)
