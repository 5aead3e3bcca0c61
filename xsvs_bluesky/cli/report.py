"""Write a self-contained HTML report of a derived XSVS run stored in Tiled.

One HTML file with every figure embedded (no other files needed, e-mail or
archive it as is): the run metadata (sample, geometry, partitions, masks,
flat field, estimator, versions), the pyxsvs summary figure, P(k) with the
negative-binomial fits per exposure for every q, the averaged image with the
q partitions and the beam centre, I(q), the per-frame traces, the fit
parameters, beta(t_e) with the fitted dynamics and Gamma against q^2 with the
D line (when the run has a dynamics fit), and the results table.  UID as for
'xsvs-bluesky results' (default: the latest derived run); the path written
is printed.

Only complete, successful runs are taken by default: a run named by its own
uid that is still open (no stop document), aborted or failed is refused in
one line (exit 2); --any-status reports it as it is, and lets the latest run,
a scan_id or a raw-run uid pick such runs too.

Typical commands:
  xsvs-bluesky report                        (latest run, into ./)
  xsvs-bluesky report 3f2a9c --out reports/
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
    """Add the options of ``xsvs-bluesky report``."""
    add_uid_argument(parser)
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for xsvs-report-<uid8>.html, or a file name ending in .html "
        "(default: the working folder)",
    )
    add_any_status_argument(parser, verb="report")
    add_catalog_arguments(parser, background=True)


def run(args: argparse.Namespace) -> int:
    """Write the report; print its path; return the exit code."""
    from xsvs_bluesky.report import write_report
    from xsvs_bluesky.results import find_run, load_results

    with catalogs_from_args(
        args, light=True, background=True
    ) as cats:  # arrays are read while drawing
        run = find_run(cats.processed, args.uid, any_status=args.any_status)
        status = finished_run(run, args, "report")
        try:
            path = write_report(load_results(run), args.out)
        except (ValueError, KeyError, IndexError) as err:
            if status == "success" or isinstance(err, XSVSError):
                raise
            raise partial_run_error(run, status, err) from err
    print(path)
    return 0
