"""A Tiled server killed (SIGKILL) while runs are written: no result, no scan lost.

Each test runs a real ``xsvs-bluesky serve`` process over a temporary data
folder, kills it while a run is still being written, restarts it on the same
folder and port, and writes the local backup back (``upload``):

- ``replay`` (a subprocess; the test hook ``XSVS_TEST_SIGNAL`` makes it send
  SIGKILL to the server when the second exposure's frames reach the raw
  writer): it ends with exit code 3 and one line naming the server, the
  cause and the backup; after ``upload`` the runs equal those of an
  uninterrupted replay of the same series (read through Tiled);
- a live scan (a real RunEngine and :class:`~xsvs_bluesky.demo.LiveSession`,
  the simulated MAXIPIX; the server killed at the fifth StreamDatum): the
  scan completes, no document holds up the RunEngine, the backup has both
  runs, and after ``upload`` they are complete and agree with the analysis;
- a server that stops answering for 6 s (SIGSTOP, then SIGCONT) during a
  scan: requests time out (or the writer's queue fills first), the run goes
  to the backup, and the writer writes it whole by itself once the server
  answers again.

The writers retry a failing server for 2 or 3 s here (10 s by default).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import free_port
from legacy_series import write_series
from test_replay import run_cli

import xsvs_bluesky
from xsvs_bluesky.storage import backup_files, open_catalogs, upload_backups

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

CLI = [sys.executable, "-m", "xsvs_bluesky.cli"]
PACKAGE_PATH = str(Path(xsvs_bluesky.__file__).parents[1])


def _env(**extra: str) -> dict[str, str]:
    path = [PACKAGE_PATH, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    return env


class Server:
    """``xsvs-bluesky serve`` of one data folder on one port, (re)startable."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}/api/v1"
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self._release()
        argv = ["serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        proc = subprocess.Popen(
            [*CLI, *argv],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.proc = proc
        ready = threading.Event()

        def drain() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.log.append(line)
                if "ready" in line:
                    ready.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        deadline = time.monotonic() + 120
        while not ready.wait(0.2):
            assert proc.poll() is None, "".join(self.log)
            assert time.monotonic() < deadline, "".join(self.log)

    def _release(self) -> None:
        """Close the pipe of a server that has exited."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self._drain is not None:
            self._drain.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait_gone(self) -> None:
        assert self.proc is not None
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._release()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "xsvs-data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def stream_contents(run: Any) -> dict[tuple[str, str], Any]:
    """Every table (without times) and array of every stream of ``run``.

    Not the derived run's ``progress`` stream: its snapshots are throttled
    by the clock, so a replay that waited for a dead server has others.
    """
    out: dict[tuple[str, str], Any] = {}
    for stream in run:
        if stream == "progress":
            continue
        node = run[stream]
        out[stream, "data_keys"] = node.metadata["data_keys"]
        base = getattr(node, "base", node)
        for key in base:
            item = base[key]
            value = item.read()
            if isinstance(value, pd.DataFrame):
                drop = [c for c in value.columns if c == "time" or c.startswith("ts_")]
                value = value.drop(columns=drop).reset_index(drop=True)
            out[stream, key] = value
    return out


def assert_same_streams(run: Any, reference: Any) -> None:
    got, expected = stream_contents(run), stream_contents(reference)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[key], value, obj=str(key))
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=str(key))
        else:
            assert got[key] == value, key


N_FRAMES = 4  # per exposure; one StreamDatum per exposure


def test_server_killed_mid_replay_then_upload_gives_the_runs_of_a_whole_replay(
    server: Server, tmp_path: Path
) -> None:
    ini = write_series(tmp_path / "series", n_frames=N_FRAMES)
    data = ["--data-dir", str(server.data_dir), "--no-progress"]
    code, out, err = run_cli(
        "replay", ini, *data, "--raw-catalog", "ref-raw", "--processed-catalog", "ref"
    )
    assert code == 0, err

    hook = f"raw.stream_datum:2:SIGKILL:0:{server.pid}"
    t0 = time.perf_counter()
    done = subprocess.run(
        [*CLI, "replay", str(ini), *data],
        env=_env(XSVS_TEST_SIGNAL=hook, XSVS_BLUESKY_RETRY_S="2"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - t0
    server.wait_gone()
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "error:" in x]
    backup = server.data_dir.resolve() / "backup"
    assert line.startswith("xsvs-bluesky replay: error: the Tiled server at ")
    assert server.uri in line and f"kept in {backup};" in line
    assert "Connect" in line or "Read" in line or "Protocol" in line  # the cause
    assert " raw run " in line and " derived run " in line
    assert f"'xsvs-bluesky upload --data-dir {server.data_dir.resolve()}'" in line
    assert "beta" in done.stdout  # the results were printed all the same
    assert len(backup_files(backup)) == 2  # the raw and the derived run
    assert seconds < 45

    # the server is still down: upload says so in one line, keeps the backup
    named = ["--tiled-uri", server.uri, "--backup-dir", str(backup)]
    code, out, err = run_cli("upload", *named)
    assert code == 3 and out == "", err
    assert err.strip().splitlines() == [
        f"xsvs-bluesky upload: error: the Tiled server at {server.uri} does not "
        "answer (ConnectError: [Errno 111] Connection refused); 2 run(s) stay in "
        f"{backup}; run 'xsvs-bluesky upload {' '.join(named)}' again when it "
        "answers"
    ]
    assert len(backup_files(backup)) == 2

    server.start()
    # running but not answering (stopped): the same, after one request
    os.kill(server.pid, signal.SIGSTOP)
    try:
        code, out, err = run_cli("upload", "--data-dir", server.data_dir)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert code == 3 and out == "", err
    (line,) = err.strip().splitlines()
    start = f"xsvs-bluesky upload: error: the Tiled server at {server.uri} does not"
    assert line.startswith(f"{start} answer (ReadTimeout"), line
    assert f"2 run(s) stay in {backup};" in line
    assert len(backup_files(backup)) == 2

    code, out, err = run_cli("upload", "--data-dir", server.data_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(x.startswith("wrote ") for x in lines), out
    assert any(x.startswith("wrote derived run ") for x in lines), out
    # the raw run was in Tiled, half-written: removed, then written whole
    (raw_line,) = [x for x in lines if x.startswith("wrote raw run ")]
    assert "removed first" in raw_line
    assert backup_files(backup) == []

    with open_catalogs(data_dir=server.data_dir) as cats:
        (uid,) = list(cats.raw)
        (ref_uid,) = list(cats.client["ref-raw"])
        raw, ref = cats.raw[uid], cats.client["ref-raw"][ref_uid]
        assert raw.metadata["stop"]["exit_status"] == "success"
        assert raw.metadata["stop"]["num_events"] == ref.metadata["stop"]["num_events"]
        assert_same_streams(raw, ref)
        (derived,) = cats.processed.values()
        (ref_derived,) = cats.client["ref"].values()
        assert derived.metadata["start"]["original_run_uid"] == uid
        assert derived.metadata["stop"]["exit_status"] == "success"
        assert_same_streams(derived, ref_derived)
    # the next replay of the series finds it whole
    code, out, err = run_cli("replay", ini, *data)
    assert code == 0 and "already replayed" in out, err


FRAMES = 150  # per exposure, 8 exposures


def test_server_killed_during_a_live_scan_the_scan_completes_and_upload_stores_it(
    server: Server,
) -> None:
    from bluesky import RunEngine

    from xsvs_bluesky.demo import (
        LiveSession,
        close_engine,
        demo_model,
        series_plan,
        sim_detector,
    )

    with open_catalogs(data_dir=server.data_dir) as cats:
        assert cats.external_dir is not None and cats.backup_dir is not None
        RE = RunEngine({})
        model = demo_model(0)
        det = sim_detector(cats.external_dir, model)
        # the RunEngine calls its subscribers in order: the time from the
        # first to the last is what the session's writer and analysis queue
        # take of each document
        began: list[float] = []
        held: list[float] = []  # s, per document
        RE.subscribe(lambda name, doc: began.append(time.perf_counter()))
        session = LiveSession(
            cats,
            RE=RE,
            masks=[("beamstop", model.mask)],
            flat_field=("efficiency", model.efficiency),
            retry_s=3,
        )
        RE.subscribe(lambda name, doc: held.append(time.perf_counter() - began[-1]))
        datums = [0]

        def kill_at_the_fifth_datum(name: str, doc: dict[str, Any]) -> None:
            if name == "stream_datum":
                datums[0] += 1
                if datums[0] == 5:
                    server.kill()

        RE.subscribe(kill_at_the_fifth_datum)
        try:
            t0 = time.perf_counter()
            uids: Any = RE(series_plan(det, frames=FRAMES))
            scan_s = time.perf_counter() - t0
            record = session.record(uids[0])
            assert session.wait(60)
        finally:
            session.close()
            close_engine(RE)
        server.wait_gone()
        assert datums[0] > 5  # the scan went on after the kill
        assert max(held) < 0.25, max(held)  # no document held up the RunEngine
        assert len(held) == len(began) > 8 * FRAMES / 64
        assert scan_s < 40
        assert record is not None and record.exit_status == "success"
        kept = session.backed_up
        assert sorted(r.catalog for r in kept) == [("processed",), ("raw",)]
        assert sorted(r.kind for r in kept) == ["derived", "raw"]
        assert {r.uid for r in kept} == {uids[0], record.derived_uid}
        assert all(r.path.is_file() and r.server == server.uri for r in kept)

        server.start()
        report = upload_backups(cats.client, cats.backup_dir)
        assert not report.failed and not report.busy
        assert sorted(u.uid for u in report.uploaded) == sorted(r.uid for r in kept)
        assert backup_files(cats.backup_dir) == []
        raw = cats.raw[uids[0]]
        assert raw.metadata["stop"]["exit_status"] == "success"
        assert list(raw) == [f"exposure_{i}" for i in range(8)]
        for stream in raw:
            assert raw[stream]["maxipix"].shape[0] == FRAMES
        derived = cats.processed[record.derived_uid]
        # the in-memory record and the stored stop document agree
        assert derived.metadata["stop"]["exit_status"] == record.exit_status
        assert derived.metadata["stop"]["reason"] == record.reason
        from xsvs_bluesky.results import load_results

        stored = load_results(derived)
        expected = np.array([[e.beta for e in r.estimates] for r in record.results])
        np.testing.assert_array_equal(stored.matrix("beta"), expected)


@pytest.mark.parametrize(
    ("max_queue", "cause"),
    [
        (10_000, "Timeout"),  # requests time out
        (5, "the writer fell behind"),  # the queue fills first: spilled
    ],
)
def test_a_server_that_stops_answering_for_a_while_costs_no_run(
    server: Server, max_queue: int, cause: str
) -> None:
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd.sim import det

    from xsvs_bluesky.demo import close_engine
    from xsvs_bluesky.storage import SpoolingWriter

    with open_catalogs(data_dir=server.data_dir) as cats:
        assert cats.backup_dir is not None
        RE = RunEngine({})
        writer = SpoolingWriter(
            cats.raw,
            backup_dir=cats.backup_dir,
            batch_size=1,
            retry_s=1.5,
            timeout_s=1,
            max_queue=max_queue,
        )
        RE.subscribe(writer)
        # longer than the writer's give-up time (retry_s) plus how far its
        # thread may lag behind the RunEngine on a loaded machine: with 3 s
        # the writer once reached the paused server only near the end of the
        # pause and got through without its backup (a whole-suite CI run)
        resume = threading.Timer(6.0, os.kill, (server.pid, signal.SIGCONT))

        def pause_at_event_5(name: str, doc: dict[str, Any]) -> None:
            if name == "event" and doc["seq_num"] == 5:
                os.kill(server.pid, signal.SIGSTOP)
                resume.start()

        RE.subscribe(pause_at_event_5)
        try:
            uids: Any = RE(bp.count([det], num=40, delay=0.05))
            assert writer.wait(60)
        finally:
            resume.join()
            writer.close()
            close_engine(RE)
        (uid,) = uids
        # the requests timed out; the run went to the backup, then was written
        # from it by the writer itself once the server answered again
        assert [r.uid for r in writer.uploaded] == [uid] and writer.backed_up == []
        assert cause in writer.uploaded[0].cause
        assert backup_files(cats.backup_dir) == []
        run = cats.raw[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        table = run["primary"].base["internal"].read()
        assert list(table["seq_num"]) == list(range(1, 41))
