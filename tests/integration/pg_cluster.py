"""A throwaway PostgreSQL cluster: ``initdb`` in a temporary folder, one server.

Used by the ``postgres`` fixtures (``tests/integration/conftest.py``) and by
``benchmarks/bench_postgres.py``.  The server listens only on a unix socket in
a private folder (mode 0700, owned by the server's user) with ``trust``
authentication: only that user and root can reach the socket, and no password
exists anywhere, so none can leak into a log.  As root, ``initdb`` and
``postgres`` run as the ``postgres`` user (``initdb`` refuses root); as another
user, they run as that user.

Requires the server binaries (Debian: ``apt-get install postgresql``, found in
``/usr/lib/postgresql/*/bin``) or ``initdb`` on the PATH.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import free_port

__all__ = ["PostgresCluster", "find_bin_dir", "missing_reason", "store_metadata_runs"]

_START_TIMEOUT_S = 60.0


def find_bin_dir() -> Path | None:
    """Folder of ``initdb`` and ``postgres`` (the newest Debian version), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return None if on_path is None else Path(on_path).parent


def missing_reason() -> str | None:
    """Why no cluster can be made here, or None when one can."""
    if find_bin_dir() is None:
        return (
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/"
            "initdb, no initdb on PATH); install them: apt-get install postgresql"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run initdb as"
    return None


class PostgresCluster:
    """A PostgreSQL server on a private unix socket, in a temporary folder.

    Use as a context manager (or :meth:`start` / :meth:`stop`); the folder is
    removed at stop.

    Attributes
    ----------
    root : Path
        The temporary folder (data in ``root/data``, socket in ``root/socket``,
        server log ``root/server.log``).
    port : int
        The port number that names the socket (no TCP listener).
    user : str
        Database superuser (the system user the server runs as).
    """

    def __init__(self) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(missing_reason())
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        # not under pytest's tmp_path: the server's user must reach the folder
        self.root = Path(tempfile.mkdtemp(prefix="xsvs-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- processes -------------------------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if self.as_root:
            return ["runuser", "-u", self.user, "--", *argv]
        return argv

    def _run(self, *argv: str) -> None:
        proc = subprocess.run(
            self._as_server_user([str(self.bin_dir / argv[0]), *argv[1:]]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}"
            )

    def start(self) -> PostgresCluster:
        """Run ``initdb`` and start the server; return once it accepts connections."""
        self.socket_dir.mkdir(mode=0o700)
        self.log.touch()
        if self.as_root:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir, self.log):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        with open(self.log, "ab") as log:  # the server keeps its own copy
            self._proc = subprocess.Popen(
                self._as_server_user(
                    [
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(self.data),
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.socket_dir),
                        "-c",
                        "listen_addresses=",  # the unix socket only
                        "-c",
                        "fsync=off",
                        "-c",
                        "max_connections=200",
                    ]
                ),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            ready = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                ],
                capture_output=True,
            )
            if ready.returncode == 0:
                return self
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"PostgreSQL did not start: {self.log.read_text()[-2000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the folder."""
        if self._proc is not None and self._proc.poll() is None:
            # SIGINT to the postmaster itself (runuser does not pass it on):
            # PostgreSQL's fast shutdown, which ends open sessions
            try:
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGINT)
            except (OSError, ValueError, IndexError):
                self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=30)
        self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------

    def createdb(self, name: str, owner: str | None = None) -> str:
        """Create the database ``name``; return its address (no password)."""
        owned = [] if owner is None else ["-O", owner]
        self._run(
            "createdb",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            *owned,
            name,
        )
        return self.uri(name, owner)

    def uri(self, name: str, user: str | None = None) -> str:
        """``postgresql://USER@localhost/NAME?host=SOCKET&port=N``.

        The host part is not used (the ``host`` parameter, a folder, selects
        the unix socket) but must not be empty: Tiled's table storage refuses
        an empty host.
        """
        return (
            f"postgresql://{user or self.user}@localhost/{name}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    def psql(self, dbname: str, sql: str) -> str:
        """Run ``sql`` in ``dbname`` as the superuser; return the bare output."""
        proc = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                dbname,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def add_password_user(self, name: str, password: str) -> None:
        """A role that must give ``password`` (scram-sha-256) on the socket.

        Other roles keep trust authentication.
        """
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {name} scram-sha-256\n" + hba.read_text())
        self.psql("postgres", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGHUP)  # reload pg_hba.conf
        time.sleep(0.5)


def store_metadata_runs(catalog_uri: str, container: str, starts: list[dict]) -> None:
    """Store metadata-only runs in one batch, through Tiled's catalog adapter.

    The same rows as ``create_container`` over HTTP (~0.1 s each here, 2
    minutes for 1000), written concurrently from this process.
    """
    import asyncio

    from tiled.catalog import from_uri
    from tiled.structures.core import Spec, StructureFamily

    async def store() -> None:
        # a pool size of its own: an engine apart from the server's (Tiled
        # shares one per settings in a process, bound to the server's loop)
        root = from_uri(catalog_uri, catalog_pool_size=8)
        await root.startup()
        parent = await root.lookup_adapter([container])
        limit = asyncio.Semaphore(8)

        async def one(start: dict) -> None:
            async with limit:
                await parent.create_node(
                    StructureFamily.container,
                    {"start": start, "stop": {"exit_status": "success"}},
                    key=start["uid"],
                    specs=[Spec("BlueskyRun", version="3.0")],
                )

        try:
            await asyncio.gather(*(one(start) for start in starts))
        finally:
            await root.shutdown()

    asyncio.run(store())
