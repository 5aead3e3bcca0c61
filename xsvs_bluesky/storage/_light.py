"""Tiled clients that read and write nodes without dask or bluesky classes.

Tiled's own client classes read arrays and tables through dask (~1.5 s of
imports), and a catalog's ``CatalogOfBlueskyRuns``/``BlueskyRun`` specs load
``bluesky_tiled_plugins``' client classes (another ~2.5 s: dask, sparse,
SQLAlchemy).  A command that only prints a table of a few numbers pays
more for those imports than for its requests.  :data:`LIGHT_CLIENTS` maps
every structure family to a plain client: containers are Tiled's
``Container`` (whatever their specs), arrays are fetched whole as raw bytes
into numpy, tables as Arrow into pandas.  Pass it as
``from_uri(..., structure_clients=LIGHT_CLIENTS)``
(:func:`xsvs_bluesky.storage.open_catalogs` with ``light=True``).

What is lost: the Bluesky conveniences (``cat[-1]``, ``cat[scan_id]``,
partial uids, ``run.documents()``, ``stream.read()`` as xarray); code
reading through these clients uses searches and plain node access, with
metadata keys named whole (``start.sample_name``: only the Bluesky catalog
client adds ``start.``).  :func:`bluesky_client` gives a node's Bluesky
client back (no request).

The same clients also write what the raw-run and derived-run writers write
(:meth:`LightArrayClient.write`/:meth:`~LightArrayClient.patch`,
:meth:`LightTableClient.append_partition`, :func:`write_array` for a new
array node): the writers connect with :func:`writer_clients`, so a process
writing only those runs (``replay``) imports neither dask nor
``bluesky_tiled_plugins``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from tiled.client.base import BaseClient
from tiled.client.container import Container
from tiled.client.utils import handle_error, retry_context

__all__ = [
    "LIGHT_CLIENTS",
    "LightArrayClient",
    "LightTableClient",
    "bluesky_client",
    "write_array",
    "writer_clients",
]

_OCTET_STREAM = "application/octet-stream"
_ARROW_FILE = "application/vnd.apache.arrow.file"
#: no blosc2: its decoder imports blosc2 (~0.2 s) for a few kilobytes
_ENCODINGS = "zstd, gzip"


class _LightNode(BaseClient):
    """A leaf node read with one GET per request, no dask."""

    def _get(self, link: str, media_type: str, **params: Any) -> bytes:
        url = self.item["links"][link]
        query = {**parse_qs(urlparse(url).query), **params}
        with self.context.throttle():
            for attempt in retry_context(self.context):
                with attempt:
                    response = self.context.http_client.get(
                        url,
                        headers={"Accept": media_type, "Accept-Encoding": _ENCODINGS},
                        params=query,
                    )
                    content: bytes = handle_error(response).read()
        return content


class LightArrayClient(_LightNode):
    """An array node read whole into a numpy array (one request)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array."""
        return tuple(self.structure().shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's numpy dtype."""
        dtype: np.dtype[Any] = self.structure().data_type.to_numpy_dtype()
        return dtype

    def read(self) -> np.ndarray[Any, Any]:
        """Return the whole array."""
        shape = self.shape
        if 0 in shape:
            return np.empty(shape, dtype=self.dtype)
        expected = ",".join(map(str, shape)) or "scalar"
        content = self._get("full", _OCTET_STREAM, expected_shape=expected)
        return np.frombuffer(content, dtype=self.dtype).reshape(shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        values = self.read()
        return values if dtype is None else values.astype(dtype)

    def write(self, array: np.ndarray[Any, Any]) -> None:
        """Write the whole array (one PUT of its bytes)."""
        data = np.ascontiguousarray(array)
        with self.context.throttle():
            for attempt in retry_context():
                with attempt:
                    handle_error(
                        self.context.http_client.put(
                            self.item["links"]["full"],
                            content=data.tobytes(),
                            headers={"Content-Type": _OCTET_STREAM},
                        )
                    )

    def patch(
        self,
        array: np.ndarray[Any, Any],
        offset: int | tuple[int, ...],
        extend: bool = False,
    ) -> None:
        """Write ``array`` at ``offset``, extending the array to fit (``extend``)."""
        from tiled.structures.array import ArrayStructure

        if array.dtype != self.dtype:
            raise ValueError(
                f"array of dtype {array.dtype} given to patch an array of {self.dtype}"
            )
        data = np.ascontiguousarray(array)
        start = (offset,) if isinstance(offset, int) else tuple(offset)
        url = self.item["links"]["full"]
        params = {
            **parse_qs(urlparse(url).query),
            "offset": ",".join(map(str, start)),
            "shape": ",".join(map(str, data.shape)),
            "extend": bool(extend),
        }
        with self.context.throttle():
            for attempt in retry_context():
                with attempt:
                    response = handle_error(
                        self.context.http_client.patch(
                            url,
                            content=data.tobytes(),
                            headers={"Content-Type": _OCTET_STREAM},
                            params=params,
                        )
                    )
        self._structure = ArrayStructure.from_json(response.json())


class LightTableClient(_LightNode):
    """A table node read whole into a pandas DataFrame (Arrow by partition)."""

    def read_arrow(self) -> Any:
        """Return the whole table as a ``pyarrow.Table`` (no pandas)."""
        import pyarrow as pa
        import pyarrow.ipc

        parts = self.item["attributes"]["structure"].get("npartitions", 1)
        tables = [
            pyarrow.ipc.open_file(
                pa.BufferReader(self._get("partition", _ARROW_FILE, partition=i))
            ).read_all()
            for i in range(parts)
        ]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def read(self) -> Any:
        """Return the whole table as a ``pandas.DataFrame``."""
        return self.read_arrow().to_pandas()

    def append_partition(self, partition: int, table: Any) -> None:
        """Append the rows of ``table`` (a ``pyarrow.Table``) to a partition.

        Not retried when the server may have appended them already (a lost
        answer): as Tiled's own client, the caller decides.
        """
        import pyarrow as pa
        import pyarrow.ipc
        from tiled.client.utils import should_retry_if_unprocessed

        sink = pa.BufferOutputStream()
        with pyarrow.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        content = sink.getvalue().to_pybytes()
        url = self.item["links"]["partition"].format(index=partition)
        with self.context.throttle():
            for attempt in retry_context(on=should_retry_if_unprocessed):
                with attempt:
                    handle_error(
                        self.context.http_client.patch(
                            url,
                            content=content,
                            headers={"Content-Type": _ARROW_FILE},
                        )
                    )


#: Arrays larger than this are written by Tiled's own ``write_array``, in
#: chunks (as it cuts them), bytes
MAX_WHOLE_ARRAY = 100_000_000


def write_array(
    node: Any,
    array: np.ndarray[Any, Any],
    *,
    key: str,
    metadata: Any,
    dims: Any,
    access_tags: Any = None,
) -> Any:
    """Write ``array`` as a new array node of container ``node``; return its client.

    What ``Container.write_array`` writes (one chunk when the array holds
    at most :data:`MAX_WHOLE_ARRAY` bytes), without its dask import: one
    request to create the node, one to write the bytes.  Larger arrays go
    through ``Container.write_array``.
    """
    from tiled.structures.array import ArrayStructure, BuiltinDtype
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import DataSource

    if array.nbytes > MAX_WHOLE_ARRAY:
        return node.write_array(
            array, key=key, metadata=metadata, dims=dims, access_tags=access_tags
        )
    structure = ArrayStructure(
        shape=array.shape,
        chunks=tuple((n,) for n in array.shape),
        dims=dims,
        data_type=BuiltinDtype.from_numpy_dtype(array.dtype),
    )
    client = node.new(
        StructureFamily.array,
        [DataSource(structure=structure, structure_family=StructureFamily.array)],
        key=key,
        metadata=metadata,
        specs=[],
        access_tags=access_tags,
    )
    client.write(array)
    return client


#: ``structure_clients`` for :func:`tiled.client.from_uri`: plain clients for
#: every structure family and no spec-specific class.
LIGHT_CLIENTS: dict[str, Any] = {
    "container": Container,
    "composite": Container,
    "array": LightArrayClient,
    "table": LightTableClient,
    "dataframe": LightTableClient,
}


def writer_clients() -> Any:
    """``structure_clients`` of a writer: the light clients, which also write.

    Containers are plain ``Container`` whatever their specs (no Bluesky
    client classes, no ``CompositeClient``); arrays and tables the light
    clients (:meth:`LightArrayClient.write`, :meth:`~LightArrayClient.patch`,
    :meth:`LightTableClient.append_partition`); other families Tiled's own
    classes, imported when first met.  No dask.
    """
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH
    from tiled.utils import OneShotCachedMap

    tiled = DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"]
    clients: Any = OneShotCachedMap()
    for family, plain in LIGHT_CLIENTS.items():
        clients.set(family, lambda plain=plain: plain)
    for family in ("bytes", "sparse"):
        clients.set(family, lambda family=family: tiled[family])
    return clients


def bluesky_client(node: Any) -> Any:
    """Return the client Tiled's default dispatch gives ``node`` (no request).

    For a node opened with plain clients (:data:`LIGHT_CLIENTS`,
    :func:`writer_clients`): the same node through the classes its specs
    name (``CatalogOfBlueskyRuns``, ``BlueskyRun``: ``bluesky_tiled_plugins``
    is imported then).
    """
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH
    from tiled.client.utils import client_for_item

    Container.discover_clients_from_entrypoints()
    return client_for_item(
        node.context,
        DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"],
        node.item,
        include_data_sources=getattr(node, "_include_data_sources", False),
    )
