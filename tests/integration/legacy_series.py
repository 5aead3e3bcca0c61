"""A small synthetic legacy (pyxsvs) series of known contrast: :func:`write_series`.

Not a test module, and free of pytest: the integration tests and
``benchmarks/bench_postgres.py`` write the series with it.  3 exposures of
40 gzipped EDF frames, 32 x 40 px, Poisson-gamma speckle of known contrast
beta = 0.25, EDF headers with a frame counter restarting every 10 frames
(sample spots) and epoch times, a mask with one bad column (hot pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fabio.edfimage import EdfImage

from xsvs_bluesky.core.synthetic import speckle_frames

SHAPE = (32, 40)
BETA, KBAR = 0.25, 1.5
TIMES = [1e-3, 2e-3, 4e-3]
N_FRAMES = 40
SPOT = 10
T0 = 1383506719.117682  # epoch of the first frame, s
BAD_COLUMN = 7
INI_KEYS = {
    "wavelength": "1.53",
    "cenx": "20.5",
    "ceny": "16.5",
    "pix": "0.055",
    "sddist": "2140",
    "q1": "0.0006",
    "q2": "0.0016",
    "qs": "0.0005",
    "dq": "0.00025",
    "sample name": "latex_",
}


def write_series(root: Path, n_frames: int = N_FRAMES) -> Path:
    """EDF.gz frames with headers, a mask and an INI file; returns the INI."""
    data = root / "data"
    data.mkdir(parents=True)
    mask = np.zeros(SHAPE, np.int8)
    mask[:, BAD_COLUMN] = 1
    EdfImage(data=mask).write(str(root / "mask.edf"))
    frames = speckle_frames(len(TIMES) * n_frames, SHAPE, KBAR, BETA, rng=20240611)
    frames[:, :, BAD_COLUMN] = 11810  # hot pixels, masked
    lines = ["[Main]", "data dir = data/", "mask = mask.edf"]
    lines += [f"{k} = {v}" for k, v in INI_KEYS.items()]
    number = 1
    for e, t_e in enumerate(TIMES):
        first = number
        for i in range(n_frames):
            header = {
                "acq_frame_nb": str(i % SPOT),
                "time_of_day": f"{T0 + 100 * e + 0.1 * i:.6f}",
                "count_time": str(t_e),
            }
            path = data / f"img_{number:04d}.edf.gz"
            EdfImage(data=frames[number - 1], header=header).write(str(path))
            number += 1
        lines += [
            "",
            f"[Exp_{e + 1}]",
            "data prefix = img_",
            "data suffix = .edf.gz",
            f"first data file = {first}",
            f"last data file = {number - 1}",
            f"exp time = {t_e}",
        ]
    ini = root / "xsvs_input.txt"
    ini.write_text("\n".join(lines) + "\n")
    return ini
