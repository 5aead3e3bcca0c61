r"""Write the runs of the local backup into Tiled.

A run the Tiled server did not store whole (it was down, timed out or
failed while the run was written by replay, reanalyze, demo or a live
session) is kept in <data-dir>/backup/<run uid>.jsonl, its documents one
per line (the frames stay in their HDF5 files). This command writes each
such run into its catalog: the run of that uid the server holds, partial
or whole, is removed first (its frames are kept), every document is
written again, the run is read back (stop document, streams, rows), and
only then is the backup file deleted. Runs a running process is still
writing are left alone. replay, reanalyze and demo do the same when they
connect.

Prints one line per run written. Exit codes: 0 (everything written, or
nothing to write), 3 (the server does not answer, or a run could not be
written: one line naming the server and the cause, or the damaged file;
the backups stay), 2 (bad options, no such data folder).

Typical commands:
  xsvs-bluesky upload                          (./xsvs-data)
  xsvs-bluesky upload --data-dir /data/xsvs-data
  TILED_API_KEY=... xsvs-bluesky upload --tiled-uri http://host:8000
      (the backup of a named server: ./xsvs-data/backup/<host>_<port>)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

from xsvs_bluesky.cli._common import (
    BACKUP_EXIT,
    add_catalog_arguments,
    catalogs_from_args,
    upload_command,
)

__all__ = ["add_arguments", "run"]

_PROG = "xsvs-bluesky upload"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky upload`` to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_catalog_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``xsvs-bluesky upload``; return the exit code."""
    from xsvs_bluesky.errors import OptionError
    from xsvs_bluesky.storage import backup_files, upload_backups

    down = _server_down(args)
    if down is not None:
        print(down, file=sys.stderr)
        return BACKUP_EXIT
    with catalogs_from_args(args) as cats:
        folder = cats.backup_dir
        if folder is None:  # pragma: no cover - open_catalogs always sets it
            raise OptionError("no backup folder; give --backup-dir")
        if not backup_files(folder):
            print(f"{_PROG}: no runs in the backup {folder}", file=sys.stderr)
            return 0
        report = upload_backups(cats.client, folder)
    for done in report.uploaded:
        print(done.describe())
    for path in report.busy:
        print(
            f"{_PROG}: {path} is being written by a running process: left alone",
            file=sys.stderr,
        )
    if report.failed:
        path, cause = report.failed[0]
        left = len(backup_files(folder))
        print(
            f"{_PROG}: error: the Tiled server at {cats.uri} did not store the run "
            f"of {path.name} ({cause}); {left} run(s) stay in {folder}; run "
            f"'{upload_command(args, cats)}' again when it answers",
            file=sys.stderr,
        )
        return BACKUP_EXIT
    return 0


def _server_down(args: argparse.Namespace) -> str | None:
    """Return the error line when runs wait in the backup for a server that is down.

    Asked once, before the catalogs are opened (Tiled's client would retry
    for 45 s, printing ``Retrying...``): the named server, or the running
    server of the data folder (a folder no server runs is served here).
    """
    from xsvs_bluesky.storage import (
        DEFAULT_DATA_DIR,
        backup_files,
        find_server,
        why_unanswered,
    )
    from xsvs_bluesky.storage.server import named_server_backup

    data_dir: Path | None = None
    if args.tiled_uri is not None:
        uri = str(args.tiled_uri)
        folder = Path(args.backup_dir or named_server_backup(uri))
    else:
        data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
        running = find_server(data_dir)
        if running is None:
            return None
        uri = running.uri
        folder = Path(args.backup_dir or data_dir / "backup")
    folder = folder.resolve()
    if not folder.is_dir():
        return None
    waiting = len(backup_files(folder))
    if not waiting:
        return None
    cause = why_unanswered(uri)
    if cause is None:
        return None
    where = SimpleNamespace(data_dir=data_dir, uri=uri, backup_dir=folder)
    return (
        f"{_PROG}: error: the Tiled server at {uri} does not answer ({cause}); "
        f"{waiting} run(s) stay in {folder}; run '{upload_command(args, where)}' "
        "again when it answers"
    )
