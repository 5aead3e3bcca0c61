"""Analyse a raw run stored in Tiled again, with other settings.

:func:`reanalyze` starts from the settings of the raw run's latest
successful derived run (:func:`latest_analysis`: estimator, flat-field
mode, the other options and the q partitions), applies the ones the caller
names, and says in one line per setting what differs from that run and
why, and when a better default estimator exists than the one it keeps.
It fetches the documents of the raw run from Tiled
(``run.documents()`` when the server exports ``application/json-seq``,
otherwise rebuilt from the run's metadata and data sources by
:func:`rebuild_documents`), feeds them to a NEW
:class:`~xsvs_bluesky.callback.XSVSCallback` configured with the new
estimator, partitions or flat-field use, and writes the new derived run to
the processed catalog.  Its ``original_run_uid`` is the same raw run, so
every analysis of one raw run is found with
``processed.search(Key("original_run_uid") == raw_uid)``.

Frames are read from the HDF5 files the run references when this host can
read them (fast), else through Tiled's HTTP API (``frames="tiled"``).
Masks and flat field come from the files named in the start document
(``xsvs_masks``, ``xsvs_flat_field``), checked against their recorded
SHA-256; one the latest analysis used that the raw run does not name (a
live run's arrays) is not reachable, and a line says so.

This module holds :func:`reanalyze`, its result and the raw-run look-up;
the document stream (:func:`fetch_documents`, :func:`rebuild_documents`)
lives in ``_documents``, the masks, flat field and partitions
(:func:`read_calibration`) in ``_inputs`` and the settings and their
differences in ``_settings``, re-exported here.

Examples
--------
>>> from xsvs_bluesky.reanalyze import reanalyze  # doctest: +SKIP
>>> out = reanalyze(cats, "5d80f3d5", estimator="moments")  # doctest: +SKIP
>>> out.derived_uid  # doctest: +SKIP
"""

from __future__ import annotations

from xsvs_bluesky.reanalyze._job import (
    FRAME_SOURCES,
    ReanalysisResult,
    fetch_documents,
    find_raw_run,
    latest_analysis,
    read_calibration,
    reanalyze,
    rebuild_documents,
)

__all__ = [
    "FRAME_SOURCES",
    "ReanalysisResult",
    "fetch_documents",
    "find_raw_run",
    "latest_analysis",
    "read_calibration",
    "reanalyze",
    "rebuild_documents",
]
