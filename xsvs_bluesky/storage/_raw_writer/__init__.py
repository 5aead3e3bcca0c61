"""Write a replayed raw run into Tiled with few requests (private).

:func:`xsvs_bluesky.storage.make_tiled_writer` routes the raw runs of a
legacy replay (start documents with ``plan_type == "legacy_replay"``) here.
The nodes are those ``bluesky_tiled_plugins.TiledWriter`` (2.0) creates for
the same documents, so every Bluesky Tiled client reads them alike:

- the run: a ``BlueskyRun`` (3.0) container, metadata ``{"start": ...}``,
  then ``"stop"`` added (no revision kept);
- per stream: a ``BlueskyEventStream``/``composite`` container whose
  metadata is the descriptor (less ``name``, ``object_keys``,
  ``run_start``);
- per external data key: an array node registered by reference, one HDF5
  data source (``application/x-hdf5``, ``dataset``/``swmr``/``locking``
  parameters, the file as its one asset), its shape
  ``(rows, *datum shape)`` and chunks from the StreamResource's
  ``chunk_shape``, computed as TiledWriter's consolidator does;
- Event rows: the ``internal`` table (``seq_num``, ``time``, the scalar
  keys, ``ts_<key>``), array keys as array nodes with dimension names
  ``time, dim_int_1, ...``, written at the stop document (or per
  ``batch_size`` rows).

What differs is the number of requests.  A data key's node is registered
when its first StreamDatum arrives, with the rows known then: the replay
hands over one StreamDatum per exposure, once the exposure's file is
complete (``xsvs_bluesky.replay``'s exposure feed), so each exposure costs
one request and its data source is never updated afterwards (a later
StreamDatum of the same key updates it with one request, as TiledWriter
does).  The stop is one metadata update plus the end of the run's stream
(``close_stream`` of the run node: live subscribers see the run end); the
other nodes are not closed one by one, which only a Tiled streaming
subscriber of a single stream or array would notice.

Documents this writer does not handle (Resource/Datum, non-HDF5 or
multi-file StreamResources, data keys of variable shape) raise
:class:`~xsvs_bluesky.errors.StorageError`: a replayed run never has them.
Nothing here imports ``bluesky_tiled_plugins`` or dask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xsvs_bluesky.errors import StorageError
from xsvs_bluesky.storage._page_writer import create_stream_node
from xsvs_bluesky.storage._raw_writer._sources import (
    ExternalKey,
    json_safe,
    normalize_descriptor,
)

__all__ = ["RawRunWriter", "is_raw_replay_run"]

logger = logging.getLogger(__name__)


def is_raw_replay_run(start: Mapping[str, Any]) -> bool:
    """Whether a start document is the raw run of a legacy replay."""
    return start.get("plan_type") == "legacy_replay"


class RawRunWriter:
    """Write the documents of one replayed raw run into a container.

    Parameters
    ----------
    container : tiled client container
        A catalog of Bluesky runs (any Tiled container client).
    batch_size : int
        Event rows cached per stream before they are written (they are
        written at the stop document in any case).
    """

    def __init__(self, container: Any, *, batch_size: int = 50) -> None:
        self._container = container
        self._batch_size = max(int(batch_size), 1)
        self._root: Any = None
        self._access_tags: Any = None
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._nodes: dict[str, Any] = {}  # stream name -> its container
        self._descriptors: dict[str, dict[str, Any]] = {}  # stream -> first one
        self._data_keys: dict[str, dict[str, Any]] = {}
        self._resources: dict[str, Mapping[str, Any]] = {}  # uid -> document
        self._external: dict[str, ExternalKey] = {}  # "stream/key" -> source
        self._by_resource: dict[str, ExternalKey] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {}  # stream -> Event rows
        self._tables: dict[str, Any] = {}
        self._arrays: dict[str, Any] = {}  # "stream/key" -> array node
        self._dims: dict[str, dict[int, str]] = {}
        self._notes: list[str] = []

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Write (or cache) one document of the run."""
        handler: Callable[[Any], None] | None = getattr(self, f"_{name}", None)
        if handler is None:
            raise StorageError(
                f"a {name!r} document in a replayed raw run: this writer takes "
                "start, descriptor, stream_resource, stream_datum, event(_page) "
                "and stop documents"
            )
        handler(doc)

    # ------------------------------------------------------------ documents
    def _start(self, doc: Mapping[str, Any]) -> None:
        from tiled.structures.core import Spec

        start = dict(doc)
        self._access_tags = start.pop("tiled_access_tags", None)
        extra = start.pop("tiled_specs", None) or []
        self._root = self._container.create_container(
            key=start["uid"],
            metadata={"start": json_safe(start)},
            specs=[
                *(Spec(s) if isinstance(s, str) else Spec(**s) for s in extra),
                Spec("BlueskyRun", version="3.0"),
            ],
            access_tags=self._access_tags,
        )

    def _descriptor(self, doc: Mapping[str, Any]) -> None:
        doc = normalize_descriptor(doc)
        stream = str(doc["name"])
        self._streams[doc["uid"]] = stream
        self._data_keys.update(doc.get("data_keys", {}))
        node = self._nodes.get(stream)
        if node is None:
            self._nodes[stream] = create_stream_node(
                self._root, doc, self._access_tags, clean=json_safe
            )
            self._descriptors[stream] = doc
            return
        # a configuration update of the stream, recorded as TiledWriter does
        updates = list(node.metadata.get("_config_updates", []))
        updates.append({"uid": doc["uid"], "time": doc["time"]})
        if doc.get("configuration"):
            updates[-1]["configuration"] = doc["configuration"]
        node.update_metadata(
            metadata={"_config_updates": json_safe(updates)}, drop_revision=True
        )

    def _stream_resource(self, doc: Mapping[str, Any]) -> None:
        self._resources[doc["uid"]] = doc

    def _stream_datum(self, doc: Mapping[str, Any]) -> None:
        from dataclasses import asdict

        from tiled.client.utils import handle_error, retry_context
        from tiled.structures.core import StructureFamily
        from tiled.utils import safe_json_dump

        source = self._by_resource.get(doc["stream_resource"])
        stream = self._streams[doc["descriptor"]]
        if source is None:
            resource = self._resources.get(doc["stream_resource"])
            if resource is None:
                raise StorageError(
                    f"StreamDatum {doc.get('uid')} names StreamResource "
                    f"{doc['stream_resource']}, not received before it"
                )
            full_key = f"{stream}/{resource.get('data_key', '')}"
            if full_key in self._external:
                raise StorageError(
                    f"stream {stream!r}: a second StreamResource of data key "
                    f"{resource.get('data_key')!r}; this writer takes one file per "
                    "data key (replayed runs)"
                )
            source = ExternalKey(resource, self._data_keys[resource["data_key"]])
            self._external[full_key] = self._by_resource[resource["uid"]] = source
        old_rows = source.shape[0]
        source.rows += int(doc["indices"]["stop"]) - int(doc["indices"]["start"])
        node = self._nodes[stream]
        if source.node is None:
            source.node = node.new(
                key=source.key,
                structure_family=StructureFamily.array,
                data_sources=[source.data_source()],
                metadata=dict(source.metadata),
                specs=[],
                access_tags=self._access_tags,
            )
            return
        # more rows of a key already registered: update its data source
        data_source = source.data_source()
        data_source.id = source.node.data_sources()[0].id
        shape = source.shape
        patch = {
            "patch_shape": ",".join(map(str, (shape[0] - old_rows, *shape[1:]))),
            "patch_offset": ",".join(map(str, (old_rows, *[0] * (len(shape) - 1)))),
        }
        client = source.node
        for attempt in retry_context():
            with attempt:
                handle_error(
                    client.context.http_client.put(
                        client.uri.replace("/metadata/", "/data_source/", 1),
                        content=safe_json_dump({"data_source": asdict(data_source)}),
                        params=patch,
                    )
                )

    def _event(self, doc: Mapping[str, Any]) -> None:
        stream = self._streams[doc["descriptor"]]
        row = {"seq_num": doc["seq_num"], "time": doc["time"], **doc["data"]}
        row.update({f"ts_{k}": v for k, v in doc["timestamps"].items()})
        rows = self._rows.setdefault(stream, [])
        rows.append(row)
        if len(rows) >= self._batch_size:
            self._write_rows(stream)

    def _event_page(self, doc: Mapping[str, Any]) -> None:
        data, stamps = doc["data"], doc["timestamps"]
        for i, seq_num in enumerate(doc["seq_num"]):
            self._event(
                {
                    "descriptor": doc["descriptor"],
                    "seq_num": seq_num,
                    "time": doc["time"][i],
                    "data": {k: v[i] for k, v in data.items()},
                    "timestamps": {k: v[i] for k, v in stamps.items()},
                }
            )

    def _stop(self, doc: Mapping[str, Any]) -> None:
        if self._root is None:
            raise StorageError("a stop document before the run's start")
        for stream in list(self._rows):
            self._write_rows(stream)
        stop = dict(doc)
        notes = list(
            dict.fromkeys(
                [*(stop.pop("_run_normalizer_notes", None) or []), *self._notes]
            )
        )
        metadata = {"stop": stop, **({"notes": notes} if notes else {})}
        self._root.update_metadata(metadata=metadata, drop_revision=True)
        self._root.close_stream()

    # ------------------------------------------------------------ Event rows
    def _write_rows(self, stream: str) -> None:
        """Write the cached Event rows of ``stream`` (arrays as array nodes)."""
        import pyarrow as pa

        rows = self._rows.pop(stream, [])
        if not rows:
            return
        node = self._nodes[stream]
        for key in [k for k in rows[0] if self._is_array(k)]:
            values = [r.pop(key) for r in rows if key in r]
            self._write_array(stream, node, key, values)
        table = pa.Table.from_pylist(rows)
        if not table.num_columns:
            return
        client = self._tables.get(stream)
        if client is None:
            schema = table.schema
            for i, field in enumerate(schema):
                if pa.types.is_null(field.type):
                    schema = schema.set(i, field.with_type(pa.string()))
            metadata = {k: v for k, v in self._data_keys.items() if k in schema.names}
            client = self._tables[stream] = node.create_appendable_table(
                schema=schema,
                key="internal",
                metadata=json_safe(metadata),
                access_tags=self._access_tags,
            )
        client.append_partition(0, table)

    def _is_array(self, key: str) -> bool:
        spec = self._data_keys.get(key)
        if spec is None or "external" in spec or spec.get("dtype") != "array":
            return False
        if None in (spec.get("shape") or ()):
            raise StorageError(f"data key {key!r}: arrays of variable shape")
        return True

    def _write_array(self, stream: str, node: Any, key: str, values: list[Any]) -> None:
        from xsvs_bluesky.storage._light import write_array

        client = self._arrays.get(f"{stream}/{key}")
        spec = self._data_keys.get(key, {})
        dtype = client.dtype if client is not None else spec.get("dtype_numpy")
        if dtype is not None and np.dtype(dtype).kind == "O":
            dtype = None
        array = np.array(values, dtype=dtype)
        if client is not None:
            client.patch(array, offset=(client.shape[0],), extend=True)
            return
        metadata = json_safe(spec)
        metadata["dtype_numpy"] = str(array.dtype)
        names = self._dims.setdefault(stream, {})
        dims = ["time"]
        for size in array.shape[1:]:
            names.setdefault(size, f"dim_int_{len(names) + 1}")
            dims.append(names[size])
        self._arrays[f"{stream}/{key}"] = write_array(
            node,
            array,
            key=key,
            metadata=metadata,
            dims=tuple(dims),
            access_tags=self._access_tags,
        )
        self._notes.append(
            f"Internal array data for '{key}' in stream '{stream}' written as zarr."
        )
