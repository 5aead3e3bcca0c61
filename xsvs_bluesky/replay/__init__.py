"""Replay a legacy pyxsvs series as the raw run an ophyd-async MAXIPIX would make.

:class:`LegacyReplay` checks everything first (INI file, frame files, masks,
flat field, q partitions) and hashes the inputs, before any document exists.
:meth:`LegacyReplay.run` then writes each exposure's frames once, compressed,
into one HDF5 file (one chunk per frame) and emits ONE raw run laid out as
:func:`xsvs_bluesky.sim.xsvs_series` lays out a fly scan: one stream per
exposure, frames announced by StreamResource/StreamDatum only (no Event
documents), the exposure time in the detector configuration.  The documents
go to the raw catalog's writer (nodes as ``bluesky_tiled_plugins``'
TiledWriter makes them, one registration per exposure; see
:func:`~xsvs_bluesky.storage.make_tiled_writer`) and to an
:class:`~xsvs_bluesky.callback.XSVSCallback` whose derived run goes to the
processed catalog's writer.  Catalogs opened with ``light=True,
light_raw=True`` (as ``xsvs-bluesky replay`` opens them) keep
``bluesky_tiled_plugins`` and dask out of the process.

The content hash (:attr:`LegacyReplay.content_hash`) is stored in the start
document as ``xsvs_replay["content_hash"]``; a series already replayed with
success is found by it (:func:`find_replays`) and not replayed again unless
``force=True``.  See ``docs/how-to/replay-legacy.md``.

Helpers live in private modules (``_replay_scan``, ``_replay_docs``,
``_replay_write``, ``_replay_catalog``, ``_replay_result``); their public
names are re-exported here.

Examples
--------
>>> from xsvs_bluesky.replay import LegacyReplay  # doctest: +SKIP
>>> from xsvs_bluesky.storage import open_catalogs  # doctest: +SKIP
>>> with open_catalogs() as cats:  # doctest: +SKIP
...     out = LegacyReplay("analysis/xsvs/xsvs_input.txt").run(cats)
"""

from __future__ import annotations

from xsvs_bluesky.replay._job import (
    COMPRESSIONS,
    DETECTOR,
    FLAT_FIELD_MODES,
    REPLAY_KEY,
    LegacyReplay,
    ReplayResult,
    find_replays,
    replay_legacy,
    stream_names,
)

__all__ = [
    "COMPRESSIONS",
    "DETECTOR",
    "FLAT_FIELD_MODES",
    "REPLAY_KEY",
    "LegacyReplay",
    "ReplayResult",
    "find_replays",
    "replay_legacy",
    "stream_names",
]
