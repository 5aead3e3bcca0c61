"""A backup cut off between a stream's resource and its first datum uploads.

A process killed (SIGKILL) during a replay left a raw run whose last
stream had its StreamResource but no StreamDatum yet: the upload expected
that stream's frames node, refused the run ("stream 'exposure_2': no
'maxipix'") and kept the backup for ever.  A key counts once a datum
names it.
"""

from __future__ import annotations

import numpy as np
import pytest
from event_model import compose_run
from helpers import fresh_catalogs

from xsvs_bluesky.storage import backup_files, upload_backups
from xsvs_bluesky.storage._backup import Journal

pytestmark = pytest.mark.tiled


def test_a_run_cut_before_a_streams_first_datum_is_uploaded(tiled_server, tmp_path):
    import h5py

    cats = fresh_catalogs(tiled_server)
    with cats:
        path = cats.external_dir / "frames.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["/entry/data/data"] = np.arange(3 * 4 * 5, dtype="<u2").reshape(3, 4, 5)
        bundle = compose_run(metadata={"plan_name": "cut_scan"})
        key = {
            "source": "sim",
            "shape": [1, 4, 5],
            "dtype": "array",
            "dtype_numpy": "<u2",
            "external": "STREAM:",
        }
        journal = Journal(
            cats.backup_dir, bundle.start_doc["uid"], cats.raw.path_parts, cats.uri
        )
        journal.write("start", bundle.start_doc)
        for i, stream in enumerate(("first", "second")):
            desc = bundle.compose_descriptor(
                name=stream, data_keys={"det": key}, object_keys={"det": ["det"]}
            )
            journal.write("descriptor", desc.descriptor_doc)
            assert bundle.compose_stream_resource is not None
            res = bundle.compose_stream_resource(
                mimetype="application/x-hdf5",
                uri=f"file://localhost{path}",
                data_key="det",
                parameters={"dataset": "/entry/data/data", "chunk_shape": [1, 4, 5]},
            )
            journal.write("stream_resource", res.stream_resource_doc)
            if i == 0:  # the second stream is cut before its first datum
                datum = res.compose_stream_datum(
                    indices={"start": 0, "stop": 3},
                    seq_nums={"start": 1, "stop": 4},
                    descriptor=desc.descriptor_doc,
                )
                journal.write("stream_datum", datum)
        journal.close()  # the process ended here: no stop document

        report = upload_backups(cats.client, cats.backup_dir)
        assert report.failed == []
        assert [r.uid for r in report.uploaded] == [bundle.start_doc["uid"]]
        assert backup_files(cats.backup_dir) == []
        run = cats.raw[bundle.start_doc["uid"]]
        assert run.metadata["stop"]["exit_status"] == "fail"
        frames = run["first"]["det"].read()
        assert np.asarray(frames).reshape(3, 4, 5)[2, 3, 4] == 59
