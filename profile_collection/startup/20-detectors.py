"""20-detectors: the MAXIPIX (here the simulated ophyd-async one).

``maxipix`` writes 256x256 uint16 frames to HDF5 files in
``catalogs.external_dir`` and announces them with StreamResource/StreamDatum
documents.  At a beamline, replace it by the real ophyd-async detector
(e.g. an areaDetector-based MAXIPIX with an HDF writer) and give the real
flat field and masks in 60-xsvs.py.

XSVS_SIM_SEED   seed of the simulated speckle (default 0)
"""

import os

from xsvs_bluesky.demo import demo_model, sim_detector

maxipix_model = demo_model(int(os.environ.get("XSVS_SIM_SEED", "0")))
maxipix = sim_detector(
    catalogs.external_dir or XSVS_DATA_DIR / "external", maxipix_model
)

print(f"xsvs profile: detector {maxipix.name!r} (simulated MAXIPIX) ready")
