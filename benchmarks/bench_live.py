"""Live path: a fly scan of the simulated MAXIPIX with and without the analysis.

Run from the repository root::

    python3 -m benchmarks.bench_live               # 5000 frames, 3 repeats
    python3 -m benchmarks.bench_live --quick       # 1000 frames, 1 repeat
    python3 -m benchmarks live                     # through the runner

One ophyd-async fly scan (:func:`xsvs_bluesky.sim.xsvs_series`, two
exposures, 256x256 uint16 frames, mean counts 0.3 and 0.6 per pixel, 9 q
partitions, flat field given so the estimator is ``mle-weighted``) is run
through a real RunEngine in these set-ups, interleaved, repeat by repeat:

- ``tiled``: raw TiledWriter to an embedded SimpleTiledServer, in the
  RunEngine's thread (baseline of the table);
- ``tiled spooled``: the raw run through a
  :class:`~xsvs_bluesky.storage.SpoolingWriter` made as
  ``profile_collection/startup/05-tiled.py`` makes it (local backup, a
  writer thread): what a user of the profile runs without the analysis,
  and the baseline of the target; ``stored``: until the writer is done;
- ``tiled+xsvs``: plus the XSVSCallback subscribed directly (derived run to
  a processed TiledWriter); the RunEngine waits for every histogram;
- ``tiled+xsvs queued``: a :class:`xsvs_bluesky.demo.LiveSession` itself
  (raw and derived runs through its SpoolingWriters, the analysis in its
  worker thread), timed until :meth:`LiveSession.wait` returns (both runs
  stored);
- ``no tiled`` and ``no tiled+xsvs``: the same without any Tiled;
- with ``--nice-analysis N``: ``tiled+xsvs queued nice N``, the session's
  analysis thread at that nice value (Linux), the other threads unchanged.

Reported: median wall times until the RunEngine returns (``scan``) and
until the derived run is in Tiled (``stored``), their ratios to the
baseline of the same family (``tiled`` or ``no tiled``), then the queued
scan's ratios to ``tiled spooled`` (target <= 1.25), the time spent inside the
analysis callback (its derived-run writer excluded) and the callback's own
throughput, frames / that time (target >= 10 kHz), and the time inside the
derived run's TiledWriter (the queued set-up: the analysis includes the
derived run's backup lines, its writer thread is not timed), and the CPU
time of this process and of the separate server during the scans (the
machine's load moves it much less than the wall times).  Then the
recorded documents of one scan are replayed into fresh XSVSCallbacks (the
callback alone, frames on disk: what it sustains when the detector is not
drawn on the same cores; median frames/s against the >= 10 kHz target, and
its ratio to a plain h5py read of the
same frames), and once more under cProfile to say where its
time goes (frame reading, image average, histograms, fits, derived run).

Tiled server: by default the benchmark's data folder is served by a
separate ``xsvs-bluesky serve`` process (``open_catalogs(background=True)``),
for every set-up alike: what ``xsvs-bluesky demo`` and the IPython profile
(``profile_collection/startup/05-tiled.py``) use, and what a beamline has
(the facility's server).  ``--server in-process`` serves it in the
benchmark's own process instead (a thread of it, as ``open_catalogs`` does
when a background server is not allowed: ``$XSVS_BLUESKY_IN_PROCESS``);
its request handling then competes for the interpreter with the
RunEngine's and the detector's threads.

Live in Tiled: in every ``tiled+xsvs queued`` scan a separate process polls
the derived run's ``results`` table with a plain Tiled client, every
``--poll-s`` (0.5 s; about two requests each, as a live viewer would make;
it polled every 0.1 s with four requests before, ~40 requests/s to the
server during the LiveSession scans only); printed per
exposure: seconds from the exposure's last frame document (received by the
RunEngine's subscribers) until its rows were readable there (target ~2 s).
The simulated detector draws its frames on the same two cores, so the
ratios are pessimistic for a beamline where the detector is elsewhere.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import machine_info, print_table, start_tiled_poller

TARGET_RATIO = 1.25
TARGET_RATE = 10_000.0
_FRAME_DOCUMENTS = {"event", "event_page", "stream_datum", "datum_page"}
TIMES = [1e-3, 2e-3]
PARTITIONS = {"q1": 2e-3, "q2": 1e-2, "qs": 1e-3, "dq": 4e-4}


class Timed:
    """A ``(name, doc)`` consumer that adds up the time spent inside it."""

    def __init__(self, consumer: Callable[[str, dict[str, Any]], Any]) -> None:
        self.consumer = consumer
        self.busy_s = 0.0

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.consumer(name, doc)
        self.busy_s += time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000, help="frames per scan")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1000 frames, 1 repeat")
    parser.add_argument(
        "--no-tiled-variants",
        action="store_true",
        help="skip the two set-ups without Tiled",
    )
    parser.add_argument(
        "--nice-analysis",
        type=int,
        metavar="N",
        help="also a queued set-up whose analysis thread has this nice value "
        "(Linux; the RunEngine's and the writers' threads keep theirs)",
    )
    parser.add_argument(
        "--server",
        choices=("serve", "in-process"),
        default="serve",
        help="where the Tiled server of every set-up runs: a separate "
        "'xsvs-bluesky serve' process (default, as the profile and 'demo') or "
        "a thread of this process",
    )
    parser.add_argument(
        "--poll-s",
        type=float,
        default=0.5,
        help="interval of the other process's reads of the results table "
        "during the queued scans, s (default 0.5)",
    )
    parser.add_argument(
        "--callback-only",
        action="store_true",
        help="record one scan without Tiled, skip the timed set-ups",
    )
    parser.add_argument(
        "--against",
        metavar="COMMIT_OR_PATH",
        help="also compare the callback alone with this commit or source tree",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="with --against: processes per version (default 4)",
    )
    parser.add_argument(
        "--replays",
        type=int,
        default=5,
        help="with --against: timed replays per process (default 5)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 1000, 1
    logging.basicConfig(level=logging.WARNING)

    from bluesky import RunEngine

    from xsvs_bluesky.callback import XSVSCallback
    from xsvs_bluesky.demo import LiveSession, sim_detector
    from xsvs_bluesky.sim import SpeckleModel, xsvs_series
    from xsvs_bluesky.storage import (
        SpoolingWriter,
        find_server,
        make_tiled_writer,
        open_catalogs,
        stop_server,
    )

    per_exposure = [args.frames // len(TIMES)] * len(TIMES)
    n_frames = sum(per_exposure)
    model = SpeckleModel(count_rate=300.0, seed=1)
    kbar = ", ".join(f"{model.mean_counts(t):.2f}" for t in TIMES)
    print(machine_info())
    print(
        f"fly scan: {n_frames} frames of 256x256 uint16 in {len(TIMES)} exposures, "
        f"mean counts {kbar} per pixel, {args.repeats} repeat(s)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        t0 = time.perf_counter()
        separate = args.server == "serve"
        cats = open_catalogs(data_dir=tmp / "tiled", background=separate)
        where = (
            "a separate 'xsvs-bluesky serve' process"
            if cats.server is None
            else "a thread of this process"
        )
        print(
            f"Tiled server of every set-up: {where}, started in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        RE = RunEngine({})
        det = sim_detector(cats.external_dir or tmp, model)

        def analysis(emit: Any) -> XSVSCallback:
            return XSVSCallback(
                masks=[("beamstop", model.mask)],
                flat_field=("efficiency", model.efficiency),
                emit=emit,
            )

        def plan() -> Any:
            return xsvs_series(
                det, TIMES, per_exposure, sample_name="bench", partitions=PARTITIONS
            )

        recorded: list[tuple[str, dict[str, Any]]] = []
        lags: list[list[float]] = []
        # CPU during each scan, s: this process, the separate server process
        scan_cpu: list[tuple[float, float]] = []
        cpu: dict[str, list[tuple[float, float]]] = {}
        running = find_server(tmp / "tiled") if cats.server is None else None
        server_pid = running.pid if running is not None else None

        backup = tmp / "backup"

        def scan(
            tiled: str | None, xsvs: str | None, nice: int | None = None
        ) -> tuple[float, float, float, float]:
            """Time one scan, s: until RE returns, until the derived run is stored,
            inside the analysis (its writer excluded), inside the derived writer."""
            subs: list[Any] = []
            busy: Any = None
            writer: Timed | None = None
            waits: list[Any] = []  # waited for after the scan, then closed
            if tiled == "direct":
                subs.append(make_tiled_writer(cats.raw))
            elif tiled == "spooled" and xsvs != "queued":
                # as profile_collection/startup/05-tiled.py
                spool = SpoolingWriter(cats.raw, backup_dir=backup)
                subs.append(spool)
                waits.append(spool)
            if xsvs == "sync":
                writer = Timed(
                    make_tiled_writer(cats.processed, batch_size=1_000_000)
                    if tiled
                    else (lambda name, doc: None)
                )
                busy = Timed(analysis(writer))
                subs.append(busy)
            if not recorded:
                subs.append(lambda name, doc: recorded.append((name, doc)))
            frames_at: dict[str, float] = {}  # raw stream -> last frame doc time
            poller = None
            if xsvs == "queued":
                streams: dict[str, str] = {}

                def last_frame(name: str, doc: dict[str, Any]) -> None:
                    if name == "descriptor":
                        streams[doc["uid"]] = doc["name"]
                    elif name in _FRAME_DOCUMENTS and doc.get("descriptor") in streams:
                        frames_at[streams[doc["descriptor"]]] = time.time()

                subs.insert(0, last_frame)
                poller = start_poller(cats, args.poll_s)
            tokens = [RE.subscribe(s) for s in subs]
            if xsvs == "queued":  # what users run: the session itself
                session = LiveSession(
                    cats,
                    RE=RE,
                    backup_dir=backup,
                    masks=[("beamstop", model.mask)],
                    flat_field=("efficiency", model.efficiency),
                )
                busy = session.consumer
                waits.append(session)
                if nice is not None:  # one thread: its Linux task id
                    thread = session.consumer._thread
                    os.setpriority(os.PRIO_PROCESS, thread.native_id, nice)
            try:
                cpu0 = time.process_time(), _pid_cpu_s(server_pid)
                start = time.perf_counter()
                RE(plan())
                scan_s = time.perf_counter() - start
                scan_cpu.append(
                    (time.process_time() - cpu0[0], _pid_cpu_s(server_pid) - cpu0[1])
                )
                for w in waits:
                    w.wait()
                done_s = time.perf_counter() - start
            finally:
                for token in tokens:
                    RE.unsubscribe(token)
                for w in waits:
                    w.close()
                _drop_frames(cats.external_dir or tmp, recorded)
            if poller is not None:
                lags.append(poller_lags(poller, frames_at))
            written = writer.busy_s if writer is not None else 0.0
            inside = busy.busy_s if busy is not None else 0.0
            if xsvs == "sync":
                inside -= written  # the writer ran inside the callback
            return scan_s, done_s, inside, written

        setups: dict[str, tuple[str | None, str | None]] = {
            "tiled": ("direct", None),
            "tiled spooled": ("spooled", None),
            "tiled+xsvs": ("direct", "sync"),
            "tiled+xsvs queued": ("spooled", "queued"),
        }
        niced = f"tiled+xsvs queued nice {args.nice_analysis}"
        if args.nice_analysis is not None:
            setups[niced] = ("spooled", "queued")
        if not args.no_tiled_variants:
            setups["no tiled"] = (None, None)
            setups["no tiled+xsvs"] = (None, "sync")
        if args.callback_only:
            setups = {}
        scan(None, "sync")  # warm-up: numba caches, sampler tables, imports
        results: dict[str, list[tuple[float, float, float, float]]] = {
            k: [] for k in setups
        }
        for r in range(args.repeats):
            for name, (tiled, xsvs) in setups.items():
                nice = args.nice_analysis if name == niced else None
                results[name].append(scan(tiled, xsvs, nice))
                cpu.setdefault(name, []).append(scan_cpu[-1])
                scan_s, done_s = results[name][-1][:2]
                print(
                    f"  repeat {r + 1} {name}: scan {scan_s:.2f} s, "
                    f"stored {done_s:.2f} s",
                    flush=True,
                )

        def med(name: str, i: int) -> float:
            return statistics.median(v[i] for v in results[name])

        rows = []
        ok = True
        for name in results if setups else ():
            base = med("tiled" if name.startswith("tiled") else "no tiled", 1)
            scan_s, done_s, inside, writer = (med(name, i) for i in range(4))
            is_base = name in ("tiled", "no tiled")
            rows.append(
                [
                    name,
                    f"{scan_s:.2f}",
                    f"{done_s:.2f}",
                    f"{n_frames / done_s:.0f}",
                    "-" if is_base else f"{scan_s / base:.2f}",
                    "-" if is_base else f"{done_s / base:.2f}",
                    f"{inside:.2f}" if inside else "-",
                    f"{n_frames / inside:.0f}" if inside else "-",
                    f"{writer:.2f}" if writer else "-",
                ]
            )
        if rows:
            print()
            print_table(
                [
                    "set-up",
                    "scan [s]",
                    "stored [s]",
                    "frames/s",
                    "ratio scan",
                    "ratio stored",
                    "analysis [s]",
                    "analysis frames/s",
                    "derived writer [s]",
                ],
                rows,
            )
            print(
                f"medians of {args.repeats}; ratios against the baseline's 'stored' "
                f"time ('tiled' or 'no tiled'); callback target >= "
                f"{TARGET_RATE:.0f} frames/s"
            )
            queued, spooled = "tiled+xsvs queued", "tiled spooled"
            if queued in results and spooled in results:
                scan_ratio = med(queued, 0) / med(spooled, 0)
                ok &= scan_ratio <= TARGET_RATIO
                print(
                    f"LiveSession (queued) against the raw run through the same "
                    f"SpoolingWriter without the analysis ('{spooled}'): scan "
                    f"ratio {scan_ratio:.2f} (target <= {TARGET_RATIO}), stored "
                    f"ratio {med(queued, 1) / med(spooled, 1):.2f}; against "
                    f"'tiled': scan ratio {med(queued, 0) / med('tiled', 0):.2f}"
                )
            print(
                "CPU during the scan (medians, s; load-independent, unlike the "
                "wall times): "
                + "; ".join(
                    f"{name} {statistics.median(c[0] for c in v):.2f}"
                    + (
                        f" + server {statistics.median(c[1] for c in v):.2f}"
                        if server_pid is not None
                        else ""
                    )
                    for name, v in cpu.items()
                )
            )
            if niced in results and spooled in results:
                print(
                    f"with its analysis thread at nice {args.nice_analysis}: scan "
                    f"ratio {med(niced, 0) / med(spooled, 0):.2f}, stored ratio "
                    f"{med(niced, 1) / med(spooled, 1):.2f}"
                )

        for i, lag in enumerate(lags):
            text = ", ".join(f"{v:.2f}" for v in lag)
            print(
                f"live in Tiled, queued scan {i + 1}: exposure rows readable by "
                f"another process {text} s after the exposure's last frame "
                "(target ~2 s)"
            )
        rate = capacity(recorded, n_frames, analysis, max(args.repeats, 3))
        ok &= rate >= TARGET_RATE
        breakdown(recorded, n_frames, analysis)
        if args.against:
            ok &= against(
                args.against,
                recorded,
                model,
                n_frames,
                tmp,
                rounds=args.rounds,
                replays=args.replays,
            )
        cats.close()
        _close_engine(RE)
        return 0 if ok else 1
    finally:  # ~0.65 GB of HDF5 per scan
        if (tmp / "tiled").is_dir():
            stop_server(tmp / "tiled")  # the separate server, if one runs
        shutil.rmtree(tmp, ignore_errors=True)


_CATEGORIES = (
    ("frames read (HDF5, SWMR)", "xsvs_bluesky/callback/_hdf5.py", "read"),
    ("image average", "core/images.py", "update"),
    ("histograms", "core/histogram.py", "update"),
    ("fits (progress + final)", "xsvs_bluesky/analysis/_exposure.py", "result"),
    ("derived run pages", "xsvs_bluesky/derived/_compose.py", "_page"),
    ("derived run stop", "xsvs_bluesky/derived/_compose.py", "stop"),
    ("schema validation (jsonschema)", "jsonschema/validators.py", "validate"),
)


def capacity(
    docs: list[tuple[str, dict[str, Any]]],
    n_frames: int,
    analysis: Callable[[Any], Any],
    repeats: int,
) -> float:
    """Replay one scan's documents into fresh callbacks; return median frames/s.

    The callback alone, its frames already on disk, nothing else running:
    what it can sustain, as against the live figure above, where the
    simulated detector draws and writes frames on the same two cores.
    Baseline of the same run: a plain read of the same frames with h5py,
    32-frame pieces into one reused buffer (what any reader of the file
    pays; the callback itself maps the file and copies nothing).
    """
    import h5py
    import numpy as np

    from xsvs_bluesky.callback._frames import PIECE_FRAMES
    from xsvs_bluesky.callback._hdf5 import uri_to_path

    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    datums = [d for n, d in docs if n == "stream_datum"]
    walls, reads, frame_parts = [], [], []
    for _ in range(repeats):
        files = {
            uid: h5py.File(uri_to_path(doc["uri"]), "r", swmr=True)
            for uid, doc in resources.items()
        }
        t0 = time.perf_counter()
        buffer = None
        for d in datums:
            res = resources[d["stream_resource"]]
            ds = files[res["uid"]][res["parameters"]["dataset"]]
            if buffer is None:
                buffer = np.empty((PIECE_FRAMES, *ds.shape[1:]), ds.dtype)
            a, b = d["indices"]["start"], d["indices"]["stop"]
            for i in range(a, b, PIECE_FRAMES):
                n = min(b, i + PIECE_FRAMES) - i
                ds.read_direct(buffer, np.s_[i : i + n], np.s_[:n])
        reads.append(time.perf_counter() - t0)
        for f in files.values():
            f.close()
        cb = analysis(lambda name, doc: None)
        in_frames = 0.0  # time in the documents that carry frames
        t0 = time.perf_counter()
        for name, doc in docs:
            t1 = time.perf_counter()
            cb(name, doc)
            if name in _FRAME_DOCUMENTS:
                in_frames += time.perf_counter() - t1
        walls.append(time.perf_counter() - t0)
        frame_parts.append(in_frames)
    wall, read = statistics.median(walls), statistics.median(reads)
    frames_part = statistics.median(frame_parts)
    print()
    print(
        f"callback alone (recorded documents replayed into a fresh XSVSCallback, "
        f"no Tiled, medians of {repeats}): {wall:.3f} s, {n_frames / wall:.0f} "
        f"frames/s (best {n_frames / min(walls):.0f}; target >= "
        f"{TARGET_RATE:.0f}); plain h5py read of the same frames {read:.3f} s, "
        f"ratio {wall / read:.2f}"
    )
    print(
        f"  of which handling the frames as they arrive (stream_datum/event "
        f"documents) {frames_part:.3f} s, {n_frames / frames_part:.0f} frames/s "
        f"sustained; per-run set-up and final fits (start, descriptor, stop) "
        f"{wall - frames_part:.3f} s"
    )
    return n_frames / wall


def breakdown(
    docs: list[tuple[str, dict[str, Any]]],
    n_frames: int,
    analysis: Callable[[Any], Any],
) -> None:
    """Replay one scan's documents into a fresh callback under cProfile."""
    cb = analysis(lambda name, doc: None)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for name, doc in docs:
        cb(name, doc)
    profiler.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    covered = 0.0
    for label, path, func in _CATEGORIES:
        seconds = sum(
            v[3]
            for (file, _, fn), v in raw.items()
            if file.endswith(path) and fn == func
        )
        covered += seconds
        rows.append([label, f"{seconds:.3f}", f"{1e3 * seconds / n_frames:.3f}"])
    rows.append(["other", f"{max(total - covered, 0):.3f}", ""])
    print()
    print(
        f"replay of the recorded documents into a fresh XSVSCallback (no Tiled, "
        f"under cProfile): {total:.2f} s, {n_frames / total:.0f} frames/s"
    )
    print_table(["where", "s", "ms/frame"], rows)


