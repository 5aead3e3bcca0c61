"""The TiledWriter's imports started in a background thread."""

from __future__ import annotations

import subprocess
import sys


def test_preload_writer_imports_bluesky_tiled_plugins() -> None:
    # a fresh process: in this one the package may be imported already
    code = (
        "import sys\n"
        "from xsvs_bluesky.storage.writer import preload_writer\n"
        "assert 'bluesky_tiled_plugins' not in sys.modules\n"
        "thread = preload_writer()\n"
        "thread.join(120)\n"
        "assert not thread.is_alive()\n"
        "from bluesky_tiled_plugins import TiledWriter\n"
        "print(sys.modules['bluesky_tiled_plugins'].TiledWriter is TiledWriter)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
