"""Tiled on PostgreSQL against the embedded SQLite/DuckDB, in one run.

Usage::

    python3 -m benchmarks.bench_postgres            # 1000 runs, 3 repeats
    python3 -m benchmarks.bench_postgres --quick    # 200 runs, 1 repeat

Two data folders served in this process, one with the default catalog
(SQLite + DuckDB files), one with ``catalog=postgresql://...`` on a throwaway
PostgreSQL server (``tests/integration/pg_cluster.py``, the cluster of the
``postgres`` test fixtures: initdb in a temporary folder, a private unix
socket).  The series is ``tests/integration/legacy_series.py``'s; neither
module imports pytest.  Measured on each:

- **derived-run store**: the documents of one real derived run (a synthetic
  3-exposure legacy series replayed once) written again through
  ``TiledWriter`` into a fresh container, median of the repeats;
- **search**: ``search_runs(sample_name=..., since=..., until=...,
  estimator=...)`` among N metadata-only derived runs (stored in one batch
  through Tiled's catalog adapter), and a count of one criterion, median of
  5 repeats.

Prints absolute seconds and the PostgreSQL/SQLite ratio.  Without the
PostgreSQL server binaries, prints why and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from pg_cluster import (  # noqa: E402
    PostgresCluster,
    missing_reason,
    store_metadata_runs,
)


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


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 runs, 1 repeat")
    args = parser.parse_args(argv)
    reason = missing_reason()
    if reason is not None:
        print(f"bench_postgres: skipped: {reason}")
        return 0
    n_runs, repeats = (200, 1) if args.quick else (1000, 3)

    from legacy_series import write_series

    from xsvs_bluesky.reanalyze import fetch_documents
    from xsvs_bluesky.replay import LegacyReplay
    from xsvs_bluesky.results import search_runs
    from xsvs_bluesky.storage import (
        ensure_run_catalog,
        make_tiled_writer,
        open_catalogs,
    )
    from xsvs_bluesky.storage._folder import DataFolder

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, PostgresCluster() as cluster:
        ini = write_series(Path(tmp) / "series")
        db = cluster.createdb("bench")
        docs = None
        for name, catalog in (("sqlite", None), ("postgresql", db)):
            data_dir = Path(tmp) / name
            with open_catalogs(data_dir=data_dir, catalog=catalog) as cats:
                if docs is None:
                    result = LegacyReplay(ini).run(cats)
                    run = cats.processed[result.derived_uids[0]]
                    docs = fetch_documents(run)
                counter = iter(range(1_000_000))

                def store_derived(cats=cats, docs=docs, counter=counter) -> None:
                    box = ensure_run_catalog(cats.client, f"store-{next(counter)}")
                    writer = make_tiled_writer(box)
                    for doc_name, doc in docs:
                        writer(doc_name, doc)

                store_s = _median_s(store_derived, repeats)
                folder = DataFolder.at(data_dir)
                catalog_uri = (
                    f"sqlite+aiosqlite:///{folder.catalog_db}"
                    if catalog is None
                    else folder.postgres_catalog().catalog_uri
                )
                t0 = 1.7e9
                tic = time.perf_counter()
                store_metadata_runs(
                    catalog_uri,
                    cats.processed.item["id"],
                    [_start(i + 100, t0) for i in range(n_runs)],
                )
                bulk_s = time.perf_counter() - tic
                since, until = (
                    t0 + 60.0 * (100 + n_runs // 5),
                    t0 + 60.0 * (100 + 3 * n_runs // 5),
                )

                def search(cats=cats, since=since, until=until) -> None:
                    search_runs(
                        cats.processed,
                        sample_name="sample-3",
                        since=since,
                        until=until,
                        estimator="moments",
                    )

                def count(cats=cats) -> None:
                    from tiled.queries import Key

                    len(cats.processed.search(Key("start.sample_name") == "sample-3"))

                rows[name] = {
                    "derived run store": store_s,
                    f"bulk store of {n_runs} runs": bulk_s,
                    "search (3 criteria, list runs)": _median_s(search, 5),
                    "count (sample name)": _median_s(count, 5),
                }
    print(f"\nTiled 0.2.20: PostgreSQL vs embedded SQLite ({n_runs} runs)")
    print(f"{'operation':36s} {'SQLite s':>10s} {'PostgreSQL s':>13s} {'ratio':>7s}")
    for op in rows["sqlite"]:
        a, b = rows["sqlite"][op], rows["postgresql"][op]
        print(f"{op:36s} {a:10.3f} {b:13.3f} {b / a:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
