"""Show the results of a derived XSVS run stored in Tiled.

Prints the contrast table beta(t_e, q) of one derived run: per exposure and
q partition the exposure time (s), q (1/Angstrom), mean count kbar, beta with
its standard error, frames and estimator flags.  UID is the derived run's uid
or its first characters (>= 5), the uid of the raw run it analysed, or a
scan_id; without UID the latest derived run is shown.  The latest run, a
scan_id and a raw-run uid pick only complete, successful runs (--any-status:
any); a run named by its own uid is shown whatever its status, with that
status (open while it has no stop document).  --format csv|json give
machine-readable records (keys run_uid, raw_uid, exposure, exposure_time,
partition, q, n_pixels, n_frames, kbar, kbar_err, beta, beta_err, M, M_err,
estimator, flags); --dynamics adds the fit of beta(t_e) per q (Gamma, beta0)
and D from Gamma = D q^2; --list lists the derived runs instead.

Typical commands:
  xsvs-bluesky results                          (latest run, ./xsvs-data)
  xsvs-bluesky results 3f2a9c --format json     (one run as JSON records)
  xsvs-bluesky results --dynamics               (Gamma(q), beta0, D)
  xsvs-bluesky results --list --sample silica   (the runs of one sample)
  TILED_API_KEY=... xsvs-bluesky results --tiled-uri http://host:8000
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from xsvs_bluesky.cli._common import (
    add_catalog_arguments,
    add_uid_argument,
    catalogs_from_args,
)

__all__ = ["add_arguments", "run"]

_LIST_COLUMNS = (
    "uid",
    "time",
    "sample_name",
    "raw_uid",
    "estimator",
    "exposures",
    "exit_status",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky results``."""
    add_uid_argument(parser)
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default: a readable table)",
    )
    parser.add_argument(
        "--dynamics",
        action="store_true",
        help="show the dynamics fit: Gamma (1/s), beta0 per q and D (Angstrom^2/s)",
    )
    listing = parser.add_argument_group("listing runs (--list)")
    listing.add_argument(
        "--list", action="store_true", help="list the derived runs matching the filters"
    )
    listing.add_argument("--sample", metavar="NAME", help="sample_name equals NAME")
    listing.add_argument("--raw-uid", metavar="UID", help="analyses of this raw run")
    listing.add_argument("--estimator", metavar="NAME", help="main estimator, e.g. mle")
    listing.add_argument(
        "--since", metavar="DATE", help="started at or after DATE (ISO 8601)"
    )
    listing.add_argument("--until", metavar="DATE", help="started before DATE")
    parser.add_argument(
        "--any-status",
        action="store_true",
        help="let the latest run, a scan_id or a raw-run uid pick derived runs "
        "that are still open, aborted or failed too (default: only complete, "
        "successful runs; a run named by its own uid is shown whatever its "
        "status, with that status)",
    )
    add_catalog_arguments(parser, background=True)


def _run_row(run: Any) -> dict[str, Any]:
    from datetime import datetime

    from xsvs_bluesky.results import count_exposures

    start = run.metadata.get("start") or {}
    stop = run.metadata.get("stop") or {}
    stamp = start.get("time")
    return {
        "uid": start.get("uid"),
        "time": datetime.fromtimestamp(stamp).isoformat(timespec="seconds")
        if isinstance(stamp, int | float)
        else None,
        "sample_name": start.get("sample_name"),
        "raw_uid": start.get("original_run_uid"),
        "estimator": (start.get("xsvs") or {}).get("estimator"),
        "exposures": count_exposures(run),
        "exit_status": stop.get("exit_status"),
    }


def _list(cats: Any, args: argparse.Namespace) -> str:
    from xsvs_bluesky.results import search_runs

    runs = search_runs(
        cats.processed,
        sample_name=args.sample,
        original_run_uid=args.raw_uid,
        since=args.since,
        until=args.until,
        estimator=args.estimator,
    )
    rows = [_run_row(r) for r in runs]
    if args.format == "json":
        return json.dumps(rows, indent=2)
    if args.format == "csv":
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(_LIST_COLUMNS))
        return str(frame.to_csv(index=False, lineterminator="\n"))
    lines = [
        f"{'uid':8}  {'time':19}  {'sample':14}  {'raw':8}  {'estimator':11}  "
        f"{'exp':>3}  status"
    ]
    for r in rows:
        lines.append(
            f"{str(r['uid'])[:8]:8}  {r['time'] or '':19}  "
            f"{str(r['sample_name'] or '')[:14]:14}  {str(r['raw_uid'] or '')[:8]:8}  "
            f"{str(r['estimator'] or ''):11}  {r['exposures']:>3}  "
            f"{r['exit_status'] or 'open'}"
        )
    if not rows:
        lines.append("(no derived runs match)")
    return "\n".join(lines)


def _show(res: Any, args: argparse.Namespace) -> str:
    from xsvs_bluesky import results as api
    from xsvs_bluesky.errors import RunError

    dyn: Any = res.dynamics if args.dynamics else None  # read only what is printed
    if args.dynamics and dyn is None:
        raise RunError(
            f"run {res.uid} has no dynamics stream (it needs two or more exposure "
            "times); drop --dynamics"
        )
    if args.format == "json":
        if args.dynamics:
            return json.dumps(api.dynamics_records(dyn), indent=2, allow_nan=False)
        return api.to_json(res.table_columns)
    if args.format == "csv":
        if args.dynamics:
            frame = dyn.copy()
            frame["flags"] = [";".join(f) for f in frame["flags"]]
            return str(frame.to_csv(index=False, lineterminator="\n"))
        return api.to_csv(res.table)
    head = f"derived run {res.uid}"
    if res.raw_uid:
        head += f" of raw run {res.raw_uid}"
    if res.start.get("sample_name"):
        head += f", sample {res.start['sample_name']}"
    status = res.exit_status or "open"
    if res.stop and res.stop.get("reason"):
        status += f" ({res.stop['reason']})"
    text = f"{head}\nexit status: {status}\n\n{api.format_table(res.table_columns)}"
    if args.dynamics:  # the flags column and what D's fit says of itself
        from xsvs_bluesky.live import diffusion_from_record, format_dynamics_flags

        diffusion = diffusion_from_record(res.diffusion)
        text += "\n\n" + format_dynamics_flags(dyn, diffusion)
    return text


def run(args: argparse.Namespace) -> int:
    """Print the results (or the list of runs); return the exit code."""
    from xsvs_bluesky.results import find_run, load_results

    with catalogs_from_args(args, light=True, background=True) as cats:
        if args.list:
            text = _list(cats, args)
        else:
            run = find_run(cats.processed, args.uid, any_status=args.any_status)
            text = _show(load_results(run), args)
    print(text.rstrip("\n"))
    return 0
