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

from xsvs_bluesky.cli._common import (
    add_any_status_argument,
    add_catalog_arguments,
    add_uid_argument,
    catalogs_from_args,
    finished_run,
    partial_run_error,
)
from xsvs_bluesky.errors import XSVSError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky export``."""
    add_uid_argument(parser)
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
    add_any_status_argument(parser, verb="export")
    add_catalog_arguments(parser, background=True)


def run(args: argparse.Namespace) -> int:
    """Export the run; print the path written; return the exit code."""
    from xsvs_bluesky.export import export_results
    from xsvs_bluesky.results import find_run, load_results

    with catalogs_from_args(
        args, light=True, background=True
    ) as cats:  # arrays are read while writing
        run = find_run(cats.processed, args.uid, any_status=args.any_status)
        status = finished_run(run, args, "export")
        try:
            path = export_results(load_results(run), args.to, args.out)
        except (ValueError, KeyError, IndexError) as err:
            if status == "success" or isinstance(err, XSVSError):
                raise
            raise partial_run_error(run, status, err) from err
    print(path)
    return 0
