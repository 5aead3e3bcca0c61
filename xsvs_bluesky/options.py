"""Analysis options shared by every entry point (CLI, callback, replay, reanalyze).

Light on purpose: importing it loads no numba, bluesky or Tiled, so the CLI
can parse options with it.
"""

from __future__ import annotations

__all__ = ["FLAT_FIELD_CHOICES", "default_estimator"]

FLAT_FIELD_CHOICES: tuple[str, ...] = ("weights", "divide-round", "none")
"""``--flat-field`` choices: keep counts and weight the likelihood (default),
the legacy divide-and-round pre-processing, or ignore the flat field."""


def default_estimator(has_flat_field: bool, flat_field: str = "weights") -> str:
    """``"mle-weighted"`` with a flat field used as weights, else ``"mle"``."""
    return "mle-weighted" if has_flat_field and flat_field == "weights" else "mle"
