"""The files of a data folder that say who serves it and how to connect.

No Tiled import here: the command line reads these files before deciding
whether to import a server at all.  Layout::

    xsvs-data/
        tiled/              Tiled's catalog (SQLite), tables (DuckDB), arrays
            catalog-address the PostgreSQL database of catalog and tables,
                            when the folder uses one instead (no password)
            server.lock     held (fcntl.flock) by the one process serving
            server.json     {"uri", "pid", "host", "port"} of that process
            users.lock      shared-locked by each process using a server of
                            another process (see DataFolder.use)
            users/          who those processes are (pid, command)
            locks/          locks and scan_ids shared by the writers
            access.log      request log of in-process servers
            error.log
            serve.log       output of a server started in the background
        tiled-api-key       the folder's API key (mode 0600)
        tiled-config.yml    ``tiled serve config`` of this catalog (0600)
        external/           detector and replay HDF5, served by reference
        backup/             runs Tiled did not store whole, one JSON-lines
                            file each (``xsvs-bluesky upload`` writes them)

The lock is the liveness test: ``server.json`` counts only while its lock is
held, so a server killed without cleaning up leaves nothing that misleads.

A process serving the folder only for its own duration (a command's
in-process server, the IPython profile, a listener) does not stop it while
other processes use it: they hold ``users.lock`` shared
(:meth:`DataFolder.use`), and the server's process takes it exclusively
before stopping (:meth:`DataFolder.wait_for_users`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from xsvs_bluesky.errors import FolderBusyError, StorageError
from xsvs_bluesky.storage._postgres import PostgresCatalog

__all__ = [
    "DataFolder",
    "FolderBusyError",
    "FolderUse",
    "RunningServer",
    "url_host",
]

#: lock files this process holds, by path (kept open for the process's life
#: or until released): flock conflicts between two open files of one process
_HELD: dict[Path, IO[bytes]] = {}


@dataclass(frozen=True)
class RunningServer:
    """A server of a data folder found through its ``server.json``.

    Attributes
    ----------
    uri : str
        API address, e.g. ``http://127.0.0.1:8000/api/v1`` (no key in it).
    pid : int or None
        Process id of the server (None if it did not say).
    """

    uri: str
    pid: int | None

    def describe(self) -> str:
        """``"http://127.0.0.1:8000/api/v1 (pid 1234)"``."""
        return self.uri + ("" if self.pid is None else f" (pid {self.pid})")


class FolderUse:
    """A process's use of the server of another (see :meth:`DataFolder.use`)."""

    def __init__(self, handle: IO[bytes], note: Path) -> None:
        self._handle: IO[bytes] | None = handle
        self._note = note

    def release(self) -> None:
        """Let the serving process stop (idempotent)."""
        if self._handle is None:
            return
        self._note.unlink(missing_ok=True)
        self._handle.close()  # releases the shared lock
        self._handle = None


