r"""Simulate an XSVS series live: RunEngine, MAXIPIX, Tiled and the analysis.

A real bluesky RunEngine runs a fly scan of a simulated ophyd-async MAXIPIX
(256x256, HDF5 files, Brownian speckle of known contrast) over 8 exposure
times doubling from 5e-5 s. The raw run goes to Tiled as at a beamline;
the XSVS callback histograms the frames while they arrive (a progress bar on
stderr; -v adds a live table per exposure and the refits of beta(t_e)) and
stores its results as a derived run. At the end the command prints
beta(t_e) per q beside the truth the simulation used, with the estimator's
flags (stdout), saves a figure and says where the runs went, how much disk
the detector's frame files take (Blosc-compressed by default, --compression)
and what to try next.

With no server named, everything goes into a data folder (default
./xsvs-data, printed at start) that later commands find again: its running
'xsvs-bluesky serve' when there is one, else one started in the background
for this and the next commands ('xsvs-bluesky serve --stop' ends it;
--in-process serves the folder inside this command only).

Typical commands:
  xsvs-bluesky demo                        (under a minute on two cores)
  xsvs-bluesky demo --frames 200           (quicker, noisier)
  xsvs-bluesky demo --estimator moments --figure beta.png
  TILED_API_KEY=... xsvs-bluesky demo --tiled-uri http://host:8000 \
      --external-dir /data/shared/xsvs     (a folder the server may read)
  xsvs-bluesky results --data-dir xsvs-data      (the stored results)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from xsvs_bluesky.cli._common import backup_exit, upload_pending
from xsvs_bluesky.cli._demo_output import (
    diffusion_line,
    format_truth_table,
    save_truth_figure,
    truth_rows,
)

__all__ = ["DemoOutcome", "add_arguments", "run", "run_demo"]

_PROG = "xsvs-bluesky demo"
DEMO_FRAMES = 300
"""Default ``--frames`` (per exposure): with ``blosc-lz4`` the 8 exposures of
256 x 256 px take ~55 MB on disk (~315 MB uncompressed)."""
_FIGURE_NAME = "xsvs-demo.png"
Say = Callable[[str], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky demo`` to ``parser``."""
    from xsvs_bluesky.cli._common import (
        add_catalog_arguments,
        nonnegative_int,
        positive_int,
    )
    from xsvs_bluesky.options import COMPRESSIONS, ESTIMATORS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--frames",
        type=positive_int,
        default=DEMO_FRAMES,
        metavar="N",
        help=f"frames per exposure time (default {DEMO_FRAMES})",
    )
    parser.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        help="contrast estimator (default mle-intensity: maximum likelihood "
        "with each pixel's mean from the simulated flat field and the "
        "intensity's shape across the ring)",
    )
    parser.add_argument(
        "--figure",
        metavar="PATH",
        help=f"figure file (default {_FIGURE_NAME} in the data folder, or in "
        "the working directory with --tiled-uri)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="blosc-lz4",
        help="HDF5 compression of the simulated detector's frame files (default "
        "blosc-lz4: about a sixth of the uncompressed size, read through "
        "hdf5plugin; gzip and lzf: any HDF5 reader; none)",
    )
    parser.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        metavar="S",
        help="seed of the simulation (an integer >= 0)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (nor live table) on stderr",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest="demo_verbose",  # 'xsvs-bluesky -v demo' sets the log level
        action="store_true",
        help="also a live table per exposure, the refits of beta(t_e) and "
        "the timings on stderr",
    )
    add_catalog_arguments(parser, background=True)
    parser.add_argument(
        "--external-dir",
        metavar="DIR",
        help="where the simulated detector writes its HDF5 files (default "
        "<data-dir>/external); with --tiled-uri give a folder the server may "
        "read (its readable storage)",
    )


def _say(message: str) -> None:
    print(f"{_PROG}: {message}", file=sys.stderr, flush=True)


