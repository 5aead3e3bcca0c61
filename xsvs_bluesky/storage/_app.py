"""The Tiled application over a data folder, in this process.

Why not :class:`tiled.server.SimpleTiledServer`: it runs ``tiled catalog
init`` in a subprocess at every start (half of its 7-28 s here), its uvicorn
thread is not a daemon (a process that never closes it cannot exit: the
IPython profile hung on ``exit``), and every app it builds writes its API key
into Tiled's process-wide settings (the last key wins).  Here the catalog is
initialised in-process and only when new, the server thread is a daemon
closed at exit, and each app keeps its own copy of the settings.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import logging
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsvs_bluesky.errors import StorageError
from xsvs_bluesky.storage._folder import DataFolder

__all__ = [
    "LocalServer",
    "build_folder_app",
    "catalog_adapter",
    "close_log_files",
    "log_config",
    "no_delay",
    "quiet_pool_resets",
    "resolve_overrides",
    "serialize_embedded_tables",
]

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 30.0


def catalog_adapter(folder: DataFolder, readable_storage: Sequence[Path]) -> Any:
    """Tiled's catalog adapter over ``folder`` (initialised first if new).

    The catalog and tables are the folder's SQLite and DuckDB files, or the
    PostgreSQL database the folder names (:meth:`DataFolder.postgres_catalog`);
    arrays written through Tiled go to ``tiled/data`` in both cases.
    """
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.config import StreamingCacheConfig

    (folder.tiled / "data").mkdir(parents=True, exist_ok=True)
    postgres = folder.postgres_catalog()
    if postgres is None:
        if not folder.has_catalog():
            _init_catalog(f"sqlite+aiosqlite:///{folder.catalog_db}", folder.catalog_db)
        catalog = f"sqlite:///{folder.catalog_db}"
        tables = _embedded_tables_uri(folder)
    else:
        catalog = postgres.catalog_uri
        tables = postgres.tables_uri
        _init_catalog(catalog, None)
    adapter = catalog_from_uri(
        catalog,
        writable_storage=[folder.tiled / "data", tables],
        readable_storage=[Path(p) for p in readable_storage],
        init_if_not_exists=False,
        cache_config=StreamingCacheConfig(uri="memory").model_dump(),
    )
    serialize_embedded_tables(folder)
    return adapter


def _embedded_tables_uri(folder: DataFolder) -> str:
    """Address of the folder's DuckDB tables, as given to Tiled."""
    return f"duckdb:///{folder.tiled / 'storage.duckdb'}"


def serialize_embedded_tables(folder: DataFolder) -> None:
    """Let one request at a time use the folder's DuckDB tables.

    Tiled keeps one DuckDB connection per database (its pool for DuckDB is a
    ``StaticPool``) and hands that same connection to every request thread
    at once.  An ADBC connection is not safe to share: a table read while
    another request appends failed with ``Attempting to execute an
    unsuccessful or closed pending query result``, appends with HTTP 500,
    and under a live viewer the server process died (a segfault) or
    aborted (``std::system_error``).  Here the folder's storage object (the
    one Tiled's table adapters look up) hands out its connection under a
    lock, released when the adapter closes it (Tiled's adapters use it as
    ``with closing(storage.connect())``).  Only this storage object changes;
    a PostgreSQL tables database (a pool of connections) is left as it is.
    Called after the catalog adapter registered the storage.
    """
    from tiled.storage import ensure_uri, get_storage

    if folder.postgres_catalog() is not None:
        return
    try:
        # the registry's spelling of the address (duckdb://localhost//...)
        storage = get_storage(ensure_uri(_embedded_tables_uri(folder)))
    except KeyError:  # not registered: nothing of ours shares a connection
        return
    if getattr(storage, "_xsvs_serialized", False):
        return
    pooled = type(storage).connect
    lock = threading.RLock()

    def connect() -> Any:
        lock.acquire()
        try:
            connection = pooled(storage)
        except BaseException:
            lock.release()
            raise
        return _LockedConnection(connection, lock)

    # an instance attribute of this one (frozen) storage object, not a patch
    # of the class that other servers of the process use
    object.__setattr__(storage, "connect", connect)
    object.__setattr__(storage, "_xsvs_serialized", True)


