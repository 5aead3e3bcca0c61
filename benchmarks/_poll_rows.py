"""Watch a scan's derived run in Tiled from another process (bench_live helper).

::

    python3 -m benchmarks._poll_rows URI CATALOG N_KNOWN [INTERVAL_S]

prints ``ready``, waits for a new run in the catalog, then polls its
``results`` table (layout 2: one row per exposure and partition) every
``INTERVAL_S`` (default 0.5 s) and prints ``<time.time()> <exposure_index>``
the first time each exposure's rows are readable, until the run has its
stop document.  About two requests per poll (the run's metadata, then the
table once it exists), as a live viewer of the results would make.  API
key: ``TILED_API_KEY``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def main() -> int:
    from tiled.client import from_uri

    uri, catalog, known = sys.argv[1], sys.argv[2], int(sys.argv[3])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    client = from_uri(uri, api_key=os.environ["TILED_API_KEY"])
    cat = client[catalog]
    print("ready", flush=True)
    seen: set[int] = set()
    while len(cat) <= known:
        time.sleep(min(interval, 0.1))
    run = cat.values().last()
    table: Any = None
    while True:
        stopped = bool(run.metadata.get("stop"))
        if table is None and "results" in run:
            try:
                table = run["results"].base["internal"]
            except KeyError:  # the stream is made, its table not yet
                pass
        if table is not None:
            rows = table.read()
            for index in sorted(set(rows["exposure_index"].tolist()) - seen):
                seen.add(int(index))
                print(f"{time.time():.6f} {index}", flush=True)
        if stopped:
            break
        time.sleep(interval)
        run = cat[run.item["id"]]  # fresh metadata and stream list
    print("done", flush=True)
    client.context.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
