"""05-tiled: the raw and processed catalogs, and the writer of raw runs.

With no server named, everything goes into ``$XSVS_DATA_DIR`` (the same
folder ``xsvs-bluesky demo`` and ``xsvs-bluesky results --data-dir`` use):
a running ``xsvs-bluesky serve`` of it is used, else Tiled serves it in this
session (stopped at exit).  At a facility, name its server:

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

from xsvs_bluesky.storage import SpoolingWriter, open_catalogs

XSVS_TILED_URI = os.environ.get("XSVS_TILED_URI") or None
catalogs = open_catalogs(
    tiled_uri=XSVS_TILED_URI,
    data_dir=XSVS_DATA_DIR,
    raw=os.environ.get("XSVS_RAW_CATALOG", "raw"),
    processed=os.environ.get("XSVS_PROCESSED_CATALOG", "processed"),
    external_dir=os.environ.get("XSVS_EXTERNAL_DIR")
    or (XSVS_DATA_DIR / "external" if XSVS_TILED_URI else None),
    backup_dir=os.environ.get("XSVS_BACKUP_DIR") or XSVS_DATA_DIR / "backup",
)
atexit.register(catalogs.close)
raw = catalogs.raw
processed = catalogs.processed

raw_writer = SpoolingWriter(raw, backup_dir=catalogs.backup_dir)
RE.subscribe(raw_writer)
atexit.register(raw_writer.close)  # runs before catalogs.close (last in, first out)

where = (
    f"data in {catalogs.data_dir}, served "
    + ("by this session" if catalogs.server else "by another process")
    if catalogs.data_dir
    else "named"
)
print(f"xsvs profile: Tiled at {catalogs.uri} ({where}); raw runs go to {raw.uri}")
