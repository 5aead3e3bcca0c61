"""60-xsvs: the live XSVS analysis, subscribed to the RunEngine.

``xsvs_callback`` (an XSVSCallback) analyses every raw run that carries
``xsvs_partitions`` in its start document (the ``xsvs`` plans of
80-plans.py record it, with the geometry).  ``xsvs_session`` runs it in a
worker thread, and the storage of its derived runs in ``processed`` in a
second one, so acquisition never waits for the analysis or for Tiled.
Results go to a live table on the terminal (``xsvs_table``) and, with
XSVS_LIVE_PLOT=1, a live figure (``xsvs_figure``).

XSVS_ESTIMATOR       contrast estimator (default: mle-weighted with the flat field)
XSVS_LIVE_PLOT       "1" for a live matplotlib figure (default off; in IPython
                     run %matplotlib qt first, or give XSVS_LIVE_PLOT_PATH)
XSVS_LIVE_PLOT_PATH  PNG file the live figure is saved to (headless sessions)
XSVS_LOCAL_ANALYSIS  "0": no analysis here (documents published by 55-publish.py
                     are analysed by ``xsvs-bluesky listen`` elsewhere);
                     ``xsvs_session`` and ``xsvs_callback`` are then None
"""

import atexit
import os

from xsvs_bluesky.demo import LiveSession
from xsvs_bluesky.live import LiveXSVSFigure, LiveXSVSTable

# At a beamline: the measured flat field and masks, e.g. from files,
#   flat_field=("flat.edf", array, sha256), masks=[("mask.edf", array)]
xsvs_flat_field = ("efficiency", maxipix_model.efficiency)
xsvs_masks = [("beamstop", maxipix_model.mask)]

xsvs_table = LiveXSVSTable()
xsvs_figure = None
if os.environ.get("XSVS_LIVE_PLOT", "0") == "1":
    xsvs_figure = LiveXSVSFigure(
        save_path=os.environ.get("XSVS_LIVE_PLOT_PATH") or None
    )
xsvs_results = []  # every final ExposureResult of this session


def _keep_final(result):
    if result.final:
        xsvs_results.append(result)


xsvs_session = xsvs_callback = None
if os.environ.get("XSVS_LOCAL_ANALYSIS", "1") != "0":
    # the raw runs' writer is already subscribed (05-tiled.py); the derived
    # runs' rows are written per exposure by the session's own writer thread
    # (see docs/explanation/performance.md)
    xsvs_session = LiveSession(
        catalogs,
        RE=RE,
        write_raw=False,
        live=[xsvs_table] + ([xsvs_figure] if xsvs_figure is not None else []),
        on_result=_keep_final,
        masks=xsvs_masks,
        flat_field=xsvs_flat_field,
        estimator=os.environ.get("XSVS_ESTIMATOR") or None,
        accept=lambda start: "xsvs_partitions" in start,
    )
    xsvs_callback = xsvs_session.callback
    atexit.register(xsvs_session.close)
    print("xsvs profile: live XSVS analysis subscribed (derived runs -> 'processed')")
else:
    print("xsvs profile: no analysis in this process (XSVS_LOCAL_ANALYSIS=0)")
