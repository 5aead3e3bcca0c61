"""Replay recorded documents into fresh XSVSCallbacks; print CPU times as JSON.

Run by :mod:`benchmarks.bench_live` (``--against``) as a script, once per
process and per version of the code::

    PYTHONPATH=TREE python3 benchmarks/_replay_callback.py FOLDER --replays 5

``FOLDER`` holds ``documents.jsonl`` (one ``[name, doc]`` per line, the
HDF5 files they name still on disk), ``mask.npy`` and ``efficiency.npy``.
The ``xsvs_bluesky`` imported is whichever ``PYTHONPATH`` names: this file
imports nothing from the project but ``xsvs_bluesky.callback.XSVSCallback``
with the keywords every version has (``masks``, ``flat_field``, ``emit``),
so the same script measures an older tree.  One untimed replay first
(numba caches, imports), then ``--replays`` timed ones; the one output
line: ``{"module": ..., "cpu_s": [...], "wall_s": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--replays", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np

    import xsvs_bluesky
    from xsvs_bluesky.callback import XSVSCallback

    docs = [
        tuple(json.loads(line))
        for line in (args.folder / "documents.jsonl").read_text().splitlines()
    ]
    mask = np.load(args.folder / "mask.npy", allow_pickle=False)
    efficiency = np.load(args.folder / "efficiency.npy", allow_pickle=False)

    def replay() -> tuple[float, float]:
        cb = XSVSCallback(
            masks=[("beamstop", mask)],
            flat_field=("efficiency", efficiency),
            emit=lambda name, doc: None,
        )
        c0, w0 = time.process_time(), time.perf_counter()
        for name, doc in docs:
            cb(name, doc)
        return time.process_time() - c0, time.perf_counter() - w0

    replay()
    cpu, wall = zip(*(replay() for _ in range(args.replays)), strict=True)
    print(json.dumps({"module": xsvs_bluesky.__file__, "cpu_s": cpu, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
