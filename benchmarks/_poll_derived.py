"""Wait for a new, stopped derived run and read all of it with a plain client.

A helper process of ``bench_replay`` (a *separate* process, as a user's
viewer would be)::

    python3 -m benchmarks._poll_derived URI CATALOG N_KNOWN

prints ``ready`` once connected, then, when the catalog holds more than
``N_KNOWN`` runs and the newest has its stop document, reads every stream
(``run[stream].read()``) and prints the wall-clock time (``time.time()``)
at which the whole run had been read, and the number of its Tiled nodes.
The API key comes from ``TILED_API_KEY``.
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
    while True:
        if len(cat) > known:
            run = cat.values().last()
            if run.metadata.get("stop"):
                streams = list(run)
                for stream in streams:
                    run[stream].read()
                read_at = time.time()
                # counted after the clock stopped: not part of reading the run
                nodes = 1 + sum(1 + len(run[stream].base) for stream in streams)
                print(f"{read_at:.6f} {nodes}", flush=True)
                client.context.close()
                return 0
        time.sleep(0.02)


if __name__ == "__main__":
    raise SystemExit(main())