@dataclass(frozen=True)
class DataFolder:
    """Paths and bookkeeping of one data folder (absolute ``root``)."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> DataFolder:
        """Return the folder at ``path`` (resolved; nothing is created)."""
        return cls(Path(path).resolve())

    @property
    def tiled(self) -> Path:
        """Tiled's own storage: catalog, tables, arrays, logs."""
        return self.root / "tiled"

    @property
    def catalog_db(self) -> Path:
        """The SQLite catalog."""
        return self.tiled / "catalog.db"

    @property
    def external(self) -> Path:
        """Default folder of detector and replay files."""
        return self.root / "external"

    @property
    def backup(self) -> Path:
        """Local backup of the runs Tiled did not store whole."""
        return self.root / "backup"

    @property
    def key_file(self) -> Path:
        """The API key (0600)."""
        return self.root / "tiled-api-key"

    @property
    def config_file(self) -> Path:
        """The Tiled configuration serving this catalog (0600: it holds the key)."""
        return self.root / "tiled-config.yml"

    @property
    def lock_file(self) -> Path:
        """Locked by the process serving the folder."""
        return self.tiled / "server.lock"

    @property
    def users_file(self) -> Path:
        """Held shared by each process using a server of another process."""
        return self.tiled / "users.lock"

    @property
    def server_file(self) -> Path:
        """Where the serving process says how to reach it."""
        return self.tiled / "server.json"

    @property
    def catalog_address_file(self) -> Path:
        """Names the PostgreSQL catalog of the folder, when it has one."""
        return self.tiled / "catalog-address"

    def has_catalog(self) -> bool:
        """Whether the folder holds an initialised SQLite Tiled catalog."""
        return self.catalog_db.is_file()

    def postgres_catalog(self) -> PostgresCatalog | None:
        """Return the folder's PostgreSQL catalog, or None (embedded SQLite)."""
        try:
            text = self.catalog_address_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return PostgresCatalog.parse(text)

    def use_postgres(self, catalog: PostgresCatalog) -> None:
        """Record that the folder's catalog and tables live in ``catalog``.

        Raises
        ------
        StorageError
            If the folder already has another catalog (its SQLite one, or
            another database): runs would be split between two catalogs.
        """
        current = self.postgres_catalog()
        if current == catalog:
            return
        if current is not None:
            raise StorageError(
                f"{self.root} keeps its runs in the {current.describe()}, not the "
                f"{catalog.describe()}; give that --catalog, or another --data-dir"
            )
        if self.has_catalog():
            raise StorageError(
                f"{self.root} keeps its runs in its own SQLite catalog "
                f"({self.catalog_db}); give a new --data-dir for a PostgreSQL one"
            )
        self.tiled.mkdir(parents=True, exist_ok=True)
        _write_private(self.catalog_address_file, catalog.address + "\n")

    # -- the API key ---------------------------------------------------------

    def api_key(self, *, create: bool = True, default: str | None = None) -> str | None:
        """Return the folder's API key, made (from ``default`` or random) if absent.

        The key file is created with mode 0600 (owner only) before the key is
        written into it.
        """
        try:
            key = self.key_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            key = ""
        if key or not create:
            return key or None
        key = default or secrets.token_hex(32)
        if not key.isalnum():
            raise StorageError(
                "a Tiled API key must be letters and digits only (Tiled refuses "
                "others); give another --api-key"
            )
        _write_private(self.key_file, key + "\n")
        return key

    # -- one server per folder -----------------------------------------------

    def try_lock(self) -> bool:
        """Take the folder's server lock for this process; False if held elsewhere.

        Idempotent within a process.  The lock lasts until :meth:`unlock` or
        the end of the process.
        """
        if self.lock_file in _HELD:
            return True
        self.tiled.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+b")  # noqa: SIM115  (held open)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        _HELD[self.lock_file] = handle
        self.server_file.unlink(missing_ok=True)  # left by a server that died
        return True

    def held_here(self) -> bool:
        """Whether this process holds the folder's server lock."""
        return self.lock_file in _HELD

    def unlock(self) -> None:
        """Release the lock (and the ``server.json`` that went with it)."""
        handle = _HELD.pop(self.lock_file, None)
        if handle is None:
            return
        self.server_file.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    def locked_elsewhere(self) -> bool:
        """Whether another process holds the lock (a server is running)."""
        if self.held_here() or not self.lock_file.exists():
            return False
        with open(self.lock_file, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def running_server(self, wait_s: float = 30.0) -> RunningServer | None:
        """Return the live server of this folder in another process, or None.

        A server that holds the lock but has not yet written where it listens
        is starting: wait up to ``wait_s`` for it.
        """
        deadline = time.monotonic() + wait_s
        while self.locked_elsewhere():
            info = self._read_server_file()
            if info is not None:
                return info
            if time.monotonic() > deadline:
                raise FolderBusyError(
                    f"{self.root} is served by another process that does not say "
                    f"where ({self.server_file} missing); stop it or connect with "
                    "--tiled-uri"
                )
            time.sleep(0.1)
        return None

    def busy_message(self) -> str:
        """One line naming the process that serves the folder."""
        info = self._read_server_file()
        where = info.describe() if info else f"a process holding {self.lock_file}"
        return (
            f"{self.root} is already served by {where}; use that server "
            "(commands given this --data-dir find it) or stop it first"
        )

    # -- processes using another process's server ---------------------------

    def use(self) -> FolderUse:
        """Say that this process uses the folder's server (until ``release``).

        Takes ``users.lock`` shared; blocks while the serving process is
        stopping (it holds the lock exclusively then).  The caller checks
        afterwards that a server still runs (:meth:`running_server`).
        """
        self.tiled.mkdir(parents=True, exist_ok=True)
        handle = open(self.users_file, "a+b")  # noqa: SIM115  (held open)
        try:
            fcntl.flock(handle, fcntl.LOCK_SH)
        except BaseException:
            handle.close()
            raise
        note = self.tiled / "users" / f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            note.parent.mkdir(exist_ok=True)
            command = " ".join(["xsvs-bluesky", *sys.argv[1:]])[:300]
            note.write_text(f"{os.getpid()} {command}\n", encoding="utf-8")
        except OSError:  # only for the message of the serving process
            pass
        return FolderUse(handle, note)

    def other_users(self) -> list[str]:
        """``pid N (command)`` of the live processes using this folder's server."""
        found = []
        for note in sorted((self.tiled / "users").glob("*-*")):
            try:
                pid_text, _, command = note.read_text(encoding="utf-8").partition(" ")
                pid = int(pid_text)
                os.kill(pid, 0)
            except ProcessLookupError:
                note.unlink(missing_ok=True)  # left by a process that died
                continue
            except (OSError, ValueError):
                continue
            if pid != os.getpid():
                found.append(f"pid {pid} ({command.strip()})")
        return found

    def wait_for_users(self, on_wait: Callable[[str], None]) -> IO[bytes]:
        """Block until no other process uses this process's server of the folder.

        Takes ``users.lock`` exclusively and returns its open file: keep it
        until the server is stopped and the folder unlocked, then close it,
        so that no process starts using the server meanwhile.  ``on_wait`` is
        called once, naming the processes, when there are some.
        """
        self.tiled.mkdir(parents=True, exist_ok=True)
        handle = open(self.users_file, "a+b")  # noqa: SIM115  (returned)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                users = self.other_users()
                on_wait(", ".join(users) if users else "another process")
                fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        return handle

    def write_server_file(self, uri: str, **extra: Any) -> None:
        """Say where this process serves the folder (requires the lock)."""
        payload = {"uri": uri, "pid": os.getpid(), **extra}
        tmp = self.server_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.server_file)

    def _read_server_file(self) -> RunningServer | None:
        try:
            data = json.loads(self.server_file.read_text(encoding="utf-8"))
            return RunningServer(uri=str(data["uri"]), pid=data.get("pid"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- the Tiled configuration ---------------------------------------------

    def write_config(
        self,
        *,
        host: str,
        port: int,
        api_key: str,
        readable_storage: list[Path],
    ) -> Path:
        """Write ``tiled-config.yml``: ``tiled serve config`` of this catalog."""
        readable = "".join(f"\n        - {_yaml_str(str(p))}" for p in readable_storage)
        uri = f"http://{url_host(host)}:{port}/api/v1"
        text = f"""\
# Written by `xsvs-bluesky serve`: the Tiled server of this data folder.
#   tiled serve config {self.config_file}
# serves the same catalog as `xsvs-bluesky serve --data-dir {self.root}`
# (one server per folder: a second one stops with one line naming the first).
# This file holds the API key: keep it private (mode 0600).
authentication:
  single_user_api_key: {api_key}
trees:
  - path: /
    tree: xsvs_bluesky.storage.service:folder_tree
    args:
      data_dir: {_yaml_str(str(self.root))}
      uri: {_yaml_str(uri)}
      readable_storage:{readable or " []"}
media_types:
  BlueskyRun:
    application/json-seq: bluesky_tiled_plugins.exporters:json_seq_exporter
uvicorn:
  host: {_yaml_str(host)}
  port: {port}
"""
        _write_private(self.config_file, text)
        return self.config_file


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML scalar


def url_host(host: str) -> str:
    """Host part of a URL reaching a server listening on ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
