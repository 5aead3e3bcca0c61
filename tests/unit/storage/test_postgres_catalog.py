"""PostgreSQL catalog addresses and a data folder's choice of catalog."""

from __future__ import annotations

import pytest

from xsvs_bluesky.errors import OptionError, StorageError
from xsvs_bluesky.storage import PostgresCatalog
from xsvs_bluesky.storage._folder import DataFolder


def test_catalog_address_checks(tmp_path):
    with pytest.raises(OptionError, match="password"):
        PostgresCatalog.parse("postgresql://xsvs:hunter2@db/xsvs")
    try:
        PostgresCatalog.parse("postgresql://xsvs:hunter2@db/xsvs")
    except OptionError as err:
        assert "hunter2" not in str(err)
    with pytest.raises(OptionError, match="PostgreSQL"):
        PostgresCatalog.parse("sqlite:///catalog.db")
    with pytest.raises(OptionError, match="database"):
        PostgresCatalog.parse("postgresql://xsvs@db")
    user = PostgresCatalog.parse("postgresql://xsvs@db:5433/runs")
    assert user.catalog_uri == "postgresql+asyncpg://xsvs@db:5433/runs"
    # Tiled would send the password "None" for a user in the network location
    assert user.tables_uri == "postgresql://db:5433/runs?user=xsvs"
    unix = PostgresCatalog.parse("postgresql:///xsvs?host=/run/postgresql")
    assert unix.tables_uri == "postgresql://localhost/xsvs?host=/run/postgresql"
    assert unix.catalog_uri.startswith("postgresql+asyncpg://localhost/xsvs?")
    # a folder keeps one catalog: no second database, no switch from SQLite
    folder = DataFolder.at(tmp_path / "a")
    folder.use_postgres(PostgresCatalog.parse("postgresql://u@h/one"))
    folder.use_postgres(PostgresCatalog.parse("postgres://u@h/one"))  # the same
    with pytest.raises(StorageError, match="'one'"):
        folder.use_postgres(PostgresCatalog.parse("postgresql://u@h/two"))
    sqlite = DataFolder.at(tmp_path / "b")
    sqlite.tiled.mkdir(parents=True)
    sqlite.catalog_db.write_bytes(b"")
    with pytest.raises(StorageError, match="SQLite"):
        sqlite.use_postgres(PostgresCatalog.parse("postgresql://u@h/one"))
