"""Tiled on a real PostgreSQL server: catalog and tables in the database.

Each test gets a fresh database on the session's PostgreSQL server (fixture
``postgres_db``; skipped with the reason when the server binaries are absent,
failed when ``CI`` is set).  ``xsvs-bluesky serve --catalog`` runs as a
subprocess; the CLI commands run in this process or as subprocesses and find
it through the data folder.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import CLI, REPO, ServeProcess, start_serve
from legacy_series import BETA, write_series
from pg_cluster import store_metadata_runs
from test_replay import run_cli

from xsvs_bluesky.results import search_runs
from xsvs_bluesky.storage import PostgresCatalog, open_catalogs
from xsvs_bluesky.storage._folder import DataFolder

pytestmark = [pytest.mark.tiled, pytest.mark.postgres, pytest.mark.slow]


def serve(
    data_dir: Path, catalog: str, env: dict[str, str] | None = None
) -> ServeProcess:
    """Start ``serve --catalog`` and wait until it is ready."""
    return start_serve(data_dir, "--catalog", catalog, env=env)


@pytest.fixture
def stop_servers() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for served in started:
        served.close()


def public_tables(cluster, dbname: str) -> set[str]:
    rows = cluster.psql(
        dbname, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    return set(rows.split())


def test_serve_replay_results_reanalyze_with_a_password_kept_out_of_logs(
    postgres_cluster, tmp_path, stop_servers
):
    # a role that must give a password, read by libpq and asyncpg from a
    # password file: the recipe of docs/how-to/postgresql.md
    user = f"xsvs_{uuid.uuid4().hex[:8]}"
    secret = "Sx" + uuid.uuid4().hex
    postgres_cluster.add_password_user(user, secret)
    db = postgres_cluster.createdb(f"runs_{uuid.uuid4().hex[:8]}", owner=user)
    dbname = db.split("/")[3].split("?")[0]
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:{user}:{secret}\n")
    pgpass.chmod(0o600)
    data_dir = tmp_path / "xsvs-data"
    served = serve(data_dir, db, env={"PGPASSFILE": str(pgpass)})
    stop_servers.append(served)
    assert "PostgreSQL database" in "".join(served.out)

    ini = write_series(tmp_path / "series")
    code, out, err = run_cli(
        "replay", ini, "--data-dir", data_dir, "--format", "json", "--no-progress"
    )
    assert code == 0, err
    assert "using the Tiled server at" in err
    replayed = json.loads(out)
    assert {r["n_frames"] for r in replayed} == {40}

    code, out, err = run_cli("results", "--data-dir", data_dir, "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["beta"] for r in records] == [r["beta"] for r in replayed]
    beta = np.array([r["beta"] for r in records])
    beta_err = np.array([r["beta_err"] for r in records])
    assert np.all(np.abs(beta - BETA) < 4.5 * beta_err)

    raw_uid = records[0]["raw_uid"]
    code, out, err = run_cli(
        "reanalyze",
        raw_uid[:8],
        "--data-dir",
        data_dir,
        "--estimator",
        "moments",
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 0, err
    again = json.loads(out)
    assert {r["estimator"] for r in again} == {"moments"}
    assert {r["raw_uid"] for r in again} == {raw_uid}

    # catalog and event tables in PostgreSQL, frames in the folder's files
    folder = DataFolder.at(data_dir)
    assert not folder.catalog_db.exists()
    assert not (folder.tiled / "storage.duckdb").exists()
    tables = public_tables(postgres_cluster, dbname)
    assert {"nodes", "data_sources", "assets", "alembic_version"} <= tables
    assert len(tables) > 12  # plus the runs' event tables
    assert list((data_dir / "external").rglob("*.h5"))
    n_nodes = int(postgres_cluster.psql(dbname, "SELECT count(*) FROM nodes"))
    assert n_nodes > 20

    # the password is in no log, output or file of ours or Tiled's
    served.stop()
    assert served.proc.returncode == 0, served.log()
    texts = [served.log(), out, err]
    texts += [
        p.read_text(errors="replace")
        for p in [*data_dir.rglob("*.log"), *data_dir.glob("tiled-*")]
        if p.is_file()
    ]
    texts.append(folder.catalog_address_file.read_text())
    assert all(secret not in text for text in texts)
    assert "catalog" in served.log() or served.out  # something was logged


def test_two_writers_at_once_both_complete(
    postgres_cluster, postgres_db, tmp_path, stop_servers
):
    data_dir = tmp_path / "xsvs-data"
    served = serve(data_dir, postgres_db)
    stop_servers.append(served)
    inis = [
        write_series(tmp_path / f"series-{n}", n_frames=n) for n in (24, 32)
    ]  # different contents: two raw runs, not a repeat
    procs = [
        subprocess.Popen(
            [*CLI, "replay", str(ini), "--data-dir", str(data_dir), "--no-progress"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ini in inis
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    with open_catalogs(data_dir=data_dir) as cats:
        assert cats.server is None  # the running serve
        assert len(cats.raw) == 2
        runs = search_runs(cats.processed)
        assert len(runs) == 2
        originals = {run.metadata["start"]["original_run_uid"] for run in runs}
        assert originals == set(cats.raw)
        assert all(run.metadata["stop"]["exit_status"] == "success" for run in runs)
    served.stop()
    assert served.proc.returncode == 0, served.log()


def _start(i: int, t0: float) -> dict:
    return {
        "uid": str(uuid.UUID(int=i + 1)),
        "time": t0 + 60.0 * i,
        "plan_name": "xsvs_analysis",
        "plan_type": "analysis",
        "scan_id": i + 1,
        "original_run_uid": str(uuid.UUID(int=10_000 + i)),
        "sample_name": f"sample-{i % 10}",
        "xsvs": {"estimator": ("mle", "moments", "mle-weighted", "low-count")[i % 4]},
    }


def store_runs(catalog: PostgresCatalog, container: str, starts: list[dict]) -> None:
    """Store metadata-only runs in one batch (:func:`store_metadata_runs`)."""
    store_metadata_runs(catalog.catalog_uri, container, starts)


def test_search_among_1000_derived_runs(postgres_db, tmp_path):
    from tiled.queries import Comparison, Key

    t0 = 1.7e9
    n_runs = 1000
    with open_catalogs(data_dir=tmp_path / "xsvs-data", catalog=postgres_db) as cats:
        processed = cats.processed
        tic = time.perf_counter()
        store_runs(
            PostgresCatalog.parse(postgres_db),
            processed.item["id"],
            [_start(i, t0) for i in range(n_runs)],
        )
        stored_s = time.perf_counter() - tic
        assert len(processed) == n_runs

        since, until = t0 + 60.0 * 200, t0 + 60.0 * 600  # runs 200..599
        tic = time.perf_counter()
        found = search_runs(
            processed,
            sample_name="sample-3",
            since=since,
            until=until,
            estimator="moments",
        )
        search_s = time.perf_counter() - tic
        expected = {
            str(uuid.UUID(int=i + 1))
            for i in range(200, 600)
            if i % 10 == 3 and i % 4 == 1
        }
        assert {run.metadata["start"]["uid"] for run in found} == expected
        assert len(expected) == 20
        assert [run.metadata["start"]["time"] for run in found] == sorted(
            run.metadata["start"]["time"] for run in found
        )
        # each criterion alone (counted by the server)
        assert len(processed.search(Key("start.sample_name") == "sample-0")) == 100
        assert len(processed.search(Key("start.xsvs.estimator") == "low-count")) == 250
        in_range = processed.search(Comparison("ge", "start.time", since)).search(
            Comparison("lt", "start.time", until)
        )
        assert len(in_range) == 400
        print(f"stored {n_runs} runs in {stored_s:.1f} s, searched in {search_s:.2f} s")
        assert search_s < 30, (stored_s, search_s)
