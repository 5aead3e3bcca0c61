"""Serve a data folder with Tiled until Ctrl-C or SIGTERM.

A long-running local Tiled server over the data folder (127.0.0.1 by
default), so other processes (a second terminal, a notebook, the IPython
profile, every xsvs-bluesky command given the same --data-dir) read and
write the same runs without each starting a server of its own.

It writes into the folder:
  tiled-api-key     the API key (mode 0600; it is never logged or put in a URL)
  tiled-config.yml  Tiled's configuration of this catalog (0600, holds the key):
                    'tiled serve config xsvs-data/tiled-config.yml' serves the
                    same catalog
  tiled/server.json where it listens (read by the other commands)

One server per folder: a second 'serve' (or 'tiled serve config' of that
file) over a folder already served stops with one line naming the first.

At facility scale, --catalog keeps Tiled's catalog and the runs' tables in a
PostgreSQL database (frames stay in the folder's files).  The folder records
it: later servers and commands of that folder use the same database.  Never
put a password in the address (Tiled logs it): use ~/.pgpass or PGPASSFILE,
or peer authentication on a unix socket (docs/how-to/postgresql.md).

'demo', 'replay', 'reanalyze', 'results', 'export' and 'report' start one in
the background when none runs (unless --in-process); 'serve --stop' stops it.
A process that serves the folder only for its own duration (a command run
with --in-process, 'listen', the IPython profile) answers the other commands
too, and waits for them before it stops.

Typical commands:
  xsvs-bluesky serve                          (./xsvs-data, a free port)
  xsvs-bluesky serve --data-dir /data/xsvs --port 8000
  xsvs-bluesky results --data-dir /data/xsvs  (in another terminal: uses it)
  xsvs-bluesky serve --data-dir /data/xsvs \
      --catalog postgresql://xsvs@dbhost/xsvs
  xsvs-bluesky serve --catalog \
      'postgresql://xsvs@localhost/xsvs?host=/run/postgresql'  (unix socket)
  xsvs-bluesky serve --stop --data-dir /data/xsvs
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]

_PROG = "xsvs-bluesky serve"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky serve``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the data folder to serve, created if absent (default ./xsvs-data)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=0,
        metavar="N",
        help="TCP port (default 0: a free port chosen by the system, printed)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--catalog",
        metavar="URI",
        help="postgresql://USER@HOST[:PORT]/DATABASE (no password): Tiled's catalog "
        "and the runs' tables in that database instead of the folder's SQLite "
        "and DuckDB files (default: the folder's own choice, SQLite when new)",
    )
    parser.add_argument(
        "--stop",
        action="store_true",
        help="stop the server of the data folder (e.g. one another command "
        "started in the background) instead of starting one",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; return the exit code."""
    from pathlib import Path

    from xsvs_bluesky.storage import (
        DEFAULT_DATA_DIR,
        connection_help,
        ensure_folder,
        serve,
    )

    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    if args.stop:
        from xsvs_bluesky.storage import stop_server

        stopped = stop_server(data_dir)
        if stopped is None:
            print(f"{_PROG}: no server of {data_dir} is running", file=sys.stderr)
        else:
            print(f"{_PROG}: stopped {stopped.describe()}", file=sys.stderr)
        return 0
    ensure_folder(data_dir, "the data folder to serve")

    def start() -> None:
        where = "" if args.catalog is None else " and its PostgreSQL catalog"
        print(
            f"{_PROG}: starting Tiled over {data_dir}{where}",
            file=sys.stderr,
            flush=True,
        )

    def ready(uri: str) -> None:
        print(connection_help(uri, data_dir), flush=True)
        print(
            f"{_PROG}: ready; Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True
        )

    serve(
        data_dir,
        host=args.host,
        port=args.port,
        catalog=args.catalog,
        on_start=start,
        on_ready=ready,
    )
    print(f"{_PROG}: stopped", file=sys.stderr, flush=True)
    return 0
