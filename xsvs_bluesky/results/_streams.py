"""Event streams of a derived run, from documents or from Tiled (private).

A :class:`StreamSource` gives the start and stop documents and, per stream,
the descriptor's data keys and configuration and each data key stacked over
events on the first axis.  :class:`MemorySource` holds documents already in
memory; :class:`TiledSource` reads a stored run one array at a time, on first
use (one HTTP request per array), so a table needs only the arrays it shows.
:mod:`xsvs_bluesky.results` builds its tables and arrays from a source.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import NotFoundError, RunNotFoundError

__all__ = [
    "ANALYSIS_PLAN_NAME",
    "MemorySource",
    "RunNotFoundError",
    "StreamData",
    "StreamSource",
    "StreamView",
    "TiledSource",
]

ANALYSIS_PLAN_NAME = "xsvs_analysis"
"""``plan_name`` of every derived XSVS run."""

_SKIP_COLUMNS = {"seq_num", "time"}
_MISSING = object()


@dataclass(frozen=True, eq=False)
class StreamData:
    """One event stream: descriptor data keys, configuration, stacked data."""

    data_keys: Mapping[str, Any]
    configuration: Mapping[str, Any]
    arrays: Mapping[str, NDArray[Any]]


def _stack(values: list[Any], data_key: Mapping[str, Any]) -> NDArray[Any]:
    dtype = data_key.get("dtype_numpy") or None
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out


def _is_derived(start: Mapping[str, Any]) -> bool:
    return start.get("plan_name") == ANALYSIS_PLAN_NAME or "original_run_uid" in start


def _flag_names(
    data_keys: Mapping[str, Any], configuration: Mapping[str, Any], key: str
) -> tuple[str, ...]:
    names = data_keys.get(key, {}).get("flag_names")
    if not names:
        names = configuration.get("xsvs", {}).get("data", {}).get("flag_names") or ()
    return tuple(str(n) for n in names)


class StreamSource:
    """The documents and arrays of one derived run (abstract).

    Attributes
    ----------
    start : dict
        Start document.
    stop : dict or None
        Stop document, None while the run is open.
    """

    def __init__(self, start: Mapping[str, Any], stop: Mapping[str, Any] | None):
        self.start = dict(start)
        self.stop = None if stop is None else dict(stop)

    @property
    def stream_names(self) -> tuple[str, ...]:
        """Names of the run's streams."""
        raise NotImplementedError

    def data_keys(self, stream: str) -> Mapping[str, Any]:
        """Return the data keys of the stream's descriptor (empty if no stream)."""
        raise NotImplementedError

    def configuration(self, stream: str) -> Mapping[str, Any]:
        """Return the configuration of the stream's descriptor."""
        raise NotImplementedError

    def has(self, stream: str, key: str) -> bool:
        """Whether ``stream`` holds data ``key``."""
        raise NotImplementedError

    def array(self, stream: str, key: str) -> NDArray[Any]:
        """Return ``key`` of ``stream`` stacked over events (KeyError if absent)."""
        raise NotImplementedError

    def prefetch(self, stream: str, keys: Iterable[str]) -> None:
        """Read these keys of ``stream`` now, if that is cheaper together.

        A source in memory has nothing to do; a Tiled run asks for them at
        once (the keys it lacks are skipped).
        """

    def flag_names(self, stream: str, key: str = "flags") -> tuple[str, ...]:
        """Names of the bits of the bit-mask ``key`` (data key or configuration)."""
        return _flag_names(self.data_keys(stream), self.configuration(stream), key)

    def view(self, stream: str) -> StreamView:
        """Return a read-only mapping ``key -> array`` of one stream."""
        return StreamView(self, stream)


