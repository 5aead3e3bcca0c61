"""Analyse a raw run stored in Tiled again, with other settings.

Fetches the raw run's documents from Tiled and feeds them to a new analysis
callback with the estimator, q partitions or flat-field use given here; the
new derived run is written to the processed catalog, linked to the SAME raw
run (its original_run_uid), next to the earlier analyses. Prints the new
derived run's uid and its beta table (same columns as 'xsvs-bluesky results').

RAW_UID is the raw run's uid, a unique prefix of it (>= 5 characters), its
scan_id, or -1 for the latest raw run. The new analysis starts from the
settings of the raw run's latest successful analysis: its estimator,
flat-field mode, other options and q partitions (--dq alone changes only the
half-width); without one, the defaults and the raw run's partitions. Every
setting that differs from that analysis is said on stderr in one line with
the reason, and so is a better default estimator than the one kept (never
switched to silently). Geometry always comes from the raw run; masks and
flat field are the files it names, checked against their recorded SHA-256
(one the latest analysis used that the run does not name is said to be not
reachable). Frames are read from the run's HDF5 files when this host can
read them, else through the Tiled server (--frames tiled).

Exit codes: 0 success, 1 the new analysis failed (reason on stderr), 2 bad
input (unknown run, options, changed mask files).

Typical commands:
  xsvs-bluesky reanalyze 5d80f3d5 --estimator moments
  xsvs-bluesky reanalyze 5d80f3d5 --q1 0.003 --q2 0.009 --qs 0.002 --dq 0.0005
  xsvs-bluesky reanalyze -1 --estimator pyxsvs-lsq --flat-field divide-round
  xsvs-bluesky reanalyze 5d80f3d5 --format json > beta.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from xsvs_bluesky.cli._common import (
    add_catalog_arguments,
    add_estimator_arguments,
    add_limit_arguments,
    backup_exit,
    catalogs_from_args,
    flush_warnings,
    limits_from_args,
    positive_float,
    progress_bar,
    recorded_warnings,
    show_progress,
    upload_pending,
)
from xsvs_bluesky.cli.replay import add_output_arguments, print_results

__all__ = ["add_arguments", "run"]

_PROG = "xsvs-bluesky reanalyze"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky reanalyze`` to ``parser``."""
    from xsvs_bluesky.options import FRAME_SOURCES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "raw_uid",
        metavar="RAW_UID",
        help="raw run: uid, unique uid prefix (>= 5 characters), scan_id or -1",
    )
    add_estimator_arguments(parser, of="the run's", recorded=True)
    add_limit_arguments(parser)
    group = parser.add_argument_group(
        "q partitions", "1/Angstrom; each one not given keeps the run's value"
    )
    for name, text in (
        ("q1", "first partition centre"),
        ("q2", "last partition centre"),
        ("qs", "step between centres"),
        ("dq", "half-width of a partition"),
    ):
        group.add_argument(
            f"--{name}", type=positive_float("1/Angstrom"), metavar="Q", help=text
        )
    parser.add_argument(
        "--frames",
        choices=FRAME_SOURCES,
        default="auto",
        help="read frames from the run's HDF5 files (file), through the Tiled "
        "server (tiled), or files when readable here (auto, default)",
    )
    add_output_arguments(parser)
    add_catalog_arguments(parser, background=True)


def _report(bar: object) -> Callable[[str], None]:
    """Print a line about the settings on stderr (above a progress bar)."""

    def report(line: str) -> None:
        text = f"{_PROG}: {line}"
        if bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    return report


def run(args: argparse.Namespace) -> int:
    """Run ``xsvs-bluesky reanalyze``; return the exit code."""
    from xsvs_bluesky.reanalyze import reanalyze

    show = show_progress(args)
    partitions = {k: getattr(args, k) for k in ("q1", "q2", "qs", "dq")}
    with recorded_warnings() as caught:
        with catalogs_from_args(args, background=True) as cats:
            upload_pending(_PROG, cats)
            bar, progress = progress_bar(show, None, "frame")
            try:
                out = reanalyze(
                    cats,
                    args.raw_uid,
                    estimator=args.estimator,
                    flat_field=args.flat_field,
                    limits=limits_from_args(args),
                    partitions=partitions,
                    frames=args.frames,
                    progress=progress,
                    report=_report(bar),
                )
            finally:
                if bar is not None:
                    bar.close()
        flush_warnings(_PROG, caught)
    if out.derived_uid is not None and out.results:
        print_results(out.results, out.derived_uid, out.raw_uid, args.format, _PROG)
    if out.backed_up:
        return backup_exit(_PROG, args, cats, out.backed_up)
    if out.exit_status != "success":
        print(
            f"{_PROG}: the analysis of raw run {out.raw_uid} failed "
            f"(derived run {out.derived_uid}): {out.reason}",
            file=sys.stderr,
        )
        return 1
    return 0
