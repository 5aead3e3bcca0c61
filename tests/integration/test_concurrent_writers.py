"""Two writers of one data folder at once, as real concurrent processes.

Each test starts ``python -m xsvs_bluesky.cli ...`` twice in subprocesses on
a new data folder.  The test environment serves a folder inside the command
(``XSVS_BLUESKY_IN_PROCESS=1``, no background server outlives a test): the
first process serves it, the second goes through that server, and the first
waits for the second before it stops its server.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from legacy_series import write_series

import xsvs_bluesky
from xsvs_bluesky.replay import LegacyReplay
from xsvs_bluesky.storage import (
    allocate_scan_id,
    hold_lock,
    locks_folder,
    open_catalogs,
)

pytestmark = [pytest.mark.tiled, pytest.mark.slow]


class Cli:
    """``python -m xsvs_bluesky.cli ARGS`` in a subprocess (the package under
    test), its stdout and stderr in files that can be read while it runs."""

    def __init__(self, folder: Path, *args: str, umask: int = -1) -> None:
        path = [
            str(Path(xsvs_bluesky.__file__).parents[1]),
            os.environ.get("PYTHONPATH"),
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        folder.mkdir(parents=True)
        self.out, self.err = folder / "stdout", folder / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xsvs_bluesky.cli", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                umask=umask,
            )

    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = 240) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.out.read_text(), self.stderr()


def wait_until(condition, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_two_replays_of_one_series_give_one_raw_run(tmp_path: Path) -> None:
    """The second replay of a series waits for the first, then finds its run.

    The test holds the series' lock first, so that both replays are under
    way at once (each says whom it waits for), then lets them go.  Run with
    umask 027: every file of the folder follows it (the key is 0600).
    """
    ini = write_series(tmp_path / "series", n_frames=4)
    data = tmp_path / "xsvs-data"
    content_hash = LegacyReplay(ini).content_hash
    lock = data / "tiled" / "locks" / f"replay-{content_hash[:32]}.lock"
    argv = ["replay", str(ini), "--data-dir", str(data), "--no-progress"]
    waiting = f"waiting for pid {os.getpid()} "
    umask = os.umask(0o027)  # for the folders this process makes too
    try:
        with hold_lock(lock):
            clis = [Cli(tmp_path / f"cli{i}", *argv, umask=0o027) for i in range(2)]
            both_wait = wait_until(
                lambda: (
                    all(waiting in c.stderr() for c in clis)
                    or any(c.proc.poll() is not None for c in clis)
                )
            )
    finally:
        os.umask(umask)
    results = [c.wait() for c in clis]
    for code, _, err in results:
        assert code == 0 and "Traceback" not in err, err
        assert "replays the same series" in err, err
    assert both_wait, [err for _, _, err in results]
    outs = sorted(out for _, out, _ in results)
    assert outs[0].startswith("already replayed: raw run "), outs
    assert outs[1].startswith("raw run      "), outs
    raw_uid = outs[1].split()[2]
    assert raw_uid in outs[0]
    with open_catalogs(data_dir=data) as cats:
        assert list(cats.raw) == [raw_uid]
        assert cats.raw[raw_uid].metadata["start"]["scan_id"] == 1
        assert cats.raw[raw_uid].metadata["stop"]["exit_status"] == "success"
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o027 == 0, (path, oct(mode))
    assert stat.S_IMODE((data / "tiled-api-key").stat().st_mode) == 0o600


def python_process(code: str, *args: str) -> subprocess.Popen[str]:
    """``python -c CODE ARGS`` with the package under test, stdout piped."""
    source = str(Path(xsvs_bluesky.__file__).parents[1])
    path = [source, os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


#: opens the folder's catalogs (through the test's server), says so, waits
#: for a file, then reads through the server and closes
USER = """
import sys, time
from pathlib import Path
from xsvs_bluesky.storage import open_catalogs
cats = open_catalogs(data_dir=sys.argv[1])
print("using", cats.uri, cats.server is None, flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
print("runs", len(cats.raw), flush=True)
cats.close()
"""


def test_a_process_serving_the_folder_waits_for_its_users(tmp_path, caplog):
    """This process serves a folder; another uses its server: closing waits."""
    data, go = tmp_path / "xsvs-data", tmp_path / "go"
    owner = open_catalogs(data_dir=data)
    assert owner.server is not None
    user = python_process(USER, str(data), str(go))
    try:
        assert user.stdout is not None and user.stderr is not None
        line = user.stdout.readline()
        assert line.split() == ["using", owner.uri, "True"], user.stderr.read()
        closing = threading.Thread(target=owner.close)
        closing.start()
        closing.join(1.0)
        assert closing.is_alive()  # waits for the user
        assert f"waiting for pid {user.pid} " in caplog.text
        go.touch()
        out, err = user.communicate(timeout=60)
        assert user.returncode == 0, err
        assert out.split() == ["runs", "0"]  # the server was still there
        closing.join(30)
        assert not closing.is_alive()
        assert not (data / "tiled" / "server.json").exists()
    finally:
        go.touch()
        user.kill()
        user.wait()


#: hands out 5 scan_ids for the catalogs named by the arguments
ALLOCATE = """
import sys
from xsvs_bluesky.storage import allocate_scan_id, open_catalogs
uri, key, raw, ext = sys.argv[1:]
with open_catalogs(tiled_uri=uri, api_key=key, raw=raw, external_dir=ext) as cats:
    print(*[allocate_scan_id(cats) for _ in range(5)], flush=True)
"""


def test_scan_ids_handed_out_at_once_are_unique(catalogs):
    """Three processes take 5 scan_ids each from one catalog at the same time."""
    raw = "/".join(catalogs.raw.path_parts)
    assert locks_folder(catalogs) == catalogs.external_dir / ".xsvs-locks"
    args = [catalogs.uri, catalogs.api_key, raw, str(catalogs.external_dir)]
    procs = [python_process(ALLOCATE, *args) for _ in range(3)]
    given = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        given += [int(n) for n in out.split()]
    assert sorted(given) == list(range(1, 16))
    assert allocate_scan_id(catalogs) == 16


def test_the_first_two_demos_on_a_new_folder_both_work(tmp_path):
    """Two ``demo`` at once on a folder that does not exist yet: one serves
    it, the other goes through that server; two raw runs, scan_ids 1 and 2.
    (~25 s alone, each demo being a whole RunEngine scan of 8 exposures.)"""
    data = tmp_path / "xsvs-data"
    argv = ["demo", "--frames", "2", "--no-progress", "--data-dir", str(data)]
    clis = [Cli(tmp_path / f"demo{i}", *argv) for i in range(2)]
    for code, out, err in [c.wait() for c in clis]:
        assert code == 0 and "Traceback" not in err, err
        assert "(success)" in err and "beta_true" in out
    with open_catalogs(data_dir=data) as cats:
        raw = [r.metadata for r in cats.raw.values()]
        assert sorted(md["start"]["scan_id"] for md in raw) == [1, 2]
        assert {md["stop"]["exit_status"] for md in raw} == {"success"}
        derived = [r.metadata for r in cats.processed.values()]
        assert sorted(md["start"]["scan_id"] for md in derived) == [1, 2]