class _LockedConnection:
    """A pooled connection whose :meth:`close` also releases its lock."""

    def __init__(self, connection: Any, lock: Any) -> None:
        self._connection = connection
        self._lock: Any = lock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def close(self) -> None:
        lock, self._lock = self._lock, None
        try:
            self._connection.close()
        finally:
            if lock is not None:
                lock.release()


def _init_catalog(uri: str, sqlite_file: Path | None) -> None:
    """Create the tables of a catalog unless it has them, as ``tiled catalog init``.

    Run in a short-lived thread: the caller may already run an event loop
    (IPython, Jupyter), and alembic's migration environment calls
    ``asyncio.run``.  ``sqlite_file`` (removed on failure) is the SQLite file
    of ``uri``, None for a database server.
    """
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database

    failure: list[BaseException] = []
    created: list[bool] = []

    async def create() -> None:
        engine = create_async_engine(uri)
        try:
            try:
                await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            except UninitializedDatabase:
                await initialize_database(engine)
                created.append(True)
        finally:
            await engine.dispose()

    def work() -> None:
        try:
            asyncio.run(create())
            if created:
                with warnings.catch_warnings():
                    # alembic on Tiled's own alembic.ini: noise, not ours to fix
                    warnings.filterwarnings("ignore", message="No path_separator found")
                    stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except BaseException as err:  # re-raised in the caller
            failure.append(err)

    thread = threading.Thread(target=work, name="tiled-catalog-init")
    thread.start()
    thread.join()
    where = sqlite_file if sqlite_file is not None else _redacted(uri)
    if failure:
        if sqlite_file is not None:
            sqlite_file.unlink(missing_ok=True)
        raise StorageError(
            f"cannot open or create the Tiled catalog {where} "
            f"({type(failure[0]).__name__}: {failure[0]})"
        ) from failure[0]
    if created:
        logger.info("created the Tiled catalog %s", where)


def _redacted(uri: str) -> str:
    """Return ``uri`` without any password in it (for messages)."""
    from sqlalchemy.engine import make_url

    return str(make_url(uri).set(password=None))


def build_folder_app(tree: Any, api_key: str) -> Any:
    """Build the Tiled app serving ``tree`` with a single-user ``api_key``.

    JSON-seq export of Bluesky runs is registered; the app keeps its own
    copy of Tiled's settings so that another app of this process with
    another key does not replace this one's, resolved into its routes once
    (:func:`resolve_overrides`) rather than by FastAPI on every request.
    """
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.config import Authentication
    from tiled.media_type_registration import default_serialization_registry
    from tiled.server.app import build_app
    from tiled.server.settings import get_settings

    serializers = copy.deepcopy(default_serialization_registry)
    if "application/json-seq" not in serializers.media_types("BlueskyRun"):
        serializers.register("BlueskyRun", "application/json-seq", json_seq_exporter)
    app = build_app(
        tree,
        authentication=Authentication(single_user_api_key=api_key),
        serialization_registry=serializers,
    )
    shared = app.dependency_overrides[get_settings]
    own = shared().model_copy()  # the shared object, just set to this app's key

    def app_settings() -> Any:
        return own

    app.dependency_overrides[get_settings] = app_settings
    resolve_overrides(app)
    return app


