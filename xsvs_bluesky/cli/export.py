"""Export a derived XSVS run from Tiled to a file: CSV records or NeXus-like HDF5.

--to csv writes the result records, one row per exposure and q partition
(the columns of 'xsvs-bluesky results --format csv').  --to hdf5 writes
every array of the run to one HDF5 file with NeXus groups (NXentry, NXdata
with signal/axes attributes, units): beta, kbar and M with errors, the
histograms P(k) and their per-frame standard deviation, the per-frame
traces, the averaged images, I(q), the dynamics fit, the start metadata, and
a raw copy of every stream.  The file appears complete or not at all
(written to a temporary file, then renamed).  UID as for 'xsvs-bluesky
results' (default: the latest derived run); the path written is printed.

Only complete, successful runs are taken by default: a run named by its own
uid that is still open (no stop document), aborted or failed is refused in
one line (exit 2); --any-status exports it as it is, and lets the latest run,
a scan_id or a raw-run uid pick such runs too.

Typical commands:
  xsvs-bluesky export --to csv                         (latest run)
  xsvs-bluesky export 3f2a9c --to hdf5 --out run.h5
"""

from __future__ import annotations

import argparse

from xsvs_bluesky.cli._common import run_file_arguments, write_from_run

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky export``."""
    with run_file_arguments(parser, verb="export"):
        parser.add_argument(
            "--to",
            choices=("csv", "hdf5"),
            required=True,
            help="file format",
        )
        parser.add_argument(
            "--out",
            metavar="PATH",
            help="file to write (default xsvs-<uid8>.csv or .h5 in the working folder)",
        )


def run(args: argparse.Namespace) -> int:
    """Export the run; print the path written; return the exit code."""
    from xsvs_bluesky.export import export_results

    return write_from_run(
        args, "export", lambda results: export_results(results, args.to, args.out)
    )