TARGET_AGAINST = 0.9
_REPO = Path(__file__).resolve().parent.parent


def against(
    ref: str,
    docs: list[tuple[str, dict[str, Any]]],
    model: Any,
    n_frames: int,
    tmp: Path,
    *,
    rounds: int,
    replays: int,
) -> bool:
    """Compare the callback alone with another version of the code.

    The recorded documents (and the mask and flat field of the model) go to
    a folder; ``_replay_callback.py`` replays them in a fresh process per
    round and version, this code and ``ref`` alternating, the order flipped
    every round.  CPU time of the process per replay: on a shared machine
    it moves much less than the wall clock.  Return whether this code
    reaches :data:`TARGET_AGAINST` of the other's median frames/s.
    """
    import json
    import os
    import subprocess

    import numpy as np

    folder = tmp / "against"
    folder.mkdir()
    with open(folder / "documents.jsonl", "w") as out:
        for name, doc in docs:
            out.write(json.dumps([name, doc], default=_plain) + "\n")
    np.save(folder / "mask.npy", np.asarray(model.mask), allow_pickle=False)
    np.save(folder / "efficiency.npy", np.asarray(model.efficiency), allow_pickle=False)
    worktree: Path | None = None
    if (Path(ref) / "xsvs_bluesky").is_dir():
        other = Path(ref).resolve()
    else:
        worktree = other = tmp / "against-tree"
        subprocess.run(
            ["git", "-C", str(_REPO), "worktree", "add", "--detach", str(other), ref],
            check=True,
            capture_output=True,
        )
    trees = {"this": _REPO, ref: other}
    script = Path(__file__).with_name("_replay_callback.py")
    per_process: dict[str, list[float]] = {k: [] for k in trees}
    every: dict[str, list[float]] = {k: [] for k in trees}
    walls: dict[str, list[float]] = {k: [] for k in trees}
    load = os.getloadavg()[0]
    print()
    print(
        f"callback alone, this code against {ref}: {rounds} processes each, "
        f"alternating, {replays} timed replays per process (CPU time)",
        flush=True,
    )
    try:
        for r in range(rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for key in order:
                env = dict(os.environ, PYTHONPATH=str(trees[key]))
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(script),
                        str(folder),
                        "--replays",
                        str(replays),
                    ],
                    cwd=folder,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                module = Path(out["module"]).resolve()
                if not module.is_relative_to(trees[key].resolve()):
                    raise RuntimeError(f"{key}: imported {module}, not its tree")
                rates = [n_frames / s for s in out["cpu_s"]]
                every[key] += rates
                walls[key] += [n_frames / s for s in out["wall_s"]]
                per_process[key].append(statistics.median(rates))
                print(
                    f"  round {r + 1} {key}: {per_process[key][-1]:.0f} frames/CPU-s",
                    flush=True,
                )
    finally:
        if worktree is not None:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(_REPO),
                    "worktree",
                    "remove",
                    "--force",
                    str(worktree),
                ],
                check=False,
                capture_output=True,
            )
    load_after = os.getloadavg()[0]
    rows = [
        [
            key,
            ", ".join(f"{v:.0f}" for v in per_process[key]),
            f"{statistics.median(every[key]):.0f}",
            f"{max(every[key]):.0f}",
            f"{statistics.median(walls[key]):.0f}",
        ]
        for key in trees
    ]
    print_table(
        [
            "code",
            "per process, medians [frames/CPU-s]",
            "median",
            "best",
            "wall median [frames/s]",
        ],
        rows,
    )
    ratio = statistics.median(every["this"]) / statistics.median(every[ref])
    wall = statistics.median(walls["this"]) / statistics.median(walls[ref])
    print(
        f"ratio this / {ref}: {ratio:.3f} in CPU time (target >= "
        f"{TARGET_AGAINST}), {wall:.3f} in wall time; load average {load:.1f} "
        f"-> {load_after:.1f}"
    )
    return ratio >= TARGET_AGAINST


