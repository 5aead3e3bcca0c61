"""Replay of the real 2700-frame series into Tiled vs the plain decode of its files.

Run from the repository root::

    python3 -m benchmarks.bench_replay            # 2 repeats
    python3 -m benchmarks.bench_replay --quick    # 1 repeat
    python3 -m benchmarks replay                  # through the runner

The runs go to a data folder served as the CLI serves it by default: a
background ``xsvs-bluesky serve`` process (``--server in-process``: the
server in this process, as ``open_catalogs(data_dir=...)`` from Python,
whose requests then share this process's interpreter with the replay).

Measured in the same run, medians of the repeats (wall clock and process
CPU time of this process; with ``--server in-process`` the server's CPU
counts too):

- read floor: the minimal single-thread zlib + frombuffer decode of every
  file (``bench_read``'s floor);
- plain decode: ``FrameSeries(threads=2)`` (``bench_analyze``'s baseline);
- replay: ``LegacyReplay(ini).run(catalogs, force=True)`` into the data
  folder's Tiled server started once (start-up not counted): input checks and
  hashes, HDF5 writing, the analysis callback and both TiledWriters.  The
  time spent in Tiled HTTP requests is reported per catalog (raw runs,
  derived runs), and the replay without it.

Target: replay <= 2.5x the read floor.

Then, once (after the repeats):

- derived run stored: one more replay with a separate process polling the
  processed catalog with a plain Tiled client; printed: from the raw run's
  stop document (its first consumer, the analysis, receives it) until the
  derived writer's stop returned, until the other process saw the run
  complete (its stop document, written after every page: from then on a
  reader gets the whole run), and until that process had read every stream
  of it (its ~30 requests of reading included).  Target <= 1 s;
- whole processes: ``xsvs-bluesky analyze INI`` and ``xsvs-bluesky replay
  INI --force --tiled-uri ...`` (against the same server, started and
  warm: the server's start-up is not counted) as subprocesses, each with its
  own imports and numba cache loads (the cache is warm after the first
  run), in ``--pairs`` alternating pairs (medians).  Target: replay <= 2x
  analyze.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "pyxsvs-example"
TARGET = 2.5


class RequestClock:
    """Count and time the Tiled HTTP requests of this process, per catalog."""

    def __init__(self, names: dict[str, str]) -> None:
        import httpx

        self.names = names
        self.count: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        self._send = httpx.Client.send
        clock = self

        def send(client: Any, request: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return clock._send(client, request, **kwargs)
            finally:
                parts = request.url.path.split("/")
                found = [clock.names[p] for p in parts if p in clock.names]
                where = found[0] if found else "other"
                clock.count[where] += 1
                clock.seconds[where] += time.perf_counter() - start

        httpx.Client.send = send  # type: ignore[method-assign]

    def reset(self) -> None:
        self.count.clear()
        self.seconds.clear()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 repeat")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="alternating whole-process pairs of analyze and replay (default 3)",
    )
    parser.add_argument(
        "--server",
        choices=("serve", "in-process"),
        default="serve",
        help="the data folder's server: a background 'xsvs-bluesky serve' "
        "process (the CLI's default) or this process",
    )
    args = parser.parse_args(argv)
    ini = args.data / "analysis" / "xsvs" / "xsvs_input.txt"
    if not ini.is_file():
        print(f"example data not found: {ini}", file=sys.stderr)
        return 2
    repeats = 1 if args.quick else max(args.repeats, 1)

    from benchmarks._common import machine_info
    from benchmarks.bench_read import minimal_decode
    from xsvs_bluesky.legacy import FrameSeries, read_ini
    from xsvs_bluesky.replay import LegacyReplay
    from xsvs_bluesky.storage import open_catalogs, stop_server

    files = list(read_ini(ini).all_files())
    folder = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    t0 = time.perf_counter()
    cats = open_catalogs(data_dir=folder, background=args.server == "serve")
    startup = time.perf_counter() - t0
    clock = RequestClock({"raw": "raw", "processed": "derived"})
    try:
        timings: dict[str, tuple[list[float], list[float]]] = {}
        tiled: dict[str, list[float]] = collections.defaultdict(list)
        requests: dict[str, list[int]] = collections.defaultdict(list)

        def add(name: str, fn: Callable[[], object]) -> None:
            wall, cpu = timed(fn)
            walls, cpus = timings.setdefault(name, ([], []))
            walls.append(wall)
            cpus.append(cpu)

        def replay() -> None:
            clock.reset()
            LegacyReplay(ini).run(cats, force=True)
            for where in ("raw", "derived", "other"):
                tiled[where].append(clock.seconds[where])
                requests[where].append(clock.count[where])

        minimal_decode(files)  # warm the page cache
        LegacyReplay(ini).run(cats, force=True)  # warm numba caches and imports
        cases: dict[str, Callable[[], object]] = {
            "read floor (zlib, 1 thread)": lambda: minimal_decode(files),
            "plain decode (FrameSeries, 2 threads)": lambda: sum(
                1 for _ in FrameSeries(files, threads=2)
            ),
            "replay checks + hashes (LegacyReplay)": lambda: LegacyReplay(ini),
            "replay including Tiled": replay,
        }
        for rep in range(repeats):
            for name in list(cases) if rep % 2 == 0 else list(reversed(cases)):
                add(name, cases[name])
        stored = derived_latency(cats, ini)
        whole = whole_processes(cats, ini, repeats=args.pairs)
    finally:
        cats.close()
        if args.server == "serve":
            stop_server(folder)
        shutil.rmtree(folder, ignore_errors=True)

    print(machine_info())
    where = (
        "a background 'xsvs-bluesky serve' process"
        if args.server == "serve"
        else "this process"
    )
    print(
        f"{len(files)} files, median of {repeats}; the data folder's Tiled server "
        f"({where}) started in {startup:.1f} s (not counted)"
    )
    floor = statistics.median(timings["read floor (zlib, 1 thread)"][0])
    print(f"  {'case':40s} {'wall s':>7} {'cpu s':>7} {'x floor':>8}")
    for name, (walls, cpus) in timings.items():
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"  {name:40s} {wall:7.2f} {cpu:7.2f} {wall / floor:7.2f}x")
    total = statistics.median(timings["replay including Tiled"][0])
    in_tiled = 0.0
    for where in ("raw", "derived", "other"):
        seconds = statistics.median(tiled[where])
        in_tiled += seconds
        n = int(statistics.median(requests[where]))
        label = f"{where} runs" if where != "other" else "queries"
        print(
            f"    Tiled requests, {label:12s} {n:4d} in {seconds:6.2f} s "
            f"({1e3 * seconds / max(n, 1):.0f} ms each)"
        )
    rest = total - in_tiled
    print(
        f"    replay outside Tiled requests     {rest:6.2f} s "
        f"({rest / floor:.2f}x floor)"
    )
    ratio = total / floor
    verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
    print(f"replay / read floor (wall): {ratio:.2f}x, target <= {TARGET}x: {verdict}")
    written, seen, readable, nodes, rows = stored
    print(
        f"derived run after the raw stop document: written {written:.2f} s, "
        f"seen complete by another process {seen:.2f} s (target <= 1 s: "
        f"{'OK' if seen <= 1.0 else 'ABOVE TARGET'}), read whole by it "
        f"{readable:.2f} s ({nodes} Tiled nodes, {rows} result rows)"
    )
    analyzes, replays = whole
    analyze_s, replay_s = statistics.median(analyzes), statistics.median(replays)
    pairs = ", ".join(
        f"{a:.2f}/{r:.2f}" for a, r in zip(analyzes, replays, strict=True)
    )
    print(
        f"whole processes, medians of {len(analyzes)} alternating pairs: analyze "
        f"{analyze_s:.2f} s, replay {replay_s:.2f} s (server warm, numba cache "
        f"warm): {replay_s / analyze_s:.2f}x, target <= 2x: "
        f"{'OK' if replay_s <= 2 * analyze_s else 'ABOVE TARGET'} "
        f"(analyze/replay s per pair: {pairs})"
    )
    return 0


def derived_latency(cats: Any, ini: Path) -> tuple[float, float, float, int, int]:
    """Raw stop -> derived written, seen complete, read whole (s); nodes, rows."""

    import xsvs_bluesky.storage.writer as writer_module
    from xsvs_bluesky.callback import XSVSCallback
    from xsvs_bluesky.replay import LegacyReplay

    marks: dict[str, float] = {}
    original = writer_module.RunWriter.__call__
    original_cb = XSVSCallback.__call__

    def call_cb(self: Any, name: str, doc: Any) -> Any:
        if name == "stop":  # the raw run's stop, whoever receives it first
            marks.setdefault("raw_stop", time.time())
        return original_cb(self, name, doc)

    def call(self: Any, name: str, doc: Any) -> Any:
        # the writers have their own clients: compare the catalogs' paths
        derived = list(self.container.path_parts) == list(cats.processed.path_parts)
        if name == "stop" and not derived:
            marks.setdefault("raw_stop", time.time())
        out = original(self, name, doc)
        if name == "stop" and derived:
            marks["derived_stop"] = time.time()
        return out

    from benchmarks._common import start_tiled_poller

    poller = start_tiled_poller("_poll_derived", cats)
    writer_module.RunWriter.__call__ = call  # type: ignore[method-assign]
    XSVSCallback.__call__ = call_cb  # type: ignore[method-assign]
    try:
        LegacyReplay(ini).run(cats, force=True)
    finally:
        writer_module.RunWriter.__call__ = original  # type: ignore[method-assign]
        XSVSCallback.__call__ = original_cb  # type: ignore[method-assign]
    seen_at, read_at, nodes, rows = poller.stdout.readline().split()
    poller.wait(timeout=60)
    return (
        marks["derived_stop"] - marks["raw_stop"],
        float(seen_at) - marks["raw_stop"],
        float(read_at) - marks["raw_stop"],
        int(nodes),
        int(rows),
    )


def whole_processes(
    cats: Any, ini: Path, *, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall seconds of ``analyze`` and ``replay`` of ``ini``, each its own process.

    ``repeats`` pairs; the first command of a pair alternates.
    """
    import os
    import subprocess

    env = dict(os.environ, TILED_API_KEY=cats.api_key)
    common = [sys.executable, "-m", "xsvs_bluesky.cli"]
    analyze = [*common, "analyze", str(ini), "--no-progress"]
    replay = [
        *common,
        "replay",
        str(ini),
        "--force",
        "--no-progress",
        "--tiled-uri",
        cats.uri,
        "--raw-catalog",
        cats.raw.item["id"],
        "--processed-catalog",
        cats.processed.item["id"],
        "--output-dir",
        str(cats.external_dir / "replay-cli"),
    ]
    seconds: dict[int, list[float]] = {0: [], 1: []}
    for rep in range(repeats):
        order = (0, 1) if rep % 2 == 0 else (1, 0)
        for which in order:
            command = (analyze, replay)[which]
            t0 = time.perf_counter()
            subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
            seconds[which].append(time.perf_counter() - t0)
    return seconds[0], seconds[1]


if __name__ == "__main__":
    raise SystemExit(main())
