"""Documents of a small derived XSVS run, made by the real XSVSCallback (helper).

Not a test module: ``test_plots``, ``test_live`` and ``test_run_results`` import
it.  Raw run: inline 64x64 speckle frames of known contrast
``beta0 k(Gamma t_e)`` (exponential kernel) at three exposure times, one
descriptor per exposure with the exposure time in its configuration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from event_model import compose_run
from raw_docs import inline_descriptor

from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.dynamics import exponential_kernel
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.core.synthetic import speckle_frames

# (name, document): event-model's TypedDicts from compose_run and the
# callback's plain dicts, which DocumentRouter takes as ``dict``.
Docs = list[tuple[str, Any]]

SHAPE = (64, 64)
GEO = Geometry(1.5, 5000.0, 0.055, 32.5, 32.5, SHAPE)
PARTS = {"q1": 0.0004, "q2": 0.0016, "qs": 0.0004, "dq": 0.0002}
N_Q = 4
TIMES = (1e-3, 2e-3, 4e-3)
N_FRAMES = 60
BETA0 = 0.3
GAMMA = 200.0  # 1/s
KBAR = (0.3, 0.6, 1.2)


def beta_true(t_e: float) -> float:
    """Contrast of the synthetic frames at exposure time ``t_e`` (s)."""
    return float(BETA0 * exponential_kernel(GAMMA * t_e))


def raw_run(n_frames: int = N_FRAMES) -> Docs:
    """Documents of the raw run (inline frames, one event page per exposure)."""
    bundle = compose_run(metadata={"scan_id": 11, "sample_name": "silica"})
    docs: Docs = [("start", bundle.start_doc)]
    for i, t_e in enumerate(TIMES):
        desc = inline_descriptor(bundle, t_e, SHAPE)
        docs.append(("descriptor", desc.descriptor_doc))
        frames = speckle_frames(n_frames, SHAPE, KBAR[i], beta_true(t_e), rng=i + 1)
        frames = frames.astype(np.uint16)
        for start in range(0, n_frames, 20):  # frames arrive in a few pages
            chunk = list(frames[start : start + 20])
            page = desc.compose_event_page(
                data={"det_image": chunk},
                timestamps={"det_image": [0.0] * len(chunk)},
            )
            docs.append(("event_page", page))
    docs.append(("stop", bundle.compose_stop()))
    return docs


def derived_run(*consumers: Any, n_frames: int = N_FRAMES) -> Docs:
    """Run the callback on :func:`raw_run`; return the derived run's documents.

    ``consumers`` also receive every derived document (live callbacks).
    """
    docs: Docs = []

    def record(name: str, doc: dict[str, Any]) -> None:
        docs.append((name, doc))

    # the pooled mle: its kbar is the sample mean, so the layout tests compare
    # kbar with the trace and I(q) exactly (mle-intensity's is a fitted mean)
    cb = XSVSCallback(
        geometry=GEO,
        partitions=PARTS,
        estimator="mle",
        progress_interval_s=0,
        progress_every_frames=20,
        emit=[record, *consumers],
    )
    for name, doc in raw_run(n_frames):
        cb(name, doc)
    return docs


def without_stream(docs: Docs, stream: str) -> Docs:
    """``docs`` without the descriptor and events of ``stream``."""
    gone = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [
        (n, d)
        for n, d in docs
        if not (n == "descriptor" and d["uid"] in gone)
        and not (n == "event" and d["descriptor"] in gone)
    ]
