"""IPython settings of the xsvs profile: keep IPython's own files out of here.

The command history goes to ``$XSVS_DATA_DIR/ipython-history.sqlite`` (with
the rest of the session's state) instead of this folder, which is part of
the source tree.  ``XSVS_IPYTHON_HISTORY=0`` turns the history off.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821  (defined by IPython when it loads this file)

if os.environ.get("XSVS_IPYTHON_HISTORY", "1") == "0":
    c.HistoryManager.enabled = False
else:
    _state = Path(os.environ.get("XSVS_DATA_DIR", "xsvs-data")).resolve()
    _state.mkdir(parents=True, exist_ok=True)
    c.HistoryManager.hist_file = str(_state / "ipython-history.sqlite")
