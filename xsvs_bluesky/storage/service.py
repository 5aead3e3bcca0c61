"""A long-running Tiled service over a data folder, and how others find it.

:func:`serve` runs a Tiled server over a data folder until Ctrl-C or
SIGTERM (``xsvs-bluesky serve``).  It writes ``tiled-config.yml`` into the
folder, so ``tiled serve config xsvs-data/tiled-config.yml`` serves the same
catalog with the same key, and keeps the API key in ``tiled-api-key`` (mode
0600).  One server per folder: the serving process holds a lock in the
folder, and a second server (ours, or Tiled's from that configuration) stops
with one line naming the first before it writes anything.

Every command given a data folder first looks for its server
(:func:`find_server`: the lock is held and ``tiled/server.json`` says
where) and connects to it; otherwise it serves the folder in-process for its
own duration (:func:`xsvs_bluesky.storage.open_catalogs`).

Clients send the key in the ``Authorization`` header (Tiled's client does
so for ``from_uri(uri, api_key=...)``), never as ``?api_key=`` in a URL,
which Tiled's access log would record.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xsvs_bluesky.errors import FolderBusyError, StorageError
from xsvs_bluesky.storage._folder import (
    DataFolder,
    RunningServer,
    url_host,
)
from xsvs_bluesky.storage._postgres import PostgresCatalog

__all__ = [
    "FolderBusyError",
    "RunningServer",
    "connection_help",
    "find_server",
    "folder_tree",
    "serve",
]

logger = logging.getLogger(__name__)


def find_server(data_dir: str | os.PathLike[str]) -> RunningServer | None:
    """Return the server of ``data_dir`` running in another process, or None.

    Raises
    ------
    FolderBusyError
        If the folder is locked by a process that did not say where it listens.
    """
    return DataFolder.at(data_dir).running_server()


def connection_help(uri: str, data_dir: str | os.PathLike[str]) -> str:
    """How another process connects to the server of ``data_dir`` at ``uri``."""
    folder = DataFolder.at(data_dir)
    key_file = folder.key_file
    postgres = folder.postgres_catalog()
    where = (
        "" if postgres is None else f"\nCatalog and tables in the {postgres.describe()}"
    )
    return (
        f"Tiled at {uri}, serving {Path(data_dir).resolve()}{where}\n"
        f"API key in {key_file} (mode 0600; never put it in a URL).\n"
        "Connect from another process:\n"
        f"  xsvs-bluesky results --data-dir {Path(data_dir).resolve()}\n"
        "  # or, in Python:\n"
        "  from pathlib import Path\n"
        "  from tiled.client import from_uri\n"
        f'  key = Path("{key_file}").read_text().strip()\n'
        f'  client = from_uri("{uri}", api_key=key)\n'
        f"  # or: export TILED_API_KEY=$(cat {key_file}) and from_uri(uri)"
    )


def folder_tree(
    data_dir: str,
    uri: str | None = None,
    readable_storage: Sequence[str] = (),
) -> Any:
    """Tiled tree entry of ``tiled-config.yml``: the folder's catalog.

    Takes the folder's lock for this process.  When another process serves
    the folder, it prints one line naming that server and ends the process
    (exit code 2) before anything is written: this runs inside
    ``tiled serve config``, which would otherwise show a traceback.
    """
    from xsvs_bluesky.storage._app import catalog_adapter

    folder = DataFolder.at(data_dir)
    ours_already = folder.held_here()  # `serve` took it and says where itself
    if not folder.try_lock():
        print(f"xsvs-bluesky: error: {folder.busy_message()}", file=sys.stderr)
        raise SystemExit(2)
    if uri is not None and not ours_already:
        folder.write_server_file(uri)
    return catalog_adapter(folder, [Path(p) for p in readable_storage])


def serve(
    data_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    readable_storage: Sequence[str | os.PathLike[str]] = (),
    catalog: str | None = None,
    on_start: Callable[[], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the data folder until SIGINT or SIGTERM, then return.

    Parameters
    ----------
    data_dir : path
        The data folder (created if absent).
    host : str
        Interface (default loopback only).
    port : int
        TCP port; 0 lets the system choose a free one.
    api_key : str, optional
        The folder's key when it has none yet (default: random, 64 hex digits).
    readable_storage : sequence of path
        More folders the server may serve files from (``<data_dir>/external``
        always).
    catalog : str, optional
        ``postgresql://USER@HOST/DATABASE`` (no password: see
        :class:`~xsvs_bluesky.storage.PostgresCatalog`): keep the catalog and
        the event tables in that database instead of the folder's SQLite and
        DuckDB files; frames stay in the folder.  Recorded in the folder, so
        later servers and commands of it use the same database.  Default: the
        folder's own choice (SQLite for a new folder).
    on_start : callable, optional
        Called once the folder is ours (its lock taken), before the slow start.
    on_ready : callable, optional
        Called with the API address once the server answers.

    Raises
    ------
    FolderBusyError
        If another process serves the folder (nothing has been written).
    OptionError
        If ``catalog`` is not a PostgreSQL address or holds a password.
    StorageError
        If the port cannot be bound, or the folder keeps its runs in another
        catalog than ``catalog``.
    """
    postgres = None if catalog is None else PostgresCatalog.parse(catalog)
    folder = DataFolder.at(data_dir)
    if folder.locked_elsewhere() or not folder.try_lock():
        raise FolderBusyError(folder.busy_message())
    try:
        if postgres is not None:
            folder.use_postgres(postgres)
        if on_start is not None:
            on_start()
        # the slow imports (seconds) only once the folder is ours
        import uvicorn
        from tiled.config import parse_configs
        from tiled.server.app import build_app_from_config

        from xsvs_bluesky.storage._app import log_config

        key = folder.api_key(default=api_key)
        assert key is not None
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        except OSError as err:
            raise StorageError(
                f"cannot listen on {host}:{port} ({err}); give another --port"
            ) from err
        port = sock.getsockname()[1]
        folder.external.mkdir(parents=True, exist_ok=True)
        readable = [folder.external, *(Path(p).resolve() for p in readable_storage)]
        config_file = folder.write_config(
            host=host, port=port, api_key=key, readable_storage=readable
        )
        uri = f"http://{url_host(host)}:{port}/api/v1"
        app = build_app_from_config(parse_configs(config_file))
        server = uvicorn.Server(
            uvicorn.Config(app, loop="asyncio", log_config=log_config(None))
        )

        def ready() -> None:
            folder.write_server_file(uri, host=host, port=port)
            if on_ready is not None:
                on_ready(uri)

        _when_started(server, ready)
        with _signals_end_quietly():
            server.run(sockets=[sock])
        sock.close()
    finally:
        folder.unlock()


def _when_started(server: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` once uvicorn has finished starting (from its loop)."""
    startup = server.startup

    async def startup_then_report(sockets: Any = None) -> None:
        await startup(sockets=sockets)
        if server.started:
            callback()

    server.startup = startup_then_report


class _signals_end_quietly:  # noqa: N801  (used as a context manager)
    """During the server's run, SIGINT and SIGTERM only stop it.

    uvicorn shuts down gracefully on them, then raises the signal again
    against the handlers it found: these record it and return, so the
    process ends normally (exit 0) instead of dying of the signal.
    """

    def __enter__(self) -> None:
        self._old = {
            sig: signal.signal(sig, self._note)
            for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _note(self, signum: int, frame: Any) -> None:
        logger.info("stopping on signal %d", signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
