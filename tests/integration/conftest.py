"""Fixtures for tests against a real Tiled server and a real RunEngine.

- ``tiled_server`` (session): ONE embedded Tiled server (SimpleTiledServer
  over a temporary folder, ~5-30 s to start), as a
  :class:`~xsvs_bluesky.storage.Catalogs`: ``.server`` is the
  SimpleTiledServer, ``.uri`` and ``.api_key`` address it, ``.external_dir``
  is a folder it serves files from (detector HDF5).  Its own ``raw`` and
  ``processed`` catalogs are not used by tests.
- ``catalogs`` (function): a fresh pair of ``CatalogOfBlueskyRuns``
  containers on that server (``.raw``, ``.processed``, ``.client``), a
  fresh ``.external_dir`` for the test's detector files and a fresh
  ``.backup_dir`` for the writers' backups.
- ``RE`` (function): a fresh RunEngine (own event loop, closed afterwards)
  with a TiledWriter (``make_tiled_writer``) subscribed to ``catalogs.raw``.
  Do not subscribe a second writer to ``catalogs.raw``.
- ``postgres_cluster`` (session): a real PostgreSQL server (``initdb`` in a
  temporary folder, run as the ``postgres`` user when root; a private unix
  socket, trust authentication: no password anywhere), ~1-5 s.  Skipped with
  the reason when the server binaries are absent, FAILED instead when the
  environment variable ``CI`` is set (CI installs them: ``.ci/run``).
- ``postgres_db`` (function): a fresh database on it; its address
  (``postgresql://postgres@localhost/NAME?host=SOCKET&port=N``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import fresh_catalogs
from pg_cluster import PostgresCluster, missing_reason

from xsvs_bluesky.storage import Catalogs, make_tiled_writer, open_catalogs


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogs]:
    """The session's embedded Tiled server."""
    with open_catalogs(data_dir=tmp_path_factory.mktemp("xsvs-data")) as session:
        yield session


@pytest.fixture
def catalogs(tiled_server: Catalogs) -> Iterator[Catalogs]:
    """Fresh raw/processed catalogs on the session's server."""
    cats = fresh_catalogs(tiled_server)
    with cats:
        yield cats


@pytest.fixture
def RE(catalogs: Catalogs) -> Iterator[Any]:
    """A fresh RunEngine writing raw runs to ``catalogs.raw``."""
    from bluesky import RunEngine

    engine = RunEngine({})
    engine.subscribe(make_tiled_writer(catalogs.raw))
    yield engine
    if engine.state not in ("idle", "panicked"):
        engine.halt()
    loop = engine.loop
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join(timeout=10)
    loop.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the session (skipped if absent, unless in CI)."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so PostgreSQL tests must run, but: {reason}")
        pytest.skip(reason)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_db(postgres_cluster: PostgresCluster) -> str:
    """A fresh database on the session's PostgreSQL server: its address."""
    return postgres_cluster.createdb(f"xsvs_{uuid.uuid4().hex[:12]}")
