"""00-base: RunEngine, persistent metadata, optional BestEffortCallback.

Environment variables (all optional):

XSVS_DATA_DIR   folder of this profile's state: the embedded Tiled server's
                data (see 05-tiled.py) and the RunEngine metadata
                (``runengine-metadata.json``: scan_id, proposal, ...);
                default ./xsvs-data
XSVS_BEC        "1" subscribes bluesky's BestEffortCallback (tables and
                plots of ordinary step scans); default off
MPLBACKEND      e.g. "Agg" for a headless session
"""

import json
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

import bluesky.plan_stubs as bps  # noqa: F401  (for the user)
import bluesky.plans as bp  # noqa: F401  (for the user)
from bluesky import RunEngine

XSVS_DATA_DIR = Path(os.environ.get("XSVS_DATA_DIR", "xsvs-data")).resolve()
XSVS_DATA_DIR.mkdir(parents=True, exist_ok=True)
logging.getLogger("xsvs_bluesky").setLevel(logging.INFO)


class JSONMetadata(MutableMapping):
    """RunEngine metadata kept in a JSON file (scan_id survives restarts).

    bluesky's PersistentDict needs ``zict``; this is the dependency-free
    equivalent for plain JSON values.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._data = {}
        if self.path.is_file():
            self._data = json.loads(self.path.read_text(encoding="utf-8"))

    def _save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
        tmp.replace(self.path)

    def __getitem__(self, key):
        return self._data[key]

    def __setitem__(self, key, value):
        self._data[key] = value
        self._save()

    def __delitem__(self, key):
        del self._data[key]
        self._save()

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"JSONMetadata({self.path}, {self._data!r})"


RE = RunEngine({})
RE.md = JSONMetadata(XSVS_DATA_DIR / "runengine-metadata.json")

bec = None
if os.environ.get("XSVS_BEC", "0") == "1":
    from bluesky.callbacks.best_effort import BestEffortCallback

    bec = BestEffortCallback()
    RE.subscribe(bec)

print(f"xsvs profile: RunEngine ready, state in {XSVS_DATA_DIR}")
