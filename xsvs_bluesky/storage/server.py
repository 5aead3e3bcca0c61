"""Tiled catalogs of raw and processed runs: an embedded server or a named one.

With no server named, :func:`open_catalogs` starts a local Tiled
(:class:`tiled.server.SimpleTiledServer`) over a persistent folder, so one
command works on a fresh machine and a second session finds the runs of the
first.  The folder holds::

    xsvs-data/
        tiled/      Tiled's own catalog (SQLite), tables (DuckDB), arrays
                    written through Tiled, and its logs
        external/   files written by detectors or the legacy replay (HDF5)
                    and registered by reference; served by Tiled

With ``tiled_uri`` the catalogs live on a running Tiled server (API key from
the argument or the environment variable ``TILED_API_KEY``).

Both catalogs are containers labelled ``CatalogOfBlueskyRuns`` (version
3.0), so the Bluesky client applies: ``cat[-1]``, ``cat[scan_id]``,
``cat["1a2b3c"]`` (partial uid), ``cat.search(Key("start.sample_name") ==
...)``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import SubprocessError
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from xsvs_bluesky.errors import OptionError, StorageError

__all__ = [
    "CATALOG_SPEC",
    "DEFAULT_DATA_DIR",
    "Catalogs",
    "ensure_folder",
    "ensure_run_catalog",
    "open_catalogs",
    "register_document_exporter",
]

logger = logging.getLogger(__name__)

#: Default folder of the embedded server, relative to the working directory.
DEFAULT_DATA_DIR = Path("xsvs-data")
#: Name and version of the Tiled spec marking a catalog of Bluesky runs.
CATALOG_SPEC = ("CatalogOfBlueskyRuns", "3.0")

# Tiled keeps its server settings in one cached object per process and every
# app built writes its API key there: all embedded servers of a process end
# up accepting only the last key.  So they share one key.
_embedded_key: list[str] = []


@dataclass(frozen=True, eq=False)
class Catalogs:
    """The raw and processed catalogs and what serves them.

    Use as a context manager, or call :meth:`close`, to stop an embedded
    server (the data stay in :attr:`data_dir`).

    Attributes
    ----------
    raw, processed : tiled.client.container.Container
        ``CatalogOfBlueskyRuns`` containers of the raw and derived runs.
    client : tiled.client.container.Container
        The root node of the server.
    server : tiled.server.SimpleTiledServer or None
        The embedded server, None for a named server.
    data_dir : pathlib.Path or None
        Folder of the embedded server (None for a named server).
    external_dir : pathlib.Path or None
        Where detectors should write files that Tiled serves by reference
        (inside the server's readable storage); None if unknown.
    uri : str
        Server API address, without the API key.
    api_key : str or None
        The API key (embedded server: generated unless given).
    """

    raw: Any
    processed: Any
    client: Any
    server: Any
    data_dir: Path | None
    external_dir: Path | None
    uri: str
    api_key: str | None

    def close(self) -> None:
        """Close the client and stop the embedded server, if any."""
        try:
            self.client.context.close()
        finally:
            if self.server is not None:
                self.server.close()

    def __enter__(self) -> Catalogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def register_document_exporter() -> None:
    """Let servers started in this process export runs as JSON-seq documents.

    ``BlueskyRun.documents()`` asks the server for ``application/json-seq``;
    :class:`~tiled.server.SimpleTiledServer` offers no way to add exporters,
    so this registers ``bluesky_tiled_plugins.exporters.json_seq_exporter``
    in Tiled's default serialization registry (idempotent, process-wide).
    A named server needs it in its configuration instead (see
    ``docs/how-to/tiled-storage.md``).
    """
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    media = default_serialization_registry.media_types("BlueskyRun")
    if "application/json-seq" not in media:
        default_serialization_registry.register(
            "BlueskyRun", "application/json-seq", json_seq_exporter
        )


def ensure_run_catalog(parent: Any, key: str) -> Any:
    """Return the container ``key`` of ``parent``, a catalog of Bluesky runs.

    The container (and any missing parent along a ``"a/b"`` path) is created
    if absent; an existing container lacking the ``CatalogOfBlueskyRuns``
    spec gets it added.

    Parameters
    ----------
    parent : tiled.client.container.Container
        Where the catalog lives (usually the root).
    key : str
        Its key or ``/``-separated path.

    Returns
    -------
    bluesky_tiled_plugins.CatalogOfBlueskyRuns

    Raises
    ------
    XSVSError
        If the node exists but is not a container, or the spec cannot be
        added (no write permission).
    """
    import httpx
    from tiled.structures.core import Spec

    spec = Spec(CATALOG_SPEC[0], version=CATALOG_SPEC[1])
    parts = [p for p in key.split("/") if p]
    if not parts:
        raise OptionError(f"catalog key {key!r} is empty; give a name such as 'raw'")
    node = parent
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if part in node:
            node = node[part]
        else:
            try:
                node = node.create_container(part, specs=[spec] if last else [])
            except httpx.HTTPError as err:
                raise StorageError(
                    f"cannot create the Tiled catalog {key!r} ({err}); check that "
                    "the API key may write, or give an existing catalog"
                ) from err
            if last:
                logger.info("created Tiled catalog %r", key)
                node = _refetch(parent, parts)
    if getattr(node, "structure_family", None) != "container":
        raise StorageError(
            f"Tiled node {key!r} is a {node.structure_family}, not a container"
        )
    if all(s.name != CATALOG_SPEC[0] for s in node.specs):
        logger.warning("Tiled container %r lacks %s: adding it", key, CATALOG_SPEC[0])
        try:
            node.update_metadata(specs=[spec, *node.specs])
        except httpx.HTTPError as err:
            raise StorageError(
                f"Tiled container {key!r} is not a CatalogOfBlueskyRuns and the spec "
                f"could not be added ({err}); use another catalog name"
            ) from err
        node = _refetch(parent, parts)
    return node


def _refetch(parent: Any, parts: list[str]) -> Any:
    # A fresh lookup builds the client class matching the node's specs.
    node = parent
    for part in parts:
        node = node[part]
    return node


def open_catalogs(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    raw: str = "raw",
    processed: str = "processed",
    external_dir: str | os.PathLike[str] | None = None,
    readable_storage: Sequence[str | os.PathLike[str]] = (),
) -> Catalogs:
    """Open (creating if needed) the raw and processed run catalogs.

    Parameters
    ----------
    data_dir : path, optional
        Folder of the embedded server, created if absent (default
        ``./xsvs-data``).  Ignored with ``tiled_uri``.
    tiled_uri : str, optional
        Address of a running Tiled server; None starts the embedded one.
    api_key : str, optional
        API key.  Named server: default ``$TILED_API_KEY``.  Embedded server:
        default a random key, the same for every embedded server of the
        process (Tiled's server settings are process-wide, so embedded
        servers of one process must share their key).
    raw, processed : str
        Keys (or ``/`` paths) of the two catalogs.
    external_dir : path, optional
        Folder for detector files (HDF5) that Tiled serves by reference,
        created if absent.  Embedded server: default ``<data_dir>/external``,
        made readable by the server.  Named server: a folder in its readable
        storage (None if not given).
    readable_storage : sequence of path
        Embedded server: more folders it may serve files from (e.g. where the
        legacy replay writes its HDF5).

    Returns
    -------
    Catalogs

    Raises
    ------
    XSVSError
        If the server cannot be reached or a catalog cannot be created.
    """
    from tiled.client import from_uri

    if tiled_uri is not None:
        key = api_key or os.environ.get("TILED_API_KEY")
        import httpx

        try:
            client = from_uri(tiled_uri, api_key=key)
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise StorageError(
                f"cannot connect to the Tiled server {tiled_uri!r} ({err}); check the "
                "address and the API key (--api-key or TILED_API_KEY)"
            ) from err
        ext = None if external_dir is None else Path(external_dir).resolve()
        if ext is not None:
            ensure_folder(ext, "the folder for detector files")
        return _catalogs(
            client, None, None, ext, _strip_query(tiled_uri), key, raw, processed
        )

    from sqlalchemy.exc import SQLAlchemyError
    from tiled.server import SimpleTiledServer

    root = Path(DEFAULT_DATA_DIR if data_dir is None else data_dir).resolve()
    ext = (root / "external" if external_dir is None else Path(external_dir)).resolve()
    ensure_folder(root, "the data folder")
    ensure_folder(ext, "the folder for detector files")
    register_document_exporter()
    key = _embedded_api_key(api_key)
    readable = [ext, *(Path(p).resolve() for p in readable_storage)]
    try:
        server = SimpleTiledServer(
            root / "tiled", api_key=key, readable_storage=readable
        )
    except (OSError, RuntimeError, SubprocessError, SQLAlchemyError) as err:
        raise StorageError(
            f"cannot start the embedded Tiled server in {root} ({err}); see "
            f"{root / 'tiled' / 'error.log'}"
        ) from err
    logger.info("embedded Tiled server on %s, data in %s", server.uri, root)
    try:
        client = from_uri(server.uri, trust_env=False)
        return _catalogs(
            client, server, root, ext, _strip_query(server.uri), key, raw, processed
        )
    except BaseException:
        server.close()
        raise


def ensure_folder(path: Path, what: str) -> None:
    """Create the folder ``path`` (and its parents) unless it exists.

    Raises
    ------
    StorageError
        If it cannot be created (a file of that name, no permission); the
        message names ``what`` it is for.
    """
    if path.exists() and not path.is_dir():
        raise StorageError(f"{path}: is a file, not a folder; give {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(
            f"cannot create {what} {path} ({err.strerror or err}); give a "
            "writable folder"
        ) from err


def _embedded_api_key(api_key: str | None) -> str:
    if api_key is None:
        if not _embedded_key:
            _embedded_key.append(secrets.token_hex(16))
        return _embedded_key[0]
    if _embedded_key and _embedded_key[0] != api_key:
        logger.warning(
            "a new API key for an embedded Tiled server replaces the key of the "
            "other embedded servers of this process (Tiled settings are global)"
        )
    _embedded_key[:] = [api_key]
    return api_key


def _catalogs(
    client: Any,
    server: Any,
    root: Path | None,
    ext: Path | None,
    uri: str,
    key: str | None,
    raw: str,
    processed: str,
) -> Catalogs:
    return Catalogs(
        raw=ensure_run_catalog(client, raw),
        processed=ensure_run_catalog(client, processed),
        client=client,
        server=server,
        data_dir=root,
        external_dir=ext,
        uri=uri,
        api_key=key,
    )


def _strip_query(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