def resolve_overrides(app: Any) -> int:
    """Build ``app.dependency_overrides`` into its HTTP routes; return how many.

    With any entry in ``app.dependency_overrides``, FastAPI rebuilds the
    dependency tree of every sub-dependency of a route on every request
    (signature inspection of each function: a sixth of the server's CPU per
    request here).  This app's overrides are fixed once built, so each HTTP
    route of the app gets them resolved into its tree once, and a handler
    built on that tree without the overrides provider.  Only routes of this
    app change (its own route objects and its inclusions of Tiled's
    routers); another app of the process is untouched.  The overrides stay
    in ``app.dependency_overrides`` (Tiled's startup reads the settings
    there); a route this does not recognise keeps resolving them per
    request (same answers, slower).  Overrides added after this call are
    not seen by the rebuilt routes.
    """
    from fastapi import routing

    overrides = dict(app.dependency_overrides)
    needed = ("_IncludedRouter", "_effective_route_context_var", "request_response")
    if not overrides or not all(hasattr(routing, name) for name in needed):
        return 0
    body_limit = getattr(routing, "wrap_app_with_body_limit", lambda inner, _: inner)
    rebuilt = 0
    for route in app.router.routes:
        if isinstance(route, routing.APIRoute):
            if route.dependency_overrides_provider is not app:
                continue
            route.dependant = _resolved_tree(route.dependant, overrides)
            route.dependency_overrides_provider = None
            route.app = body_limit(
                routing.request_response(route.get_route_handler()),
                getattr(route, "max_body_size", None),
            )
            rebuilt += 1
        elif isinstance(route, routing._IncludedRouter):
            for context in route.effective_route_contexts():
                original = context.original_route
                if (
                    not isinstance(original, routing.APIRoute)
                    or context.dependency_overrides_provider is not app
                    or context.dependant is None
                ):
                    continue
                context.dependant = _resolved_tree(context.dependant, overrides)
                context.dependency_overrides_provider = None
                # the route builds its handler from the context it is told of
                token = routing._effective_route_context_var.set(context)
                try:
                    context.app = body_limit(
                        routing.request_response(original.get_route_handler()),
                        context.max_body_size,
                    )
                finally:
                    routing._effective_route_context_var.reset(token)
                rebuilt += 1
    return rebuilt


def _resolved_tree(dependant: Any, overrides: dict[Any, Any]) -> Any:
    """Return ``dependant`` with every overridden sub-dependency replaced.

    The replacement is the tree FastAPI builds per request for an override
    (same path, name, scopes, cache and concurrency settings); untouched
    subtrees are shared with the original, which is not modified.
    """
    import dataclasses

    from fastapi.dependencies.models import _get_oauth_scopes
    from fastapi.dependencies.utils import get_dependant

    children = []
    for sub in dependant.dependencies:
        call = overrides.get(sub.call, sub.call)
        if call is not sub.call:
            sub = get_dependant(
                path=sub.path,
                call=call,
                name=sub.name,
                parent_oauth_scopes=_get_oauth_scopes(dependant=sub),
                use_cache=sub.use_cache,
                scope=sub.scope,
                concurrency=sub.concurrency,
            )
        children.append(_resolved_tree(sub, overrides))
    old = dependant.dependencies
    if all(new is was for new, was in zip(children, old, strict=True)):
        return dependant
    return dataclasses.replace(dependant, dependencies=children)


def no_delay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off for the connections a listening socket accepts.

    asyncio sets ``TCP_NODELAY`` only on sockets whose ``proto`` is
    ``IPPROTO_TCP``; sockets made with ``socket.socket(AF_INET, SOCK_STREAM)``
    or ``socket.create_server`` have proto 0, so uvicorn given such a socket
    answers with Nagle on.  A response goes out in two writes (headers, then
    body): on a kept-alive connection the body then waited for the client's
    delayed acknowledgement, 40 ms per request on Linux.  Accepted sockets
    inherit the option from the listening one.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoTransactionReset(logging.Filter):
    """Drop SQLAlchemy's report of a harmless failed reset of a DuckDB link.

    Tiled's tables store (DuckDB through ADBC) commits its own transactions;
    when SQLAlchemy's pool then resets the connection, the driver answers
    ``INVALID_STATE: No active transaction, cannot rollback`` and the pool
    logs it at ERROR level with a traceback.  Nothing is lost (the work was
    committed), but the traceback reached the user's terminal when the
    server runs in the command's process.  Other reset failures still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Exception during reset"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or "No active transaction" not in str(exc)


_POOL_LOGGERS = (
    "sqlalchemy.pool.impl.StaticPool",
    "sqlalchemy.pool.impl.QueuePool",
    "sqlalchemy.pool.impl.SingletonThreadPool",
    "sqlalchemy.pool.impl.AsyncAdaptedQueuePool",
)


def quiet_pool_resets() -> None:
    """Install :class:`_NoTransactionReset` on SQLAlchemy's pool loggers (once)."""
    for name in _POOL_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _NoTransactionReset) for f in target.filters):
            target.addFilter(_NoTransactionReset())


