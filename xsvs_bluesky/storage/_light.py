"""Tiled clients that read nodes without dask, pandas' dask or bluesky classes.

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
reading through these clients uses searches and plain node access.
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
    """``structure_clients`` of a writer: Tiled's classes by structure family.

    Containers are plain ``Container`` whatever their specs (no Bluesky
    client classes, no ``CompositeClient``); arrays and tables are Tiled's
    own ``ArrayClient``/``DataFrameClient``, imported (with dask) only when
    a node of that family is first made.
    """
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH
    from tiled.utils import OneShotCachedMap

    tiled = DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"]
    clients: Any = OneShotCachedMap()
    clients.set("container", lambda: Container)
    clients.set("composite", lambda: Container)
    for family in ("array", "bytes", "dataframe", "sparse", "table"):
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
