r"""Replay a legacy pyxsvs series (INI + EDF frames) into Tiled, and analyse it.

Writes ONE raw bluesky run, as an ophyd-async MAXIPIX would have produced it:
one stream per exposure, the frames written once to compressed HDF5 files
(one per exposure, in <data-dir>/external/replay/<uid>/ or --output-dir)
and referenced by StreamResource/StreamDatum documents. The same documents
go through the live analysis callback, which writes a derived run (the
contrast beta per exposure and q) to the processed catalog. Prints the raw
and derived run uids and the beta table (same columns as 'xsvs-bluesky
results').

Everything is checked (INI, frame files, masks, flat field, q partitions)
before anything is written. A series replayed before (same content hash:
INI bytes, mask/flat-field and frame file bytes) is not replayed again: one
line names the existing raw run and the exit code is 0; --force replays it
anyway. On an error, Ctrl-C or SIGTERM during the replay the runs still
open are stopped with exit_status fail/abort; the HDF5 files of a raw run
stored in Tiled are kept. The next replay of the series reports such a
partial raw run in one line and replaces it (removed from Tiled with its
derived runs, then its files), or, when the raw run was stored complete but
its analysis was interrupted, analyses it again. A second replay of a
series that another process is replaying into the same catalogs waits for
it (one line names that process), then finds its run.

With no server named, a data folder that no server runs gets a background
'xsvs-bluesky serve' that answers this and the next commands (as for
'demo' and 'results'; --in-process serves it inside this command only).

If the Tiled server fails during the replay (down, timing out), the replay
goes on: the runs' documents are kept whole in the local backup
(<data-dir>/backup), the results are printed, and one line names the
server, the cause and the backup (exit code 3); 'xsvs-bluesky upload', or
the next replay, writes them into Tiled once the server answers.

Typical commands:
  xsvs-bluesky replay analysis/xsvs/xsvs_input.txt        (./xsvs-data)
  xsvs-bluesky replay xsvs_input.txt --estimator pyxsvs-lsq --flat-field divide-round
  xsvs-bluesky replay xsvs_input.txt --format json > beta.json
  TILED_API_KEY=... xsvs-bluesky replay xsvs_input.txt --tiled-uri http://host:8000 \\
      --output-dir /data/tiled-readable/replay
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from xsvs_bluesky.cli._common import (
    add_catalog_arguments,
    add_estimator_arguments,
    add_limit_arguments,
    add_progress_arguments,
    analysis_options,
    backup_exit,
    catalogs_from_args,
    flush_warnings,
    nonnegative_int,
    progress_bar,
    recorded_warnings,
    show_progress,
    upload_pending,
    warn,
)

__all__ = ["add_arguments", "add_output_arguments", "print_results", "run"]

_PROG = "xsvs-bluesky replay"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--format`` and ``--progress``/``--no-progress`` (replay, reanalyze)."""
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="beta table on stdout: readable table (default, after the run uids), "
        "or csv / json records (run uids in every record)",
    )
    add_progress_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky replay`` to ``parser``."""
    from xsvs_bluesky.options import COMPRESSIONS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("ini", metavar="INI", help="the pyxsvs INI input file")
    add_estimator_arguments(parser, of="the INI's")
    add_limit_arguments(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replay even if this series was replayed before (a new raw run)",
    )
    parser.add_argument(
        "--skip-bad-frames",
        action="store_true",
        help="leave out missing, truncated or corrupt frame files (listed on "
        "stderr and in the run's stop reason) instead of stopping",
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="folder of the HDF5 files, one subfolder per run (default "
        "<data-dir>/external/replay); with --data-dir a folder under "
        "<data-dir>/external (the server reads only there), with --tiled-uri a "
        "folder the server may read (its readable storage)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="blosc-lz4",
        help="HDF5 compression of the frames (default blosc-lz4, fast, needs "
        "hdf5plugin to read; gzip/lzf: any HDF5 reader)",
    )
    parser.add_argument(
        "--threads",
        type=nonnegative_int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="frame hashing/decoding threads (default 2, or 1 on one core)",
    )
    add_output_arguments(parser)
    add_catalog_arguments(parser, background=True)


def _say(line: str) -> None:
    print(f"{_PROG}: {line}", file=sys.stderr, flush=True)


def print_results(
    results: Any, run_uid: str | None, raw_uid: str, fmt: str, prog: str
) -> None:
    """Print the beta table of ``results`` (ExposureResults) in format ``fmt``."""
    from xsvs_bluesky.offline import beta_columns
    from xsvs_bluesky.results import format_table, to_csv, to_json

    # columns, not a DataFrame: the text and JSON need no pandas (~0.3 s)
    table = beta_columns(results)
    table["run_uid"] = [run_uid] * len(table["exposure"])
    table["raw_uid"] = [raw_uid] * len(table["exposure"])
    if fmt == "json":
        out = to_json(table)
    elif fmt == "csv":
        out = to_csv(table)
    else:
        print(f"raw run      {raw_uid}")
        print(f"derived run  {run_uid}")
        out = format_table(table)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    if fmt != "table":
        print(f"{prog}: raw run {raw_uid}, derived run {run_uid}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``xsvs-bluesky replay``; return the exit code."""
    from xsvs_bluesky.replay import LegacyReplay

    show = show_progress(args)
    with recorded_warnings() as caught:
        job = LegacyReplay(
            args.ini,
            options=analysis_options(args),
            skip_bad=args.skip_bad_frames,
            threads=args.threads,
            compression=args.compression,
        )
        flush_warnings(_PROG, caught)
        # plain clients: the replay's searches and writers need no Bluesky
        # client class (no bluesky_tiled_plugins, no dask: ~1 s of imports)
        with catalogs_from_args(
            args, create=True, background=True, light=True, light_raw=True
        ) as cats:
            upload_pending(_PROG, cats)
            bar, progress = progress_bar(show, job.scan.n_files, "frame")
            try:
                result = job.run(
                    cats,
                    force=args.force,
                    output_dir=args.output_dir,
                    progress=progress,
                    on_wait=_say,
                )
            finally:
                if bar is not None:
                    bar.close()
        flush_warnings(_PROG, caught)
    for note in result.notes:
        print(f"{_PROG}: {note}", file=sys.stderr)
    if result.duplicate:
        derived = ", ".join(result.derived_uids) or "none"
        print(
            f"already replayed: raw run {result.raw_uid} holds this series (content "
            f"hash {result.content_hash[:16]}..., derived runs: {derived}); nothing "
            "written, --force replays it again"
        )
        return 0
    if result.skipped:
        names = [f"[{e}] {os.path.basename(f)} ({r})" for e, f, r in result.skipped]
        warn(_PROG, f"skipped {len(names)} bad frame file(s): {'; '.join(names)}")
    if result.completed:
        print(
            f"{_PROG}: raw run {result.raw_uid} analysed in {result.seconds:.1f} s",
            file=sys.stderr,
        )
    else:
        frames = sum(result.n_frames)
        streams = len(result.n_frames)
        what = f"{streams} exposures"
        if len(result.results) != streams:  # XPCS mode: one series, binned
            what = f"{streams} series, analysed as {len(result.results)} exposures"
        print(
            f"{_PROG}: {frames} frames of {what} replayed in {result.seconds:.1f} s",
            file=sys.stderr,
        )
    print_results(
        result.results, result.derived_uid, result.raw_uid, args.format, _PROG
    )
    if result.backed_up:
        return backup_exit(_PROG, args, cats, result.backed_up)
    if result.analysis_status != "success":
        print(
            f"{_PROG}: the raw run is stored but its analysis failed "
            f"({result.analysis_reason}); try 'xsvs-bluesky reanalyze "
            f"{result.raw_uid}' with other settings",
            file=sys.stderr,
        )
        return 1
    return 0
