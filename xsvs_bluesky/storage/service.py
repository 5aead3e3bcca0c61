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
import subprocess
import sys
import time
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
    "BackgroundStart",
    "FolderBusyError",
    "RunningServer",
    "connection_help",
    "find_server",
    "folder_tree",
    "serve",
    "start_background_server",
    "stop_server",
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


def start_background_server(
    data_dir: str | os.PathLike[str], *, wait_s: float = 120.0
) -> RunningServer:
    """Start ``xsvs-bluesky serve`` of ``data_dir`` in its own session; wait for it.

    The server is a detached process (its own session, no terminal, output
    in ``<data_dir>/tiled/serve.log``) that outlives the caller, so the next
    commands given the folder find it.  It serves until stopped
    (:func:`stop_server`, ``xsvs-bluesky serve --stop``, SIGTERM).  If
    another process starts serving the folder meanwhile, that one is
    returned (this one stops at once, the folder being busy).

    Parameters
    ----------
    data_dir : path
        The data folder (created if absent).
    wait_s : float
        How long to wait for the server to answer, s.

    Returns
    -------
    RunningServer

    Raises
    ------
    StorageError
        If the server stopped before serving, or did not start within
        ``wait_s`` (the message names its log).
    """
    return BackgroundStart(data_dir).wait(wait_s)


class BackgroundStart:
    """``xsvs-bluesky serve`` of a folder, started in the background; wait later.

    :func:`start_background_server` in two steps, so the caller can do
    other work (imports) while the server starts.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.folder = DataFolder.at(data_dir)
        self.folder.tiled.mkdir(parents=True, exist_ok=True)
        self.log = self.folder.tiled / "serve.log"
        cmd = [sys.executable, "-m", "xsvs_bluesky.cli", "serve"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--data-dir", str(self.folder.root)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no Ctrl-C from the caller's terminal
            )
        logger.info("started Tiled of %s (pid %d)", self.folder.root, self.proc.pid)

    def wait(self, wait_s: float = 120.0) -> RunningServer:
        """Wait until the folder's server answers (see start_background_server)."""
        folder, proc = self.folder, self.proc
        deadline = time.monotonic() + wait_s
        while True:
            # waits while the server holds the lock but does not yet say where
            left = max(0.0, deadline - time.monotonic())
            running = folder.running_server(wait_s=left)
            if running is not None:
                return running
            code = proc.poll()
            if code is not None and not folder.locked_elsewhere():
                raise StorageError(
                    f"the Tiled server started for {folder.root} stopped (exit "
                    f"code {code}); see {self.log}"
                )
            if time.monotonic() > deadline:
                raise StorageError(
                    f"the Tiled server started for {folder.root} (pid {proc.pid}) "
                    f"did not answer within {wait_s:.0f} s; see {self.log}"
                )
            time.sleep(0.05)


def stop_server(
    data_dir: str | os.PathLike[str], *, wait_s: float = 30.0
) -> RunningServer | None:
    """Stop the server of ``data_dir`` (SIGTERM) and wait until it has exited.

    Returns
    -------
    RunningServer or None
        The server stopped, None if none was running.

    Raises
    ------
    StorageError
        If it cannot be signalled or is still running after ``wait_s``.
    """
    folder = DataFolder.at(data_dir)
    running = folder.running_server(wait_s=wait_s)
    if running is None:
        return None
    if running.pid is None:
        raise StorageError(f"the server of {folder.root} does not say its pid")
    try:
        os.kill(running.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError as err:
        raise StorageError(
            f"cannot stop {running.describe()} ({err}); it belongs to another user"
        ) from err
    deadline = time.monotonic() + wait_s
    while folder.locked_elsewhere():
        if time.monotonic() > deadline:
            raise StorageError(
                f"{running.describe()} still serves {folder.root} {wait_s:.0f} s "
                "after SIGTERM"
            )
        time.sleep(0.05)
    return running


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

        from xsvs_bluesky.storage._app import log_config, no_delay, resolve_overrides

        key = folder.api_key(default=api_key)
        assert key is not None
        try:
            sock = socket.create_server((host, port), reuse_port=False)
            no_delay(sock)
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
        resolve_overrides(app)  # once, instead of on every request
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
