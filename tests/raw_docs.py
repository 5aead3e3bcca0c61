"""Raw-run documents with inline frames, shared by unit and integration tests.

Not a test module.  ``tests/`` is on ``sys.path`` under pytest (the folder of
``tests/conftest.py``), so this imports as ``raw_docs`` from any test.
"""

from __future__ import annotations

from typing import Any

FRAME_KEY = "det_image"
"""Data key of the frames (detector object ``det``)."""


def inline_descriptor(bundle: Any, t_e: float, shape: tuple[int, ...]) -> Any:
    """Compose the ``primary`` descriptor of one exposure's inline frames.

    Parameters
    ----------
    bundle : event_model.ComposeRunBundle
        The raw run's :func:`event_model.compose_run` bundle.
    t_e : float
        Exposure time, s: the detector's ``det_acquire_time`` configuration.
    shape : tuple of int
        Frame shape, rows x columns (``uint16`` frames under ``det_image``).

    Returns
    -------
    event_model.ComposeDescriptorBundle
        ``.descriptor_doc`` is the document; ``.compose_event_page`` makes
        its event pages.
    """
    return bundle.compose_descriptor(
        name="primary",
        data_keys={
            FRAME_KEY: {
                "source": "sim",
                "dtype": "array",
                "shape": list(shape),
                "dtype_numpy": "<u2",
                "object_name": "det",
            }
        },
        object_keys={"det": [FRAME_KEY]},
        configuration={
            "det": {
                "data": {"det_acquire_time": t_e},
                "timestamps": {"det_acquire_time": 0.0},
                "data_keys": {
                    "det_acquire_time": {
                        "source": "sim",
                        "dtype": "number",
                        "shape": [],
                    }
                },
            }
        },
    )
