"""Simulated MAXIPIX (ophyd v1) whose frames travel inline in Event documents.

The step-scan counterpart of :class:`~xsvs_bluesky.sim.maxipix.SimMaxipix`:
each ``trigger()`` draws one frame from the
:class:`~xsvs_bluesky.sim.speckle.SpeckleModel` and ``read()`` returns it as
a uint16 array.  ``describe()`` gives its ``shape`` and ``dtype_numpy``
(without ``dtype_numpy`` Tiled would store the frames as float64), and
``read_configuration()`` the exposure time ``<name>_acquire_time`` (s).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ophyd import Component, Device, Signal
from ophyd.status import DeviceStatus

from xsvs_bluesky.sim.speckle import FrameSampler, SpeckleModel

__all__ = ["InlineMaxipix"]


class _FrameSignal(Signal):
    """A Signal holding a 2-d uint16 frame, described with ``dtype_numpy``."""

    def describe(self) -> dict[str, dict[str, Any]]:
        value = np.asarray(self.get())
        return {
            self.name: {
                "source": f"sim://{self.name}",
                "dtype": "array",
                "shape": list(value.shape),
                "dtype_numpy": value.dtype.str,
            }
        }


class InlineMaxipix(Device):
    """Simulated MAXIPIX with inline frames (ophyd v1, ``ophyd.sim`` style).

    Parameters
    ----------
    model : SpeckleModel, optional
        Physics of the frames (default ``SpeckleModel()``, 256x256).
    name : str
        Device name; data keys are ``<name>_image`` and
        ``<name>_acquire_time``.
    **kwargs
        Passed on to :class:`ophyd.Device`.

    Attributes
    ----------
    image : Signal
        The last frame, uint16 ``(rows, cols)`` (hinted).
    acquire_time : Signal
        Exposure time per frame, s (configuration).
    """

    image = Component(_FrameSignal, kind="hinted")
    acquire_time = Component(Signal, value=1e-3, kind="config")

    def __init__(self, model: SpeckleModel | None = None, *, name: str, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.model = model if model is not None else SpeckleModel()
        self.next_frame = 0  # index of the next frame (sets the random stream)
        self._samplers: dict[float, FrameSampler] = {}
        self.image.put(np.zeros(self.model.geometry.shape, dtype=np.uint16))

    def trigger(self) -> DeviceStatus:
        """Draw the next frame at the current exposure time."""
        t_e = float(self.acquire_time.get())
        if t_e not in self._samplers:
            self._samplers[t_e] = self.model.sampler(t_e)
        frame = self._samplers[t_e].sample(1, self.next_frame)[0]
        self.next_frame += 1
        self.image.put(frame)
        status = DeviceStatus(self)
        status.set_finished()
        return status