class StreamView(Mapping[str, NDArray[Any]]):
    """The arrays of one stream as a mapping; each is read on first access."""

    def __init__(self, source: StreamSource, stream: str) -> None:
        self._source = source
        self._stream = stream

    def __getitem__(self, key: str) -> NDArray[Any]:
        if not self._source.has(self._stream, key):
            raise KeyError(key)
        return self._source.array(self._stream, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._source.has(self._stream, key)

    def __iter__(self) -> Iterator[str]:
        keys = self._source.data_keys(self._stream)
        return (k for k in list(keys) if self._source.has(self._stream, k))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class MemorySource(StreamSource):
    """A derived run held as documents in memory.

    Parameters
    ----------
    docs : iterable of (name, doc)
        Documents (``event`` or ``event_page``); other runs' are ignored.
    uid : str, optional
        uid, or its first characters, of the derived run; default the last
        derived run in ``docs``.

    Raises
    ------
    RunNotFoundError
        If ``docs`` hold no matching derived run.
    """

    def __init__(
        self, docs: Iterable[tuple[str, Mapping[str, Any]]], uid: str | None = None
    ) -> None:

        docs = list(docs)
        starts = [d for n, d in docs if n == "start" and _is_derived(d)]
        if uid is not None:
            starts = [d for d in starts if str(d["uid"]).startswith(uid)]
        if not starts:
            what = "derived XSVS run" if uid is None else f"derived run {uid!r}"
            raise RunNotFoundError(f"the documents hold no {what}")
        start = starts[-1]
        run_uid = start["uid"]
        stop = next(
            (d for n, d in docs if n == "stop" and d.get("run_start") == run_uid),
            None,
        )
        super().__init__(start, stop)
        descriptors = {
            d["uid"]: d
            for n, d in docs
            if n == "descriptor" and d.get("run_start") == run_uid
        }
        # columns per stream, gathered page by page (an EventPage is already
        # columnar; a layout-2 stream has thousands of rows)
        seq: dict[str, list[int]] = {}
        columns: dict[str, dict[str, list[Any]]] = {}
        for name, doc in docs:
            if name not in ("event", "event_page"):
                continue
            desc = descriptors.get(doc["descriptor"])
            if desc is None:
                continue
            stream = desc["name"]
            cols = columns.setdefault(stream, {})
            nums = seq.setdefault(stream, [])
            if name == "event_page":
                n = len(doc["seq_num"])
                nums.extend(doc["seq_num"])
                values: Mapping[str, Any] = doc["data"]
            else:
                n = 1
                nums.append(doc["seq_num"])
                values = {k: [v] for k, v in doc["data"].items()}
            for key in desc.get("data_keys", {}):
                col = cols.setdefault(key, [])
                if key in values:
                    col.extend(values[key])
                else:
                    col.extend([_MISSING] * n)
        self.streams: dict[str, StreamData] = {}
        for desc in descriptors.values():
            if desc["name"] in self.streams:
                continue
            name = desc["name"]
            order = np.argsort(
                np.asarray(seq.get(name, []), dtype=np.int64), kind="stable"
            )
            data_keys = desc.get("data_keys", {})
            arrays = {}
            for key, col in columns.get(name, {}).items():
                if any(v is _MISSING for v in col):
                    continue
                arrays[key] = _stack([col[i] for i in order], data_keys.get(key, {}))
            if name not in columns:
                arrays = {key: _stack([], data_keys.get(key, {})) for key in data_keys}
            self.streams[name] = StreamData(
                data_keys, desc.get("configuration", {}), arrays
            )

    @property
    def stream_names(self) -> tuple[str, ...]:  # noqa: D102
        return tuple(self.streams)

    def data_keys(self, stream: str) -> Mapping[str, Any]:  # noqa: D102
        found = self.streams.get(stream)
        return {} if found is None else found.data_keys

    def configuration(self, stream: str) -> Mapping[str, Any]:  # noqa: D102
        found = self.streams.get(stream)
        return {} if found is None else found.configuration

    def has(self, stream: str, key: str) -> bool:  # noqa: D102
        return stream in self.streams and key in self.streams[stream].arrays

    def array(self, stream: str, key: str) -> NDArray[Any]:  # noqa: D102
        return self.streams[stream].arrays[key]


class TiledSource(StreamSource):
    """A derived run stored in Tiled, read one array at a time on first use.

    Parameters
    ----------
    run : BlueskyRun client
        A run of a ``CatalogOfBlueskyRuns``.

    Raises
    ------
    RunNotFoundError
        If ``run`` is not a derived XSVS run.
    """

    def __init__(self, run: Any) -> None:
        start = dict(run.metadata.get("start") or {})
        if not _is_derived(start):
            raise RunNotFoundError(
                f"run {start.get('uid')} has plan_name {start.get('plan_name')!r}, "
                f"not {ANALYSIS_PLAN_NAME!r}; give a derived run from the processed "
                "catalog"
            )
        stop = run.metadata.get("stop")
        super().__init__(start, None if stop is None else dict(stop))
        self._run = run
        self._names: tuple[str, ...] | None = None  # listed on first need
        self._meta: dict[str, Mapping[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._tables: dict[str, dict[str, NDArray[Any]] | None] = {}
        self._cache: dict[tuple[str, str], NDArray[Any]] = {}

    def _open(self, stream: str) -> None:
        if stream in self._nodes:
            return
        client = None
        if self._names is None or stream in self._names:
            try:
                client = self._run[stream]  # no listing of the run first
            except KeyError:
                pass
        if client is None:
            self._meta[stream], self._nodes[stream] = {}, {}
            return
        self._meta[stream] = dict(client.metadata)
        base = getattr(client, "base", None)
        if base is None and _is_plain_container(client):  # light clients
            base = client
        if base is None:  # pragma: no cover - older (MongoDB-backed) layout
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                dataset = client.read()
            for key in dataset.data_vars:
                self._cache[stream, str(key)] = np.asarray(dataset[key].values)
            self._nodes[stream] = {str(k): None for k in dataset.data_vars}
            return
        self._nodes[stream] = dict(base.items())

    def _table(self, stream: str) -> dict[str, NDArray[Any]] | None:
        """Return the columns of a stream's table, in ``seq_num`` order."""
        if stream not in self._tables:
            node = self._nodes[stream].get("internal")
            table = None if node is None else _read_columns(node)
            if table is not None and "seq_num" in table:
                order = np.argsort(table["seq_num"], kind="stable")
                table = {k: v[order] for k, v in table.items()}
            self._tables[stream] = table
        return self._tables[stream]

    @property
    def stream_names(self) -> tuple[str, ...]:  # noqa: D102
        if self._names is None:
            self._names = tuple(self._run)
        return self._names

    def prefetch(self, stream: str, keys: Iterable[str]) -> None:
        """Read these keys of ``stream`` with a few requests in flight at once.

        Each array is one request, and a request costs the server more than
        sending a few kilobytes: four at a time overlap the client's and the
        server's work.
        """
        self._open(stream)
        nodes = self._nodes[stream]
        keys = [k for k in keys if self.has(stream, k)]
        arrays = [k for k in keys if nodes.get(k) is not None]
        arrays = [k for k in arrays if (stream, k) not in self._cache]
        table = stream not in self._tables and any(k not in nodes for k in keys)
        if len(arrays) + table < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=4) as pool:
            pending = [pool.submit(self._table, stream)] if table else []
            read = {k: pool.submit(nodes[k].read) for k in arrays}
            for future in pending:
                future.result()
            for key, future in read.items():
                self._cache[stream, key] = np.asarray(future.result())

    def data_keys(self, stream: str) -> Mapping[str, Any]:  # noqa: D102
        self._open(stream)
        return self._meta[stream].get("data_keys") or {}

    def configuration(self, stream: str) -> Mapping[str, Any]:  # noqa: D102
        self._open(stream)
        return self._meta[stream].get("configuration") or {}

    def has(self, stream: str, key: str) -> bool:  # noqa: D102
        self._open(stream)
        if key in _SKIP_COLUMNS or key.startswith("ts_") or key == "internal":
            return False
        if key in self._nodes[stream]:
            return True
        return "internal" in self._nodes[stream] and key in self.data_keys(stream)

    def array(self, stream: str, key: str) -> NDArray[Any]:  # noqa: D102
        if (stream, key) in self._cache:
            return self._cache[stream, key]
        if not self.has(stream, key):
            raise NotFoundError(f"stream {stream!r} has no data key {key!r}")
        node = self._nodes[stream].get(key)
        if node is not None:
            value = np.asarray(node.read())
        else:
            table = self._table(stream)
            if table is None or key not in table:
                raise NotFoundError(f"stream {stream!r} has no data key {key!r}")
            value = _column_array(table[key], self.data_keys(stream).get(key, {}))
        self._cache[stream, key] = value
        return value


def _is_plain_container(client: Any) -> bool:
    """Whether ``client`` is a container node read as such (no Bluesky class)."""
    family = getattr(client, "structure_family", None)
    return str(getattr(family, "value", family)) == "container" and isinstance(
        client, Mapping
    )


def _read_columns(node: Any) -> dict[str, NDArray[Any]]:
    """Every column of a table node as a numpy array.

    A light client (:mod:`xsvs_bluesky.storage._light`) reads Arrow, without
    pandas; Tiled's own table client reads a pandas DataFrame.  Integers with
    missing values become floats with NaN either way.
    """
    read_arrow = getattr(node, "read_arrow", None)
    if read_arrow is not None:
        table = read_arrow()
        return {
            str(name): _arrow_numpy(table.column(name)) for name in table.column_names
        }
    frame = node.read()
    return {str(name): np.asarray(frame[name].to_numpy()) for name in frame.columns}


_FLOATS = {"halffloat": "<f2", "float": "<f4", "double": "<f8"}


def _arrow_numpy(column: Any) -> NDArray[Any]:
    """Convert a ``pyarrow.ChunkedArray`` to numpy as pandas would.

    Integers and floats straight from their buffers (integers with missing
    values become float64 with NaN), booleans without missing values as
    bool; anything else as Python objects.
    pyarrow's own ``to_numpy`` imports pandas (~0.3 s) for this.
    """
    import pyarrow as pa

    kind = column.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if not numeric:
        values = column.to_pylist()
        if pa.types.is_boolean(kind) and None not in values:
            return np.asarray(values, dtype=bool)
        return np.asarray(values, dtype=object)
    dtype = np.dtype(_FLOATS.get(str(kind), str(kind)))
    parts = []
    for chunk in column.chunks:
        values = np.frombuffer(
            chunk.buffers()[1], dtype=dtype, count=chunk.offset + len(chunk)
        )[chunk.offset :]
        if chunk.null_count:
            missing = np.asarray(chunk.is_null().to_pylist(), dtype=bool)
            values = values.astype(np.float64)
            values[missing] = np.nan
        parts.append(values)
    if not parts:
        return np.empty(0, dtype=dtype)
    if any(p.dtype != parts[0].dtype for p in parts):
        return np.concatenate([p.astype(np.float64) for p in parts])
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def _column_array(column: NDArray[Any], data_key: Mapping[str, Any]) -> NDArray[Any]:
    if data_key.get("dtype") == "string" or column.dtype == object:
        return np.asarray([str(v) for v in column])
    return np.asarray(column)