def log_config(folder: DataFolder | None) -> dict[str, Any]:
    """Tiled's logging configuration; with a folder, to files inside it."""
    from tiled.server.logging_config import LOGGING_CONFIG

    quiet_pool_resets()

    config = copy.deepcopy(LOGGING_CONFIG)
    if folder is not None:
        for name, file in (("access", "access.log"), ("default", "error.log")):
            handler = config["handlers"][name]
            handler["class"] = "logging.FileHandler"
            handler.pop("stream", None)
            handler["filename"] = str(folder.tiled / file)
    return config


class LocalServer:
    """A Tiled server of a data folder on a daemon thread of this process.

    Parameters
    ----------
    folder : DataFolder
        The folder; this process must hold its lock.
    api_key : str
        Single-user API key (sent by clients in a header, never in URLs).
    readable_storage : sequence of Path
        Folders of files the server serves by reference.
    host : str
        Interface to listen on (port chosen by the system).

    Attributes
    ----------
    uri : str
        API address (``http://127.0.0.1:PORT/api/v1``), no key in it.
    """

    def __init__(
        self,
        folder: DataFolder,
        api_key: str,
        readable_storage: Sequence[Path],
        host: str = "127.0.0.1",
    ) -> None:
        import uvicorn

        self.folder = folder
        self.api_key = api_key
        app = build_folder_app(catalog_adapter(folder, readable_storage), api_key)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        no_delay(self._sock)
        port = self._sock.getsockname()[1]
        self.uri = f"http://{host}:{port}/api/v1"
        config = uvicorn.Config(
            app, loop="asyncio", log_config=log_config(folder), lifespan="on"
        )
        self._server = _thread_server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"tiled-server-{port}",
            daemon=True,
        )
        self._thread.start()
        atexit.register(self.close)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise StorageError(
                    f"the Tiled server of {self.folder.root} stopped while starting; "
                    f"see {self.folder.tiled / 'error.log'}"
                )
            if time.monotonic() > deadline:
                raise StorageError(
                    f"the Tiled server of {self.folder.root} did not start in "
                    f"{_STARTUP_TIMEOUT_S:.0f} s; see {self.folder.tiled / 'error.log'}"
                )
            time.sleep(0.02)
        # the socket is open; the app answers once its startup tasks are done
        import httpx

        with httpx.Client(trust_env=False) as client:
            while True:
                try:
                    if client.get(self.uri[: -len("/api/v1")] + "/healthz").is_success:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or not self._thread.is_alive():
                    raise StorageError(
                        f"the Tiled server of {self.folder.root} does not answer; "
                        f"see {self.folder.tiled / 'error.log'}"
                    )
                time.sleep(0.02)

    def close(self) -> None:
        """Stop serving (idempotent); the data stay in the folder."""
        atexit.unregister(self.close)
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._sock.close()
        close_log_files(self.folder)


def close_log_files(folder: DataFolder) -> None:
    """Detach and close the log handlers writing into ``folder`` (its server stopped).

    uvicorn configures the process's loggers when a server is made; the
    files of a stopped server stayed open until the next configuration
    dropped their handlers unclosed (a ``ResourceWarning`` later, in
    whatever ran then).
    """
    root = str(folder.tiled)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for item in loggers:
        if not isinstance(item, logging.Logger):
            continue  # a placeholder of the logger tree
        for handler in list(item.handlers):
            name = getattr(handler, "baseFilename", "")
            if isinstance(handler, logging.FileHandler) and name.startswith(root):
                item.removeHandler(handler)
                handler.close()


def _thread_server(config: Any) -> Any:
    """Make a uvicorn server that leaves signals alone (it runs on a side thread)."""
    import uvicorn

    class ThreadServer(uvicorn.Server):
        def install_signal_handlers(self) -> None:
            pass

    return ThreadServer(config)
