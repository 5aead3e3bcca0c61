"""Storage side: Tiled catalogs of raw and derived runs and their writer.

Heavy imports (tiled, bluesky_tiled_plugins) happen inside the functions.
"""

from xsvs_bluesky.storage._guard import (
    TEST_SIGNAL_ENV,
    WriterGuard,
)
from xsvs_bluesky.storage._locks import (
    allocate_scan_id,
    hold_lock,
    last_scan_id,
    locks_folder,
)
from xsvs_bluesky.storage._postgres import PostgresCatalog
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
