"""Watch a scan's derived run in Tiled from another process (bench_live helper).

::

    python3 -m benchmarks._poll_rows URI CATALOG N_KNOWN

prints ``ready``, waits for a new run in the catalog, then polls its
``results`` table (layout 2: one row per exposure and partition) and prints
``<time.time()> <exposure_index>`` the first time each exposure's rows are
readable, until the run has its stop document.  API key: ``TILED_API_KEY``.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    from tiled.client import from_uri

    uri, catalog, known = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = from_uri(uri, api_key=os.environ["TILED_API_KEY"])
    cat = client[catalog]
    print("ready", flush=True)
    seen: set[int] = set()
    while len(cat) <= known:
        time.sleep(0.05)
    run = cat.values().last()
    while True:
        stopped = bool(run.metadata.get("stop"))
        table = None
        if "results" in run:
            try:
                table = run["results"].base["internal"].read()
            except KeyError:  # the stream is made, its table not yet
                pass
        if table is not None:
            for index in sorted(set(table["exposure_index"].tolist()) - seen):
                seen.add(int(index))
                print(f"{time.time():.6f} {index}", flush=True)
        if stopped:
            break
        time.sleep(0.1)
        run = cat[run.item["id"]]  # fresh metadata and stream list
    print("done", flush=True)
    client.context.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
