"""``xsvs-bluesky serve``: a real server process other commands find and use.

One ``serve`` subprocess over a temporary data folder on a free port for the
module; the tests run in file order and the last one stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import CLI, REPO, ServeProcess, free_port, start_serve
from http_timing import kept_alive_seconds

from xsvs_bluesky.storage import find_server, open_catalogs

pytestmark = [pytest.mark.tiled, pytest.mark.slow]


def _run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("served") / "xsvs-data"
    srv = start_serve(data_dir, port=free_port())
    try:
        yield srv
    finally:
        srv.close()


def test_serve_prints_how_to_connect_and_keeps_the_key_private(served):
    folder = served.folder
    uri = f"http://127.0.0.1:{served.port}/api/v1"
    key = folder.key_file.read_text().strip()
    assert key.isalnum() and len(key) >= 32
    for path in (folder.key_file, folder.config_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    config = folder.config_file.read_text()
    assert "xsvs_bluesky.storage.service:folder_tree" in config
    assert f"port: {served.port}" in config
    printed = "".join(served.out)
    assert f'from_uri("{uri}", api_key=key)' in printed
    assert str(folder.key_file) in printed and "TILED_API_KEY" in printed
    assert key not in served.log()
    running = find_server(served.data_dir)
    assert running is not None
    assert running.uri == uri and running.pid == served.proc.pid
    assert key not in folder.server_file.read_text()


def test_a_second_process_uses_the_running_server(served):
    with open_catalogs(data_dir=served.data_dir) as cats:
        assert cats.server is None  # no server of its own
        assert cats.uri == f"http://127.0.0.1:{served.port}/api/v1"
        assert len(cats.processed) == 0

    demo = _run(
        "demo",
        "--frames",
        "30",
        "--no-progress",
        "--data-dir",
        str(served.data_dir),
        "--figure",
        str(served.data_dir.parent / "demo.png"),
    )
    assert demo.returncode == 0, demo.stderr
    assert f"using the Tiled server at http://127.0.0.1:{served.port}" in demo.stderr
    assert not (served.folder.tiled / "access.log").exists()  # nothing in-process

    results = _run("results", "--data-dir", str(served.data_dir))
    assert results.returncode == 0, results.stderr
    assert "using the Tiled server at" in results.stderr
    assert "beta" in results.stdout and len(results.stdout.splitlines()) > 8
    # the server logged the requests, never the key
    assert "/api/v1/search/processed" in served.log()
    assert served.folder.key_file.read_text().strip() not in served.log()


def test_serve_answers_kept_alive_connections_without_delay(served):
    assert kept_alive_seconds(f"http://127.0.0.1:{served.port}/api/v1") < 0.035


def test_a_second_server_is_refused_with_one_line_before_writing(served):
    folder = served.folder
    before = {p: p.stat().st_mtime_ns for p in (folder.config_file, folder.server_file)}
    second = _run("serve", "--data-dir", str(served.data_dir), timeout=120)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "already served by" in lines[0] and f"pid {served.proc.pid}" in lines[0]

    tiled = subprocess.run(
        [sys.executable, "-m", "tiled", "serve", "config", str(folder.config_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tiled.returncode == 2
    refusals = [line for line in tiled.stderr.splitlines() if "already served" in line]
    assert len(refusals) == 1 and f"pid {served.proc.pid}" in refusals[0]
    assert "Traceback" not in tiled.stderr
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before
    assert served.proc.poll() is None  # the first one serves on


def test_a_missing_api_key_is_one_line(served, capsys, monkeypatch):
    """The server needs the folder's key: without one, each command says so
    in one line (Tiled's own text is a multi-line RuntimeError)."""
    from xsvs_bluesky.cli import main

    monkeypatch.delenv("TILED_API_KEY", raising=False)
    uri = f"http://127.0.0.1:{served.port}/api/v1"
    for argv in (["results"], ["export", "--to", "csv"], ["reanalyze", "1"]):
        code = main([*argv, "--tiled-uri", uri])
        out, err = capsys.readouterr()
        assert code == 2 and out == "", err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"the Tiled server {uri!r} requires an API key" in err
        assert "TILED_API_KEY" in err and "--api-key" in err


def test_sigterm_stops_the_server_cleanly(served):
    folder = served.folder
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=60) == 0, served.log()
    assert "stopped" in "".join(served.err)
    assert not folder.locked_elsewhere()
    assert not folder.server_file.exists()
    assert find_server(served.data_dir) is None
    # the folder is free: this process can take it
    assert folder.try_lock()
    folder.unlock()
    assert os.path.exists(folder.catalog_db)


def test_results_start_a_background_server_that_serve_stop_ends(served):
    assert served.proc.poll() is not None  # stopped by the test above
    assert find_server(served.data_dir) is None
    env = {k: v for k, v in os.environ.items() if k != "XSVS_BLUESKY_IN_PROCESS"}
    data = ["--data-dir", str(served.data_dir)]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    first = run("results", *data)
    running = find_server(served.data_dir)
    try:
        assert first.returncode == 0, first.stderr
        assert "in the background" in first.stderr
        assert f"xsvs-bluesky serve --stop --data-dir {served.data_dir}" in first.stderr
        assert running is not None and running.pid is not None
        assert "beta" in first.stdout
        # the next command finds it and prints the same
        second = run("results", *data)
        assert second.returncode == 0, second.stderr
        assert f"using the Tiled server at {running.describe()}" in second.stderr
        assert second.stdout == first.stdout
    finally:
        stop = run("serve", "--stop", *data)
    assert stop.returncode == 0, stop.stderr
    assert f"stopped {running.describe()}" in stop.stderr
    assert find_server(served.data_dir) is None
    deadline = time.monotonic() + 30
    while True:  # the detached server has exited (and been reaped by init)
        try:
            os.kill(running.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    again = run("serve", "--stop", *data)
    assert again.returncode == 0 and "no server" in again.stderr
