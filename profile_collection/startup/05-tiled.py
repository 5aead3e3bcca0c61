"""05-tiled: the raw and processed catalogs, and the writer of raw runs.

With no server named, everything goes into ``$XSVS_DATA_DIR`` (the same
folder ``xsvs-bluesky demo`` and ``xsvs-bluesky results --data-dir`` use):
a running ``xsvs-bluesky serve`` of it is used, else this session starts
one as a process of its own, as ``demo`` does (stopped at exit), so the
server's request handling never competes with the RunEngine for this
process (see docs/explanation/performance.md);
``XSVS_BLUESKY_IN_PROCESS=1`` serves it in this session instead.  At a
facility, name its server:

XSVS_TILED_URI        e.g. https://tiled.facility.org/api (API key from
                      TILED_API_KEY; never write keys into these files)
XSVS_EXTERNAL_DIR     where the detector writes its HDF5 files: a folder the
                      server may read (its readable storage); default
                      $XSVS_DATA_DIR/external
XSVS_RAW_CATALOG      raw catalog key (default "raw")
XSVS_PROCESSED_CATALOG  derived-run catalog key (default "processed")
XSVS_BACKUP_DIR       local backup of the runs the server did not store
                      (default $XSVS_DATA_DIR/backup; `xsvs-bluesky upload
                      --backup-dir ...` writes them)

The raw runs are written by a ``SpoolingWriter``: the RunEngine never waits
for the server (a queue and a writer thread), and a run the server fails is
kept whole in the backup and written when the server answers again.

Names defined: ``catalogs`` (``.raw``, ``.processed``, ``.uri``), ``raw``,
``processed`` (``raw[-1]``, ``processed[scan_id]`` ...) and ``raw_writer``
(``raw_writer.backed_up``: runs waiting in the backup).
"""

import atexit
import os

from xsvs_bluesky.storage import SpoolingWriter, find_server, open_catalogs, stop_server

XSVS_TILED_URI = os.environ.get("XSVS_TILED_URI") or None
_own_server = (
    XSVS_TILED_URI is None
    and os.environ.get("XSVS_BLUESKY_IN_PROCESS", "0") in ("", "0")
    and find_server(XSVS_DATA_DIR) is None
)
_started = []  # the server process this session started: stopped last at exit


def _stop_started(started, stop=stop_server):
    # names bound here: IPython clears the session's before the exit functions
    for folder in started:
        stop(folder)


atexit.register(_stop_started, _started)
catalogs = open_catalogs(
    tiled_uri=XSVS_TILED_URI,
    data_dir=XSVS_DATA_DIR,
    background=_own_server,
    raw=os.environ.get("XSVS_RAW_CATALOG", "raw"),
    processed=os.environ.get("XSVS_PROCESSED_CATALOG", "processed"),
    external_dir=os.environ.get("XSVS_EXTERNAL_DIR")
    or (XSVS_DATA_DIR / "external" if XSVS_TILED_URI else None),
    backup_dir=os.environ.get("XSVS_BACKUP_DIR") or XSVS_DATA_DIR / "backup",
)
if _own_server and catalogs.server is None:
    _started.append(XSVS_DATA_DIR)
atexit.register(catalogs.close)
raw = catalogs.raw
processed = catalogs.processed

raw_writer = SpoolingWriter(raw, backup_dir=catalogs.backup_dir)
RE.subscribe(raw_writer)
atexit.register(raw_writer.close)  # runs before catalogs.close (last in, first out)

where = (
    f"data in {catalogs.data_dir}, served "
    + (
        "by this session"
        if catalogs.server
        else "by a server process this session started (stopped at exit)"
        if _started
        else "by another process"
    )
    if catalogs.data_dir
    else "named"
)
print(f"xsvs profile: Tiled at {catalogs.uri} ({where}); raw runs go to {raw.uri}")