def _plain(value: Any) -> Any:
    """JSON form of the numpy values a document may hold."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in a document")


def start_poller(cats: Any, interval_s: float) -> Any:
    """Start the ``_poll_rows`` process on the processed catalog."""
    return start_tiled_poller("_poll_rows", cats, str(interval_s))


def poller_lags(poller: Any, frames_at: dict[str, float]) -> list[float]:
    """Seconds from each exposure's last frame until its rows were readable."""
    seen: dict[int, float] = {}
    for line in poller.stdout:
        if line.strip() == "done":
            break
        stamp, index = line.split()
        seen[int(index)] = float(stamp)
    poller.wait(timeout=60)
    ends = [frames_at[k] for k in sorted(frames_at)]  # exposure_0, exposure_1, ...
    return [seen[i] - ends[i] for i in sorted(seen) if i < len(ends)]


def _pid_cpu_s(pid: int | None) -> float:
    """User + system CPU of process ``pid`` so far, s (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drop_frames(folder: Path, keep: list[tuple[str, dict[str, Any]]]) -> None:
    """Delete the scans' HDF5 files except those the recorded documents use."""
    from xsvs_bluesky.callback._hdf5 import uri_to_path

    used = {
        uri_to_path(doc["uri"]).resolve()
        for name, doc in keep
        if name == "stream_resource"
    }
    for path in Path(folder).rglob("*.h5"):
        if path.resolve() not in used:
            path.unlink(missing_ok=True)


def _close_engine(RE: Any) -> None:
    loop = RE.loop
    loop.call_soon_threadsafe(loop.stop)
    RE._th.join(timeout=10)
    loop.close()


if __name__ == "__main__":
    sys.exit(main())
