"""The IPython profile in profile_collection/ starts, analyses a series, exits.

Every startup file runs, in order, in one IPython ``InteractiveShell``
namespace (as ``ipython --profile-dir=profile_collection`` would), against
the session's Tiled server named through the environment (the facility
path: XSVS_TILED_URI, TILED_API_KEY, XSVS_EXTERNAL_DIR), then a short
``xsvs`` series; the derived run must be in the processed catalog with one
result per exposure and beta close to the simulation's truth.  A real
``ipython`` process started with the profile (over its own data folder, so
with a Tiled server of its own) must end at once on ``exit``, and write
nothing outside its temporary folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

STARTUP = Path(__file__).resolve().parents[2] / "profile_collection" / "startup"
FILES = (
    "00-base.py",
    "05-tiled.py",
    "20-detectors.py",
    "55-publish.py",
    "60-xsvs.py",
    "80-plans.py",
)


@pytest.fixture
def shell(tiled_server, tmp_path, monkeypatch) -> Any:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    name = uuid.uuid4().hex[:10]
    assert tiled_server.external_dir is not None
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XSVS_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XSVS_TILED_URI", tiled_server.uri)
    monkeypatch.setenv("TILED_API_KEY", tiled_server.api_key)
    monkeypatch.setenv("XSVS_EXTERNAL_DIR", str(tiled_server.external_dir / name))
    monkeypatch.setenv("XSVS_RAW_CATALOG", f"raw-{name}")
    monkeypatch.setenv("XSVS_PROCESSED_CATALOG", f"processed-{name}")
    monkeypatch.setenv("XSVS_SIM_SEED", "5")
    monkeypatch.setenv("XSVS_LIVE_PLOT", "1")
    monkeypatch.setenv("XSVS_LIVE_PLOT_PATH", str(tmp_path / "live.png"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # not ~/.ipython
    config = Config()
    config.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=config)
    try:
        yield sh
    finally:
        ns = sh.user_ns
        if ns.get("xsvs_session") is not None:
            ns["xsvs_session"].close()
        if ns.get("xsvs_publisher") is not None:
            ns["xsvs_publisher"].close()
        if ns.get("raw_writer") is not None:
            ns["raw_writer"].close()
        if "catalogs" in ns:
            ns["catalogs"].close()
        if "RE" in ns:
            _stop_engine(ns["RE"])
        InteractiveShell.clear_instance()


def _stop_engine(engine: Any) -> None:
    loop = engine.loop
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join(timeout=10)
    loop.close()


@pytest.mark.tiled
@pytest.mark.slow
def test_startup_files_run_in_order_and_analyse_a_series(shell, tmp_path, capsys):
    assert sorted(p.name for p in STARTUP.glob("*.py")) == list(FILES)
    for name in FILES:
        shell.safe_execfile(
            str(STARTUP / name),
            shell.user_ns,
            raise_exceptions=True,
            shell_futures=True,
        )
    ns = shell.user_ns
    for key in ("RE", "catalogs", "raw_writer", "maxipix", "xsvs_callback", "xsvs"):
        assert key in ns, key
    assert (tmp_path / "state").is_dir()

    times = [2e-4, 8e-4, 3.2e-3]
    result = shell.run_cell(
        f"(raw_uid,) = RE(xsvs({times!r}, frames=150, sample_name='latex'))\n"
        "wait_for_analysis()\n"
        "derived = xsvs_last()\n"
        "table = xsvs_table_of(derived)\n"
    )
    result.raise_error()
    assert ns["RE"].md["scan_id"] == 1  # the JSON metadata store counts scans
    assert (tmp_path / "state" / "runengine-metadata.json").is_file()

    processed = ns["catalogs"].processed
    derived = ns["derived"]
    assert derived is not None
    start = derived.metadata["start"]
    assert start["original_run_uid"] == ns["raw_uid"]
    assert start["sample_name"] == "latex"
    assert derived.metadata["stop"]["exit_status"] == "success"
    assert start["uid"] in processed and ns["raw_uid"] in ns["catalogs"].raw

    table = ns["table"]
    model = ns["maxipix_model"]
    assert sorted(set(table["exposure_time"])) == pytest.approx(times)
    assert len(table) == 3 * len(ns["xsvs_partitions"]["centers"])
    assert set(table["n_frames"]) == {150}
    beta = table["beta"].to_numpy()
    err = table["beta_err"].to_numpy()
    truth = model.beta_true(table["q"].to_numpy(), table["exposure_time"].to_numpy())
    assert np.all(np.isfinite(beta)) and np.all(err > 0)
    z = (beta - truth) / err
    assert np.all(np.abs(z) < 4.5), z
    assert np.all(np.abs(beta - truth) < 0.02)
    assert len(ns["xsvs_results"]) == 3  # final results reached on_result
    out = capsys.readouterr().out
    assert out.count("[xsvs] exposure ") >= 3  # the live table printed
    assert "latex" in out and ": success" in out
    png = (tmp_path / "live.png").read_bytes()  # the live figure, saved
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("in_process", ["1", "0"], ids=["in-process", "serve"])
def test_ipython_with_the_profile_exits_at_once(tmp_path, in_process):
    """Also with the server process the profile starts (``serve``), stopped at exit."""
    profile = tmp_path / "profile"  # IPython writes into its profile folder
    shutil.copytree(STARTUP.parent, profile)
    source_before = _files(STARTUP.parent)
    env = {
        **os.environ,
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "XSVS_DATA_DIR": str(tmp_path / "state"),
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(STARTUP.parents[1]),
        "XSVS_BLUESKY_IN_PROCESS": in_process,
    }
    for name in ("XSVS_TILED_URI", "TILED_API_KEY", "XSVS_EXTERNAL_DIR"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "IPython",
            f"--profile-dir={profile}",
            "--simple-prompt",
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None and proc.stdin is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("xsvs profile: plans" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        proc.stdin.write("x = 1\nexit\n")
        proc.stdin.flush()
        t0 = time.monotonic()
        assert proc.wait(timeout=30) == 0, "".join(lines)
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
        proc.stdin.close()
        proc.stdout.close()
    out = "".join(lines)
    assert "Traceback" not in out, out
    served_by = "this session" if in_process == "1" else "a server process"
    assert f"served by {served_by}" in out, out
    # the history went to the data folder, not into the profile
    assert (tmp_path / "state" / "ipython-history.sqlite").is_file()
    assert not (profile / "history.sqlite").exists()
    assert _files(STARTUP.parent) == source_before  # the source tree untouched
    # the profile's Tiled server was stopped: the data folder is free again
    from xsvs_bluesky.storage import find_server

    assert find_server(tmp_path / "state") is None


@pytest.mark.tiled
@pytest.mark.slow
def test_publishing_instead_of_analysing_never_holds_the_run_engine(shell, monkeypatch):
    import socket
    import time

    with socket.socket() as sock:  # a port where no proxy listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("XSVS_PUBLISH", f"zmq://127.0.0.1:{port}")
    monkeypatch.setenv("XSVS_LOCAL_ANALYSIS", "0")
    for name in FILES:
        shell.safe_execfile(str(STARTUP / name), shell.user_ns, raise_exceptions=True)
    ns = shell.user_ns
    assert ns["xsvs_session"] is None and ns["xsvs_publisher"] is not None
    t0 = time.perf_counter()
    result = shell.run_cell(
        "(raw_uid,) = RE(xsvs([2e-4, 8e-4], frames=50, sample_name='remote'))\n"
        "published = wait_for_analysis(10)\n"
    )
    result.raise_error()
    assert time.perf_counter() - t0 < 60
    assert ns["published"] is True and ns["xsvs_publisher"].dropped == 0
    assert ns["raw_uid"] in ns["catalogs"].raw  # the raw run is stored as usual
