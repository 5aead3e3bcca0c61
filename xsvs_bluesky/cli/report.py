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

from xsvs_bluesky.cli._common import run_file_arguments, write_from_run

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky report``."""
    with run_file_arguments(parser, verb="report"):
        parser.add_argument(
            "--out",
            metavar="DIR",
            help="folder for xsvs-report-<uid8>.html, or a file name ending in .html "
            "(default: the working folder)",
        )


def run(args: argparse.Namespace) -> int:
    """Write the report; print its path; return the exit code."""
    from xsvs_bluesky.report import write_report

    return write_from_run(
        args, "report", lambda results: write_report(results, args.out)
    )
