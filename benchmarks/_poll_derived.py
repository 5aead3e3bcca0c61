"""Wait for a new, stopped derived run and read all of it with a plain client.

A helper process of ``bench_replay`` (a *separate* process, as a user's
viewer would be)::

    python3 -m benchmarks._poll_derived URI CATALOG N_KNOWN

prints ``ready`` once connected, then looks at the catalog's newest run
every 50 ms (one request each time: a poller of two or three requests
every 20 ms was a third of the server's load during a replay, on the
server it measures); when it is a new run with its stop document (the
writer writes it after every page), notes the wall-clock time
(``time.time()``), reads every stream (``run[stream].read()``) and prints
the two times: when the run was seen complete and when the whole run had
been read; then the number of its Tiled nodes and of rows of its
``results`` stream (counted after the clock stopped, to check that the
run read was whole).  ``N_KNOWN`` is the number of runs in the catalog
before.  The API key comes from ``TILED_API_KEY``.
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
    before = cat.values().last().item["id"] if known else None
    print("ready", flush=True)
    while True:
        run = cat.values().last() if known or len(cat) else None
        if run is not None and run.item["id"] != before:
            if run.metadata.get("stop"):
                seen_at = time.time()
                streams = list(run)
                for stream in streams:
                    run[stream].read()
                read_at = time.time()
                # counted after the clock stopped: not part of reading the run
                nodes = 1 + sum(1 + len(run[stream].base) for stream in streams)
                rows = len(run["results"].read()["beta"]) if "results" in run else 0
                print(f"{seen_at:.6f} {read_at:.6f} {nodes} {rows}", flush=True)
                client.context.close()
                return 0
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
