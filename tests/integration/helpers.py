"""Plain helpers shared by the integration tests: ports, server processes, options.

Not a test module, and free of pytest (``pg_cluster``, which
``benchmarks/bench_postgres.py`` imports, uses :func:`free_port`):

- :func:`free_port`: a TCP port nothing listens on now;
- :func:`drain` / :func:`close_pipes`: threads that keep a subprocess's
  output lines, and their end;
- :func:`start_serve`: ``xsvs-bluesky serve`` in a subprocess, returned once
  it says it is ready (a :class:`ServeProcess`);
- :func:`processed_options`: the CLI options that address a
  :class:`~xsvs_bluesky.storage.Catalogs`' server and processed catalog.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xsvs_bluesky.storage import Catalogs
    from xsvs_bluesky.storage._folder import DataFolder

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "xsvs_bluesky.cli"]
READY_TIMEOUT_S = 240.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keep_lines(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)


def drain(
    proc: subprocess.Popen[str], out: list[str], err: list[str] | None = None
) -> list[threading.Thread]:
    """Start daemon threads appending ``proc``'s stdout (and stderr) lines.

    ``err`` None: stderr is not a pipe (e.g. merged into stdout).
    """
    pipes: list[tuple[IO[str] | None, list[str]]] = [(proc.stdout, out)]
    if err is not None:
        pipes.append((proc.stderr, err))
    threads = []
    for stream, into in pipes:
        assert stream is not None, "start the process with stdout=PIPE"
        thread = threading.Thread(target=_keep_lines, args=(stream, into), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def close_pipes(proc: subprocess.Popen[Any], threads: list[threading.Thread]) -> None:
    """Wait for the :func:`drain` threads (they end with the pipes); close them."""
    for thread in threads:
        thread.join(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass
class ServeProcess:
    """An ``xsvs-bluesky serve`` subprocess and the lines it printed."""

    proc: subprocess.Popen[str]
    data_dir: Path
    port: int | None = None
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    drains: list[threading.Thread] = field(default_factory=list)

    @property
    def folder(self) -> DataFolder:
        from xsvs_bluesky.storage._folder import DataFolder

        return DataFolder.at(self.data_dir)

    def log(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def stop(self) -> None:
        """SIGTERM, as a user stops it; wait for the exit."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def close(self) -> None:
        """Kill the process if it still runs; end the output threads."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        close_pipes(self.proc, self.drains)


def start_serve(
    data_dir: Path,
    *args: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ServeProcess:
    """Start ``serve --data-dir DATA_DIR [--port PORT] ARGS``; wait until ready.

    ``env`` is added to this process's environment.  Call
    :meth:`ServeProcess.close` when done.
    """
    argv = [*CLI, "serve", "--data-dir", str(data_dir), *args]
    if port is not None:
        argv += ["--port", str(port)]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    served = ServeProcess(proc, data_dir, port)
    served.drains = drain(proc, served.out, served.err)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not any("ready" in line for line in served.err):
        if proc.poll() is not None or time.monotonic() > deadline:
            served.close()
            raise AssertionError(f"serve did not start: {served.log()}")
        time.sleep(0.2)
    return served


def processed_options(cats: Catalogs) -> list[str]:
    """``--tiled-uri``, ``--api-key`` and ``--processed-catalog`` of ``cats``."""
    assert cats.api_key is not None, "the test servers require a key"
    return [
        "--tiled-uri",
        cats.uri,
        "--api-key",
        cats.api_key,
        "--processed-catalog",
        cats.processed.item["id"],
    ]


def fresh_catalogs(
    server: Catalogs, name: str | None = None, **options: Any
) -> Catalogs:
    """New raw/processed catalogs (and folders) of their own on ``server``.

    ``server`` is the session's catalogs (``tiled_server``); ``name`` (random
    by default) suffixes the catalog keys and the external and backup
    folders; ``options`` go to ``open_catalogs``.
    """
    import uuid

    from xsvs_bluesky.storage import open_catalogs

    name = name or uuid.uuid4().hex[:10]
    assert server.external_dir is not None and server.backup_dir is not None
    return open_catalogs(
        tiled_uri=server.uri,
        api_key=server.api_key,
        raw=f"raw-{name}",
        processed=f"processed-{name}",
        external_dir=server.external_dir / name,
        backup_dir=server.backup_dir / name,
        **options,
    )
