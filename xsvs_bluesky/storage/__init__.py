"""Storage side: Tiled catalogs of raw and derived runs and their writers.

- :func:`open_catalogs`: the raw and processed catalogs of a data folder
  (served here or by its ``xsvs-bluesky serve``) or of a named server;
- :func:`make_tiled_writer`: the ``(name, doc)`` writer of one catalog;
- :class:`SpoolingWriter`: that writer behind a local backup and, for a
  RunEngine, a bounded queue: the caller never waits for the server, and
  runs the server fails are kept in ``<data dir>/backup`` and written again
  whole by :func:`upload_backups` (``xsvs-bluesky upload``);
- :func:`serve` and friends: one long-lived server per data folder.

Heavy imports (tiled, bluesky_tiled_plugins) happen inside the functions.
"""

from xsvs_bluesky.storage._backup import BackedUpRun, backup_files
from xsvs_bluesky.storage._guard import (
    TEST_SIGNAL_ENV,
    WriterGuard,
)
from xsvs_bluesky.storage._health import why_unanswered
from xsvs_bluesky.storage._locks import (
    allocate_scan_id,
    hold_lock,
    last_scan_id,
    locks_folder,
)
from xsvs_bluesky.storage._postgres import PostgresCatalog
from xsvs_bluesky.storage._spool import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_QUEUE_MB,
    DEFAULT_RETRY_S,
    DEFAULT_TIMEOUT_S,
    RETRY_ENV,
    SpoolingWriter,
    default_retry_s,
)
from xsvs_bluesky.storage._upload import (
    UploadedRun,
    UploadReport,
    upload_backup,
    upload_backups,
)
from xsvs_bluesky.storage.server import (
    CATALOG_SPEC,
    DEFAULT_DATA_DIR,
    Catalogs,
    ensure_folder,
    ensure_run_catalog,
    open_catalogs,
    register_document_exporter,
)
from xsvs_bluesky.storage.service import (
    FolderBusyError,
    RunningServer,
    connection_help,
    find_server,
    serve,
    start_background_server,
    stop_server,
)
from xsvs_bluesky.storage.writer import (
    DEFAULT_BATCH_SIZE,
    LIVE_BATCH_SIZE,
    make_tiled_writer,
)

__all__ = [
    "CATALOG_SPEC",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DATA_DIR",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_QUEUE_MB",
    "DEFAULT_RETRY_S",
    "DEFAULT_TIMEOUT_S",
    "RETRY_ENV",
    "BackedUpRun",
    "SpoolingWriter",
    "UploadReport",
    "UploadedRun",
    "backup_files",
    "default_retry_s",
    "upload_backup",
    "upload_backups",
    "why_unanswered",
    "LIVE_BATCH_SIZE",
    "PostgresCatalog",
    "TEST_SIGNAL_ENV",
    "Catalogs",
    "FolderBusyError",
    "RunningServer",
    "WriterGuard",
    "allocate_scan_id",
    "connection_help",
    "ensure_folder",
    "ensure_run_catalog",
    "find_server",
    "hold_lock",
    "last_scan_id",
    "locks_folder",
    "make_tiled_writer",
    "open_catalogs",
    "register_document_exporter",
    "serve",
    "start_background_server",
    "stop_server",
]
