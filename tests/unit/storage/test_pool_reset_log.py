"""SQLAlchemy's report of a failed reset of a committed DuckDB link is dropped."""

from __future__ import annotations

import logging

import pytest

from xsvs_bluesky.storage._app import quiet_pool_resets


def _log_reset(error: Exception) -> None:
    log = logging.getLogger("sqlalchemy.pool.impl.StaticPool")
    try:
        raise error
    except type(error):
        log.error("Exception during reset or similar", exc_info=True)


def test_only_the_no_transaction_reset_is_dropped(caplog: pytest.LogCaptureFixture):
    quiet_pool_resets()
    quiet_pool_resets()  # once is enough; twice changes nothing
    with caplog.at_level(logging.ERROR):
        _log_reset(
            RuntimeError("INVALID_STATE: No active transaction, cannot rollback")
        )
        assert caplog.records == []
        _log_reset(RuntimeError("database is locked"))
        (record,) = caplog.records
        assert "reset" in record.getMessage()
        logging.getLogger("sqlalchemy.pool.impl.StaticPool").error("other")
        assert len(caplog.records) == 2
    assert len(logging.getLogger("sqlalchemy.pool.impl.StaticPool").filters) == 1