def _where(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """Return the data folder (None: named server) and the detector-file folder."""
    from xsvs_bluesky.storage import DEFAULT_DATA_DIR

    if args.tiled_uri is None:
        data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
        ext = args.external_dir or data_dir / "external"
        return data_dir, Path(ext).resolve()
    return None, Path(args.external_dir or DEFAULT_DATA_DIR / "external").resolve()


def _open(
    args: argparse.Namespace, data_dir: Path | None, external: Path
) -> tuple[Any, bool]:
    """Open the catalogs; also say whether a background server was started."""
    from xsvs_bluesky.cli._common import API_KEY_ENV, say_where, use_background
    from xsvs_bluesky.storage import open_catalogs

    names = {"raw": args.raw_catalog, "processed": args.processed_catalog}
    if data_dir is not None:
        # a server in its own process starts (and later stores the runs) on
        # the other core while this one acquires; it stays for `results`
        background = use_background(args) and external.is_relative_to(
            data_dir / "external"
        )
        background = say_where(data_dir, background)
        catalogs = open_catalogs(
            data_dir=data_dir,
            api_key=args.api_key,
            external_dir=external,
            background=background,
            backup_dir=args.backup_dir,
            **names,
        )
        return catalogs, background
    catalogs = open_catalogs(
        tiled_uri=args.tiled_uri,
        api_key=args.api_key or os.environ.get(API_KEY_ENV),
        external_dir=external,
        backup_dir=args.backup_dir,
        **names,
    )
    return catalogs, False


def run(args: argparse.Namespace) -> int:
    """Run ``xsvs-bluesky demo``; return the exit code."""
    from xsvs_bluesky.demo import close_engine
    from xsvs_bluesky.storage import ensure_folder

    started = time.perf_counter()
    data_dir, external = _where(args)
    assert external is not None
    # a folder that cannot be made is one error line, before any other
    if data_dir is not None:
        ensure_folder(data_dir, "the data folder")
    ensure_folder(external, "the folder for detector files")
    if data_dir is not None:
        _say(f"data folder: {data_dir}")
    # Tiled opens (or starts, in this process) while the RunEngine, the
    # detector and the numba kernels get ready
    box: dict[str, Any] = {}

    def opener() -> None:
        try:
            box["catalogs"], box["started"] = _open(args, data_dir, external)
        except BaseException as err:  # re-raised in the main thread
            box["error"] = err

    thread = threading.Thread(target=opener, name="xsvs-open-catalogs", daemon=True)
    thread.start()
    try:
        rig = _prepare(args.seed, external, args.compression)
    finally:
        thread.join()
    if "error" in box:
        close_engine(rig.RE)
        raise box["error"]
    catalogs = box["catalogs"]
    figure = Path(args.figure or (data_dir or Path.cwd()) / _FIGURE_NAME).resolve()
    verbose = bool(args.demo_verbose)
    say_more = _say if verbose else _quiet
    with catalogs:
        say_more(
            f"Tiled ready at {catalogs.uri} ({time.perf_counter() - started:.1f} s)"
        )
        upload_pending(_PROG, catalogs)
        outcome = run_demo(
            catalogs,
            frames=args.frames,
            estimator=args.estimator,
            figure=figure,
            progress=args.progress,
            say=_say,
            rig=rig,
            verbose=verbose,
        )
    if outcome.signum is not None:
        raise _interruption(outcome, args, catalogs, data_dir)
    sys.stdout.write(outcome.text + "\n")
    sys.stdout.flush()
    if outcome.backed_up:
        return backup_exit(_PROG, args, catalogs, outcome.backed_up)
    where = f"--data-dir {data_dir}" if data_dir else f"--tiled-uri {catalogs.uri}"
    stored = f"in {data_dir}" if data_dir else f"at {catalogs.uri}"
    _say(f"raw run {outcome.raw_uid} and its analysis stored {stored}")
    _say(_disk_line(outcome, data_dir is None, external, args.compression))
    _say(f"derived run {outcome.derived_uid} ({outcome.status})")
    _say(f"figure: {figure}")
    _say(
        f"next, try: xsvs-bluesky results {where} {outcome.derived_uid[:8]} --dynamics"
    )
    if box["started"]:
        _say(
            "its Tiled server keeps running for the next commands; stop it with: "
            f"xsvs-bluesky serve --stop --data-dir {data_dir}"
        )
    _say(f"done in {time.perf_counter() - started:.1f} s")
    return 0 if outcome.status == "success" else 1


def _interruption(
    outcome: DemoOutcome, args: argparse.Namespace, catalogs: Any, data_dir: Path | None
) -> KeyboardInterrupt:
    """Return the exception that ends a demo stopped by a signal (one line).

    ``Interrupted`` (exit 130) for SIGINT, ``Terminated`` (143) otherwise;
    its detail says what became of the runs and where they are.
    """
    import signal

    from xsvs_bluesky.cli import Interrupted, Terminated
    from xsvs_bluesky.cli._common import upload_command

    err: Interrupted
    if outcome.signum == signal.SIGINT:
        err = Interrupted()
    else:
        err = Terminated(f"signal {signal.Signals(outcome.signum or 0).name}")
    if not outcome.raw_uid:
        err.detail = "the scan had not started: no run was written"
        return err
    parts = [
        f"raw run {outcome.raw_uid} stopped {outcome.raw_status or 'without a stop'!r} "
        f"after {outcome.n_frames} frames"
    ]
    if outcome.files:
        folder = outcome.files[0].parent
        parts[0] += f", its HDF5 files are kept in {folder}"
    if outcome.derived_uid:
        parts.append(f"derived run {outcome.derived_uid} {outcome.status!r}")
    if outcome.backed_up:
        first = outcome.backed_up[0]
        parts.append(
            f"the Tiled server at {first.server} failed ({first.cause}): "
            f"{len(outcome.backed_up)} run(s) kept in {first.path.parent}; "
            f"'{upload_command(args, catalogs)}' writes them when it answers"
        )
    else:
        parts.append(f"stored in {data_dir}" if data_dir else f"at {catalogs.uri}")
    err.detail = "; ".join(parts)
    return err


def _disk_line(
    outcome: DemoOutcome, named_server: bool, external: Path, compression: str
) -> str:
    """Say how much disk the raw run's frame files take, and where."""
    raw = outcome.n_frames * outcome.frame_bytes
    where = f" in {external}" if named_server else ""
    return (
        f"detector files: {outcome.disk_bytes / 1e6:.1f} MB on disk in "
        f"{len(outcome.files)} HDF5 files{where} ({compression}; "
        f"{raw / 1e6:.0f} MB uncompressed)"
    )


def _quiet(message: str) -> None:
    """Say nothing (the lines only ``-v`` shows)."""


@dataclass(frozen=True, eq=False)
class _Rig:
    """RunEngine, simulated physics and detector of one demo."""

    RE: Any
    model: Any
    detector: Any


def _prepare(seed: int, external: Path, compression: str = "blosc-lz4") -> _Rig:
    """Make the RunEngine and the detector; load the numba kernels."""
    from bluesky import RunEngine

    from xsvs_bluesky.core.histogram import HistogramAccumulator
    from xsvs_bluesky.demo import DEMO_EXPOSURE_TIMES, demo_model, sim_detector

    # no SIGINT handler of its own (a deferred pause the fly scan never
    # reaches): run_demo's AbortOnSignal aborts the scan on SIGINT and SIGTERM
    RE = RunEngine({}, context_managers=[])
    model = demo_model(seed)
    detector = sim_detector(external, model, compression=compression)
    frame = model.sampler(DEMO_EXPOSURE_TIMES[0]).sample(1)
    HistogramAccumulator(model.partitions(0.0015, 0.0025)).update(frame)
    return _Rig(RE, model, detector)


@dataclass(frozen=True)
class DemoOutcome:
    """What one demo series produced.

    Attributes
    ----------
    raw_uid, derived_uid : str
        uids of the raw run and of its derived (analysis) run.
    status : str
        Exit status of the derived run (``"success"`` or ``"fail"``).
    text : str
        The beta(t_e) table beside the truth.
    table : pandas.DataFrame
        Its rows: measured (read back from Tiled) and true values per
        exposure and partition.
    acquisition_s, analysis_s : float
        Wall time of the scan, and until the derived run was in Tiled, s.
    n_frames : int
        Frames acquired.
    files : tuple of Path
        The raw run's HDF5 frame files.
    disk_bytes : int
        Their size on disk, bytes.
    frame_bytes : int
        Bytes of one uncompressed frame.
    backed_up : tuple of BackedUpRun
        Runs the Tiled server did not store: kept in the local backup.
    signum : int or None
        The signal (SIGINT, SIGTERM) that stopped the demo: the scan was
        aborted (or, after it, the analysis), no table was made (``text``
        empty, ``table`` None).
    raw_status : str
        Exit status of the raw run's stop document (empty: no raw run).
    reason : str
        The derived run's stop reason.
    """

    raw_uid: str
    derived_uid: str
    status: str
    text: str
    table: Any
    acquisition_s: float
    analysis_s: float
    n_frames: int
    files: tuple[Path, ...] = ()
    disk_bytes: int = 0
    frame_bytes: int = 0
    backed_up: tuple[Any, ...] = ()
    signum: int | None = None
    raw_status: str = "success"
    reason: str = ""


class _RawRun:
    """What the RunEngine emitted of the raw run: uid, frames, files, stop."""

    def __init__(self) -> None:
        self.uid = ""
        self.frames = 0
        self.paths: list[Path] = []
        self.stop: dict[str, Any] = {}

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.uid = str(doc["uid"])
        elif name == "stream_datum":
            indices = doc["indices"]
            self.frames += int(indices["stop"]) - int(indices["start"])
        elif name == "stream_resource":
            from urllib.parse import urlparse

            path = Path(urlparse(str(doc["uri"])).path)
            if path not in self.paths:
                self.paths.append(path)
        elif name == "stop":
            self.stop = doc

    def size(self) -> int:
        """Bytes on disk of the files that exist."""
        return sum(p.stat().st_size for p in self.paths if p.is_file())


class _Progress:
    """Progress bar of the frames acquired (frames/s), from StreamDatum."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar: Any = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if not self.show:
            return
        if name == "start":
            from tqdm import tqdm

            self.bar = tqdm(
                total=int(doc.get("num_points") or 0),
                unit="frame",
                desc="acquired",
                file=sys.stderr,
                mininterval=0.5,
                dynamic_ncols=True,
            )
        elif name == "stream_datum" and self.bar is not None:
            indices = doc["indices"]
            self.bar.update(int(indices["stop"]) - int(indices["start"]))
        elif name == "stop" and self.bar is not None:
            self.bar.close()


class _BarSafeStderr:
    """A text stream printing lines above the progress bar (``tqdm.write``)."""

    def write(self, text: str) -> int:
        from tqdm import tqdm

        tqdm.write(text.rstrip("\n"), file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


def run_demo(
    catalogs: Any,
    *,
    frames: int,
    estimator: str | None = None,
    seed: int = 0,
    figure: Path | None = None,
    progress: bool = True,
    say: Say = _say,
    exposure_times: Sequence[float] | None = None,
    rig: _Rig | None = None,
    verbose: bool = False,
) -> DemoOutcome:
    """Acquire and analyse the simulated series; compare with the truth.

    Parameters
    ----------
    catalogs : xsvs_bluesky.storage.Catalogs
        Where the raw and derived runs go.
    frames : int
        Frames per exposure.
    estimator : str, optional
        Contrast estimator (default ``mle-intensity`` with the flat field).
    seed : int
        Seed of the simulation.
    figure : path, optional
        Where to save the figure (None: none).
    progress : bool
        Progress bar on stderr.
    say : callable
        Prints one line of news (stderr).
    exposure_times : sequence of float, optional
        Default :data:`~xsvs_bluesky.demo.DEMO_EXPOSURE_TIMES`, s.
    rig : optional
        RunEngine, model and detector made beforehand (``seed`` is then
        ignored); default made here, the detector writing into
        ``catalogs.external_dir``.
    verbose : bool
        Also the live table per exposure, the refits of ``beta(t_e)``
        (with ``progress``) and the timings.

    Returns
    -------
    DemoOutcome

    Raises
    ------
    XSVSError
        If the scan produced no derived run.
    """
    from xsvs_bluesky.demo import (
        DEMO_EXPOSURE_TIMES,
        AbortOnSignal,
        LiveSession,
        close_engine,
        series_plan,
    )
    from xsvs_bluesky.errors import RunError
    from xsvs_bluesky.live import LiveXSVSTable
    from xsvs_bluesky.results import RunResults
    from xsvs_bluesky.storage import allocate_scan_id

    times = list(exposure_times or DEMO_EXPOSURE_TIMES)
    if rig is None:
        assert catalogs.external_dir is not None
        rig = _prepare(seed, catalogs.external_dir)
    model = rig.model
    derived: list[tuple[str, dict[str, Any]]] = []
    live: list[Any] = [lambda name, doc: derived.append((name, doc))]
    if progress and verbose:
        live.append(LiveXSVSTable(cast(IO[str], _BarSafeStderr()), interval_s=2.0))
    bar = _Progress(progress)
    session = LiveSession(
        catalogs,
        RE=rig.RE,
        live=live,
        masks=[("beamstop", model.mask)],
        flat_field=("efficiency", model.efficiency),
        estimator=estimator,
    )
    # a scan_id no other writer of these catalogs has (RunEngine({}) would
    # number every demo's run 1)
    session.RE.scan_id_source = lambda md: allocate_scan_id(catalogs)
    token = session.RE.subscribe(bar)
    raw = _RawRun()
    raw_token = session.RE.subscribe(raw)
    # the first SIGINT or SIGTERM aborts the scan at once (and the analysis
    # with it); the runs are then stored as usual and the caller exits
    stopper = AbortOnSignal(session.RE, then=session.interrupt)
    record: Any = None
    results: Any = None
    table: Any = None
    with stopper:
        try:
            say(
                f"acquiring {len(times)} exposures x {frames} frames of "
                f"{model.geometry.shape[0]}x{model.geometry.shape[1]} px "
                f"(t_e {times[0]:.0e} .. {times[-1]:.1e} s)"
            )
            t0 = time.perf_counter()
            plan = series_plan(rig.detector, frames=frames, exposure_times=times)
            stopper.run(plan)
            t1 = time.perf_counter()
            if raw.uid:
                record = session.record(raw.uid)
            t2 = time.perf_counter()
            if not stopper.interrupted:
                if record is None or record.derived_uid is None:
                    raise RunError(
                        f"raw run {raw.uid} produced no derived run; see the log"
                    )
                # table and figure from the derived run's documents while
                # the writer stores them in Tiled
                results = RunResults.from_documents(derived, record.derived_uid)
                table = truth_rows(results, model)
                if figure is not None:
                    save_truth_figure(figure, results, model)
            session.wait()
            t3 = time.perf_counter()
        finally:
            session.RE.unsubscribe(token)
            session.RE.unsubscribe(raw_token)
            session.close()
            close_engine(session.RE)
    backed_up = tuple(session.backed_up)
    n = frames * len(times)
    common: dict[str, Any] = {
        "raw_uid": raw.uid,
        "acquisition_s": t1 - t0,
        "analysis_s": t3 - t0,
        "files": tuple(raw.paths),
        "disk_bytes": raw.size(),
        "frame_bytes": 2 * model.geometry.shape[0] * model.geometry.shape[1],
        "backed_up": backed_up,
        "raw_status": str(raw.stop.get("exit_status", "")),
    }
    if stopper.interrupted:
        return DemoOutcome(
            derived_uid=getattr(record, "derived_uid", None) or "",
            status=getattr(record, "exit_status", ""),
            reason=getattr(record, "reason", ""),
            text="",
            table=None,
            n_frames=raw.frames,
            signum=stopper.signum,
            **common,
        )
    (say if verbose else _quiet)(
        f"acquired {n} frames in {t1 - t0:.1f} s ({n / (t1 - t0):.0f} frames/s); "
        f"analysis done {t2 - t1:.1f} s later, derived run stored in Tiled "
        f"{t3 - t1:.1f} s later"
    )
    if record.exit_status != "success":
        say(f"analysis failed: {record.reason}")
    return DemoOutcome(
        derived_uid=record.derived_uid,
        status=record.exit_status,
        reason=record.reason,
        text=format_truth_table(table) + diffusion_line(results, model),
        table=table,
        n_frames=n,
        **common,
    )
