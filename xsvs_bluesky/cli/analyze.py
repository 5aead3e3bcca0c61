"""Analyse a legacy pyxsvs series (INI file + EDF frames) offline, no server.

Reads the INI file, the masks ("default mask" and "mask", their union), the
flat field and every frame once (decoded in background threads), and prints
the speckle contrast beta per exposure and q partition: the same numbers and
columns as 'xsvs-bluesky results'. Nothing is written, the INI file included.

Default estimator: "mle-intensity" (maximum likelihood with each pixel's mean
count modelled from the flat field's efficiencies and the shape of the
static intensity across the ring, so a ring whose intensity varies is not
read as extra contrast); "mle" with --flat-field divide-round.
'--estimator pyxsvs-lsq --flat-field divide-round' reproduces the numbers of
the legacy pyxsvs tool (biased; for comparison with old results only).

Typical commands:
  xsvs-bluesky analyze analysis/xsvs/xsvs_input.txt
  xsvs-bluesky analyze xsvs_input.txt --frames-per-exposure 50   (quick look)
  xsvs-bluesky analyze xsvs_input.txt --format json > beta.json
  xsvs-bluesky analyze xsvs_input.txt --estimator pyxsvs-lsq --flat-field divide-round
  xsvs-bluesky analyze xsvs_input.txt --dynamics          (Gamma(q), D)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from xsvs_bluesky.cli._common import (
    add_estimator_arguments,
    add_limit_arguments,
    add_progress_arguments,
    analysis_options,
    dynamics_model_argument,
    flush_warnings,
    nonnegative_int,
    positive_int,
    progress_bar,
    recorded_warnings,
    show_progress,
    warn,
)

__all__ = ["add_arguments", "run"]

_PROG = "xsvs-bluesky analyze"
_MAX_LISTED = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky analyze`` to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("ini", metavar="INI", help="the pyxsvs INI input file")
    add_estimator_arguments(parser, of="the INI's")
    add_limit_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output on stdout (default: table). json: a list of records "
        "(with --dynamics: the dynamics records)",
    )
    parser.add_argument(
        "--refine-center",
        action="store_true",
        help="refine the beam centre from the averaged flat-corrected frames "
        "and use it (reported on stderr; the INI file is not changed)",
    )
    parser.add_argument(
        "--center-frames",
        type=positive_int,
        default=360,
        metavar="N",
        help="frames of the longest exposures averaged for --refine-center "
        "(default 360)",
    )
    parser.add_argument(
        "--dynamics",
        action="store_true",
        help="also fit beta(t_e) per q (Gamma, beta0) and Gamma = D q^2; csv/json "
        "then give the dynamics table",
    )
    parser.add_argument(
        "--dynamics-model",
        **dynamics_model_argument(),
        help="visibility model for --dynamics (default exponential)",
    )
    parser.add_argument(
        "--skip-bad-frames",
        action="store_true",
        help="skip missing, truncated or corrupt frame files (listed on stderr) "
        "instead of stopping",
    )
    parser.add_argument(
        "--frames-per-exposure",
        type=positive_int,
        default=None,
        metavar="N",
        help="analyse only the first N frames of each exposure (quick look)",
    )
    parser.add_argument(
        "--threads",
        type=nonnegative_int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="frame decoding threads (default: 2, or 1 on one core; 0: none)",
    )
    add_progress_arguments(parser)


def _center_line(fit: Any, cenx: float, ceny: float) -> str:
    return (
        f"{_PROG}: beam centre refined from the averaged frames: cenx "
        f"{cenx:.3f} -> {fit.center_x:.3f} +- {fit.center_x_err:.3f} px, ceny "
        f"{ceny:.3f} -> {fit.center_y:.3f} +- {fit.center_y_err:.3f} px "
        f"({fit.error_method} errors); used for this analysis, the INI file is "
        "not changed"
    )


def _skipped_line(skipped: Any) -> str:
    names = [f"[{s.exposure}] {s.path.name} ({s.reason})" for s in skipped]
    more = (
        f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    )
    return (
        f"skipped {len(names)} bad frame file(s), the results use the others: "
        f"{'; '.join(names[:_MAX_LISTED])}{more}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``xsvs-bluesky analyze``; return the exit code."""
    from xsvs_bluesky.errors import OptionError
    from xsvs_bluesky.offline import LegacyAnalysis

    show = show_progress(args)
    with recorded_warnings() as caught:
        job = LegacyAnalysis(
            args.ini,
            options=analysis_options(args, dynamics=args.dynamics),
            skip_bad=args.skip_bad_frames,
            frames_per_exposure=args.frames_per_exposure,
            threads=args.threads,
        )
        flush_warnings(_PROG, caught)
        if args.dynamics and len(job.config.exposures) < 2:
            raise OptionError(
                f"{job.config.path}: --dynamics needs >= 2 exposures, the INI "
                f"file has {len(job.config.exposures)}; drop --dynamics"
            )
        if args.refine_center:
            fit = job.refine_center(max_files=args.center_frames)
            print(_center_line(fit, job.config.cenx, job.config.ceny), file=sys.stderr)
            flush_warnings(_PROG, caught)
        result = _run_with_progress(job, show)
        flush_warnings(_PROG, caught)
        if result.skipped:
            warn(_PROG, _skipped_line(result.skipped))
        output = _render(result, args)
    sys.stdout.write(output if output.endswith("\n") else output + "\n")
    return 0


def _run_with_progress(job: Any, show: bool) -> Any:
    bar, progress = progress_bar(show, job.reader.n_files, "frame")
    if bar is None:
        return job.run()
    try:
        result = job.run(progress)
    finally:
        bar.close()
    rate = result.files_read / max(result.seconds, 1e-9)
    print(
        f"{_PROG}: {result.files_read} frame files of {len(result.results)} "
        f"exposures in {result.seconds:.1f} s ({rate:.0f} frames/s)",
        file=sys.stderr,
    )
    return result


def _render(result: Any, args: argparse.Namespace) -> str:
    from xsvs_bluesky import results as tables
    from xsvs_bluesky.offline import beta_table, dynamics_table

    table = beta_table(result.results)
    dyn = diffusion = None
    if args.dynamics:
        from xsvs_bluesky.offline import fit_result_dynamics

        fits, diffusion = fit_result_dynamics(result.results, args.dynamics_model)
        dyn = dynamics_table(fits, diffusion)
    if args.format == "json":
        if dyn is not None:
            data = tables.dynamics_records(dyn)
            return json.dumps(data, indent=2, allow_nan=False)
        return tables.to_json(table)
    if args.format == "csv":
        if dyn is not None:
            frame = dyn.copy()
            for key in ("flags", "D_flags"):
                frame[key] = [";".join(f) for f in frame[key]]
            return str(frame.to_csv(index=False, lineterminator="\n"))
        return tables.to_csv(table)
    text = tables.format_table(table)
    if dyn is not None:
        from xsvs_bluesky.live import format_dynamics_flags

        text += "\n\n" + format_dynamics_flags(dyn, diffusion)
    return text
