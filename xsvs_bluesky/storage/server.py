"""Tiled catalogs of raw and processed runs: a data folder's server or a named one.

With a data folder (default ``./xsvs-data``), :func:`open_catalogs` uses the
folder's running server when there is one (``xsvs-bluesky serve``, or
another command serving it right now: see :mod:`xsvs_bluesky.storage.service`)
and otherwise serves the folder in this process for as long as the catalogs
are open, so one command works on a fresh machine and a second session finds
the runs of the first.  The folder holds::

    xsvs-data/
        tiled/      Tiled's own catalog (SQLite), tables (DuckDB), arrays
                    written through Tiled, its logs, and the server lock
        external/   files written by detectors or the legacy replay (HDF5)
                    and registered by reference; served by Tiled
        tiled-api-key, tiled-config.yml   the key (0600) and Tiled's config

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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from xsvs_bluesky.errors import OptionError, StorageError
from xsvs_bluesky.storage._folder import DataFolder
from xsvs_bluesky.storage._postgres import PostgresCatalog

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


@dataclass(frozen=True, eq=False)
class Catalogs:
    """The raw and processed catalogs and what serves them.

    Use as a context manager, or call :meth:`close`, to stop a server this
    process runs for the folder (the data stay in :attr:`data_dir`).

    Attributes
    ----------
    raw, processed : tiled.client.container.Container
        ``CatalogOfBlueskyRuns`` containers of the raw and derived runs
        (plain ``Container`` clients when opened with ``light=True``, and
        ``raw`` None then unless ``light_raw=True``).
    client : tiled.client.container.Container
        The root node of the server.
    server : object or None
        The folder's server running in this process (shared by every
        ``open_catalogs`` of the folder in the process; the last ``close``
        stops it), None when the server is another process.
    data_dir : pathlib.Path or None
        The data folder (None for a server named by URI).
    external_dir : pathlib.Path or None
        Where detectors should write files that Tiled serves by reference
        (inside the server's readable storage); None if unknown.
    uri : str
        Server API address, without the API key.
    api_key : str or None
        The API key (data folder: the one in its ``tiled-api-key``).
    backup_dir : pathlib.Path or None
        Local backup of the runs the writers could not store whole
        (``<data_dir>/backup``; for a server named by URI the folder given,
        default ``./xsvs-data/backup/<host>_<port>``).
    """

    raw: Any
    processed: Any
    client: Any
    server: Any
    data_dir: Path | None
    external_dir: Path | None
    uri: str
    api_key: str | None
    #: folders of files the server serves by reference (a data folder's
    #: server; None: unknown, a server named by address)
    readable_storage: tuple[Path, ...] | None = None
    #: this process's use of a server of another process (released at close)
    use: Any = field(default=None, repr=False)

    backup_dir: Path | None = None

    def can_serve(self, path: str | os.PathLike[str]) -> bool | None:
        """Whether the server may serve files under ``path`` (None: unknown)."""
        if self.readable_storage is None:
            return None
        target = Path(path).resolve()
        return any(target.is_relative_to(p) for p in self.readable_storage)

    def with_bluesky_clients(self) -> Catalogs:
        """Return these catalogs through the Bluesky client classes (no request).

        For catalogs opened with ``light=True`` (plain containers): the same
        nodes as ``CatalogOfBlueskyRuns`` clients (``cat[-1]``,
        ``run.documents()``...); ``bluesky_tiled_plugins`` is imported then.
        Closing either closes both.
        """
        from xsvs_bluesky.storage._light import bluesky_client

        def convert(node: Any) -> Any:
            return None if node is None else bluesky_client(node)

        return replace(
            self,
            raw=convert(self.raw),
            processed=convert(self.processed),
            client=convert(self.client),
        )

    def close(self) -> None:
        """Close the client and stop the embedded server, if any.

        A server this process runs for the folder waits, before stopping,
        until the other processes using it are done (one log line names
        them).
        """
        try:
            self.client.context.close()
        finally:
            if self.server is not None:
                self.server.close()
            if self.use is not None:
                self.use.release()

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
        try:
            node = node[part]  # one request (``part in node`` would be two)
        except httpx.TransportError as err:
            where = str(parent.context.api_uri).rstrip("/")
            raise StorageError(
                f"the Tiled server at {where} does not answer "
                f"({type(err).__name__}: {err}) while the catalog {key!r} is "
                "opened; check that it runs"
            ) from err
        except KeyError:
            try:
                node = node.create_container(part, specs=[spec] if last else [])
            except httpx.HTTPStatusError as err:
                if err.response.status_code != 409:  # 409: made by another writer
                    raise StorageError(
                        f"cannot create the Tiled catalog {key!r} ({err}); check "
                        "that the API key may write, or give an existing catalog"
                    ) from err
                node = node[part]
                continue
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
    light: bool = False,
    background: bool = False,
    catalog: str | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
    light_raw: bool = False,
) -> Catalogs:
    """Open (creating if needed) the raw and processed run catalogs.

    Parameters
    ----------
    data_dir : path, optional
        Data folder, created if absent (default ``./xsvs-data``): its running
        server is used, else the folder is served in this process (no
        subprocess; the catalog is created only when new).  Ignored with
        ``tiled_uri``.
    tiled_uri : str, optional
        Address of a running Tiled server.
    api_key : str, optional
        API key.  Named server: default ``$TILED_API_KEY``.  Data folder: the
        key it gets when it has none yet (default random), kept in its
        ``tiled-api-key`` (mode 0600).
    raw, processed : str
        Keys (or ``/`` paths) of the two catalogs.
    external_dir : path, optional
        Folder for detector files (HDF5) that Tiled serves by reference,
        created if absent.  Data folder: default ``<data_dir>/external``,
        made readable by the server (a running ``serve`` reads only there).
        Named server: a folder in its readable storage (None if not given).
    readable_storage : sequence of path
        Data folder served here: more folders it may serve files from.
    light : bool
        Read-only use by a short command: nodes come back as plain Tiled
        containers, numpy arrays and pandas tables, without the Bluesky
        client classes and dask (seconds of imports; see
        ``xsvs_bluesky.storage._light``).  ``cat[-1]``, ``cat[scan_id]``,
        partial uids and ``run.documents()`` are then not available, and
        ``raw`` is None (the raw catalog is not opened: one request less)
        unless ``light_raw``.

    background : bool
        Data folder that no server runs: start ``xsvs-bluesky serve`` of it
        as a background process (it outlives this one, so the next commands
        find it; :func:`~xsvs_bluesky.storage.stop_server` stops it) instead
        of serving it in this process.  Ignored when ``readable_storage``
        or ``external_dir`` lie outside ``<data_dir>/external`` (only an
        in-process server can read them).
    catalog : str, optional
        Data folder: ``postgresql://USER@HOST/DATABASE`` (no password) to keep
        the catalog and tables in, as ``xsvs-bluesky serve --catalog``; a
        folder records it at first use.  Default: the folder's own choice.
    backup_dir : path, optional
        Local backup of the runs the writers could not store whole
        (:attr:`Catalogs.backup_dir`).  Default: ``<data_dir>/backup``, or
        ``./xsvs-data/backup/<host>_<port>`` for a server named by
        ``tiled_uri``.
    light_raw : bool
        With ``light``: open the raw catalog too, as a plain container (a
        replay searches and writes it through plain clients: its writers
        need no Bluesky client class, see
        :func:`~xsvs_bluesky.storage.make_tiled_writer`).

    Returns
    -------
    Catalogs

    Raises
    ------
    XSVSError
        If the server cannot be reached or a catalog cannot be created.
    FolderBusyError
        If another process holds the folder without saying where it serves.
    OptionError
        If ``catalog`` is not a PostgreSQL address or holds a password.
    """
    postgres = None if catalog is None else PostgresCatalog.parse(catalog)
    backup = None if backup_dir is None else Path(backup_dir).resolve()
    if tiled_uri is None:
        cats = _open_folder(
            data_dir,
            api_key,
            raw,
            processed,
            external_dir,
            readable_storage,
            light,
            background,
            postgres,
        )
        cats = _with_raw(cats, raw, light and light_raw)
        assert cats.data_dir is not None
        return replace(cats, backup_dir=backup or DataFolder(cats.data_dir).backup)
    from tiled.client import from_context
    from tiled.client.context import Context

    clients = _structure_clients(light)
    key = api_key or os.environ.get("TILED_API_KEY")
    import httpx

    context = None
    try:
        # from_uri in two steps, to close the connection when it fails
        context, path_parts = Context.from_any_uri(tiled_uri, api_key=key)
        client = from_context(
            context, structure_clients=clients, node_path_parts=path_parts
        )
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        _close_quietly(context)
        raise StorageError(
            f"cannot connect to the Tiled server {tiled_uri!r} ({err}); check the "
            "address and the API key (--api-key or TILED_API_KEY)"
        ) from err
    except RuntimeError as err:  # Tiled's multi-line "requires API key" text
        _close_quietly(context)
        if key or "API key" not in str(err):
            raise
        raise StorageError(
            f"the Tiled server {tiled_uri!r} requires an API key and none was "
            "given; set TILED_API_KEY (or give --api-key)"
        ) from None
    except BaseException:
        _close_quietly(context)
        raise
    ext = None if external_dir is None else Path(external_dir).resolve()
    if ext is not None:
        ensure_folder(ext, "the folder for detector files")
    cats = _catalogs(
        client, None, None, ext, _strip_query(tiled_uri), key, raw, processed, light
    )
    cats = _with_raw(cats, raw, light and light_raw)
    return replace(cats, backup_dir=backup or named_server_backup(tiled_uri))


def _with_raw(cats: Catalogs, raw: str, wanted: bool) -> Catalogs:
    """``cats`` with its raw catalog opened (a light ``cats`` has none)."""
    if not wanted or cats.raw is not None:
        return cats
    try:
        return replace(cats, raw=ensure_run_catalog(cats.client, raw))
    except BaseException:
        cats.close()
        raise


def named_server_backup(uri: str) -> Path:
    """Return the default backup folder of runs for the server at ``uri``.

    ``./xsvs-data/backup/<host>_<port>``: beside, never inside, the backup
    of the default data folder, so a run is not written to another server
    than its own.
    """
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = "".join(c if c.isalnum() or c in ".-" else "_" for c in parts.hostname or "")
    return (DEFAULT_DATA_DIR / "backup" / f"{host or 'server'}_{port}").resolve()


def _close_quietly(context: Any) -> None:
    """Close a Tiled client context that failed to connect (if any)."""
    if context is None:
        return
    try:
        context.close()
    except Exception:  # already failing: the first error is the one to report
        logger.debug("closing a failed Tiled context", exc_info=True)


def _open_folder(
    data_dir: str | os.PathLike[str] | None,
    api_key: str | None,
    raw: str,
    processed: str,
    external_dir: str | os.PathLike[str] | None,
    readable_storage: Sequence[str | os.PathLike[str]],
    light: bool,
    background: bool,
    postgres: PostgresCatalog | None = None,
) -> Catalogs:
    root = Path(DEFAULT_DATA_DIR if data_dir is None else data_dir).resolve()
    ensure_folder(root, "the data folder")
    folder = DataFolder(root)
    ext = (folder.external if external_dir is None else Path(external_dir)).resolve()
    ensure_folder(ext, "the folder for detector files")
    readable = [ext, *(Path(p).resolve() for p in readable_storage)]
    running = folder.running_server()
    if running is None and background:
        if all(p.is_relative_to(folder.external) for p in readable):
            from xsvs_bluesky.storage.service import BackgroundStart

            folder.api_key(default=api_key)  # the server's key, if new
            starting = BackgroundStart(root)
            _structure_clients(light)  # the client's imports while it starts
            import tiled.client  # noqa: F401

            running = starting.wait()
    clients = _structure_clients(light)
    handle, use = None, None
    while handle is None and use is None:
        if running is None:
            handle = _serve_here(folder, api_key, readable, postgres)
            if handle is None:  # another process started serving meanwhile
                running = folder.running_server()
        if running is not None:
            # the serving process does not stop while this one uses it
            use = folder.use()
            running = folder.running_server()
            if running is None:  # it stopped meanwhile: serve here
                use.release()
                use = None
    if running is not None:
        assert use is not None
        try:
            return _use_running(
                folder, running, use, postgres, readable, ext, clients,
                raw, processed, light,
            )  # fmt: skip
        except BaseException:
            use.release()
            raise
    assert handle is not None
    ext.mkdir(parents=True, exist_ok=True)
    try:
        client = _connect(
            handle.uri, handle.api_key, f"the Tiled server of {root}", clients
        )
        return _catalogs(
            client, handle, root, ext, handle.uri, handle.api_key, raw, processed,
            light, readable=handle.readable,
        )  # fmt: skip
    except BaseException:
        handle.close()
        raise


def _use_running(
    folder: DataFolder,
    running: Any,
    use: Any,
    postgres: PostgresCatalog | None,
    readable: list[Path],
    ext: Path,
    clients: Any,
    raw: str,
    processed: str,
    light: bool,
) -> Catalogs:
    """Open the catalogs through the folder's server in another process."""
    root = folder.root
    if postgres is not None and folder.postgres_catalog() != postgres:
        raise StorageError(
            f"{root} is served by {running.describe()} from another catalog "
            f"than the {postgres.describe()}; stop it or drop the catalog"
        )
    outside = [p for p in readable if not p.is_relative_to(folder.external)]
    if outside:
        raise StorageError(
            f"{root} is served by {running.describe()}, which reads files only "
            f"under {folder.external}, not {outside[0]}; write there or stop it"
        )
    ext.mkdir(parents=True, exist_ok=True)
    key = folder.api_key(create=False)
    client = _connect(running.uri, key, f"the server of {root}", clients)
    logger.info("using the Tiled server of %s at %s", root, running.describe())
    return _catalogs(
        client, None, root, ext, running.uri, key, raw, processed, light, use,
        readable=(folder.external,),
    )  # fmt: skip


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


def _structure_clients(light: bool) -> Any:
    """``structure_clients`` of ``from_uri``: Tiled's default or the light ones."""
    if not light:
        return "numpy"
    from xsvs_bluesky.storage._light import LIGHT_CLIENTS

    return LIGHT_CLIENTS


def _connect(uri: str, key: str | None, what: str, clients: Any = "numpy") -> Any:
    """Connect to a data folder's server (key in a header), retrying at its start.

    A folder's server is local and plain HTTP: no probe for an HTTPS
    redirect (``from_uri`` makes one with a client of its own).
    """
    import httpx
    from tiled.client import from_context
    from tiled.client.context import Context

    deadline = time.monotonic() + 20.0
    while True:
        try:
            context = Context(uri.rstrip("/") + "/", api_key=key, trust_env=False)
            return from_context(context, structure_clients=clients)
        except httpx.ConnectError as err:
            if time.monotonic() > deadline:
                raise StorageError(
                    f"cannot connect to {what} at {uri} ({err})"
                ) from err
            time.sleep(0.2)


class _SharedServer:
    """One in-process server per folder, shared by the catalogs that use it."""

    _by_root: ClassVar[dict[Path, _SharedServer]] = {}

    def __init__(self, server: Any, folder: DataFolder, readable: list[Path]) -> None:
        self.server = server
        self.folder = folder
        self.readable = tuple(readable)
        self.users = 0

    @property
    def uri(self) -> str:
        return str(self.server.uri)

    @property
    def api_key(self) -> str:
        return str(self.server.api_key)

    def close(self) -> None:
        """Release one user; the last one stops the server and frees the folder."""
        self.users -= 1
        if self.users > 0:
            return
        self._by_root.pop(self.folder.root, None)
        gate = None
        try:
            gate = self.folder.wait_for_users(self._say_waiting)
        finally:  # stopped at once on Ctrl-C during the wait
            try:
                self.server.close()
            finally:
                self.folder.unlock()
                if gate is not None:
                    gate.close()

    def _say_waiting(self, users: str) -> None:
        logger.warning(
            "waiting for %s, which uses the Tiled server of %s in this process, "
            "before stopping it (Ctrl-C stops it at once)",
            users,
            self.folder.root,
        )


def _serve_here(
    folder: DataFolder,
    api_key: str | None,
    readable: list[Path],
    postgres: PostgresCatalog | None = None,
) -> _SharedServer | None:
    """Serve ``folder`` in this process (or share the server already here).

    None if another process took the folder's lock first.
    """
    from xsvs_bluesky.storage._app import LocalServer

    shared = _SharedServer._by_root.get(folder.root)
    if shared is not None and postgres is not None:
        if folder.postgres_catalog() != postgres:
            raise StorageError(
                f"{folder.root} is served in this process from another catalog "
                f"than the {postgres.describe()}"
            )
    if shared is None:
        if not folder.try_lock():
            return None
        try:
            if postgres is not None:
                folder.use_postgres(postgres)
            key = folder.api_key(default=api_key)
            assert key is not None
            server = LocalServer(folder, key, readable)
            folder.write_server_file(server.uri)
        except BaseException:
            folder.unlock()
            raise
        logger.info("Tiled server of %s in this process at %s", folder.root, server.uri)
        shared = _SharedServer._by_root[folder.root] = _SharedServer(
            server, folder, readable
        )
    shared.users += 1
    return shared


def _catalogs(
    client: Any,
    server: Any,
    root: Path | None,
    ext: Path | None,
    uri: str,
    key: str | None,
    raw: str,
    processed: str,
    light: bool = False,
    use: Any = None,
    readable: tuple[Path, ...] | None = None,
) -> Catalogs:
    return Catalogs(
        raw=None if light else ensure_run_catalog(client, raw),
        processed=ensure_run_catalog(client, processed),
        client=client,
        server=server,
        data_dir=root,
        external_dir=ext,
        uri=uri,
        api_key=key,
        use=use,
        readable_storage=readable,
    )


def _strip_query(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
