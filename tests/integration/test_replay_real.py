"""The real 2700-frame ESRF series replayed into Tiled agrees with ``analyze``.

ONE replay of the full series in the whole suite (it writes 2700 frames to
HDF5 and ~190 Tiled nodes): the beta table printed by ``replay``, the one
``results`` reads back from the derived run in Tiled and the one ``analyze``
computes offline without a server must agree record by record (same
estimator, same frames: integer histograms are exact; floats to 1e-9).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time

import numpy as np
import pytest

from xsvs_bluesky.cli import main
from xsvs_bluesky.legacy import read_frame

pytestmark = [pytest.mark.realdata, pytest.mark.slow, pytest.mark.tiled]

N_FRAMES = [360] * 7 + [180]


def run_cli(*args: object) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


def same_records(got: list[dict], want: list[dict], what: str) -> None:
    assert len(got) == len(want) == 8 * 9, what
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys(), what
        for key in a:
            if key in ("run_uid", "raw_uid"):
                continue
            x, y = a[key], b[key]
            if key == "flags":
                assert sorted(x) == sorted(y), (what, key, a, b)
            elif isinstance(x, float) or isinstance(y, float):
                assert (x is None and y is None) or math.isclose(
                    x, y, rel_tol=1e-9, abs_tol=1e-300
                ), (what, key, x, y)
            else:
                assert x == y, (what, key, x, y)


def test_replayed_series_gives_the_analyze_table(
    example_dir, catalogs, record_property
):
    ini = example_dir / "analysis" / "xsvs" / "xsvs_input.txt"
    where = [
        "--tiled-uri",
        catalogs.uri,
        "--api-key",
        catalogs.api_key,
        "--raw-catalog",
        catalogs.raw.item["id"],
        "--processed-catalog",
        catalogs.processed.item["id"],
    ]
    code, out, err, replay_s = run_cli(
        "replay",
        ini,
        *where,
        "--output-dir",
        catalogs.external_dir,
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 0, err
    replayed = json.loads(out)
    raw_uid, run_uid = replayed[0]["raw_uid"], replayed[0]["run_uid"]
    code, out, err, results_s = run_cli("results", run_uid, *where, "--format", "json")
    assert code == 0, err
    stored = json.loads(out)
    assert {r["run_uid"] for r in stored} == {run_uid}
    assert {r["raw_uid"] for r in stored} == {raw_uid}
    code, out, err, analyze_s = run_cli(
        "analyze", ini, "--format", "json", "--no-progress"
    )
    assert code == 0, err
    offline = json.loads(out)
    same_records(stored, offline, "results vs analyze")
    same_records(replayed, offline, "replay vs analyze")
    assert {r["estimator"] for r in stored} == {"mle-intensity"}  # the default

    run = catalogs.raw[raw_uid]
    start = run.metadata["start"]
    assert start["num_points"] == 2700 and start["sample_name"] == "SiD_1-1_40C_"
    spots = [h["spots"]["frames"] for h in start["xsvs_edf_headers"]]
    assert spots == [[30] * 12] * 7 + [[15] * 12]
    assert start["xsvs_acquisition_start"].startswith("2013-11-03T19:25:19")
    assert run.metadata["stop"]["num_events"] == {
        f"exposure_{i}": n for i, n in enumerate(N_FRAMES)
    }
    last = run["exposure_7"]["maxipix"]
    assert last.shape == (180, 1, 256, 256)
    frame = np.asarray(last[179, 0])
    edf = read_frame(example_dir / "data" / "xsvs-series" / "sid1-1_40C_2700.edf.gz")
    assert frame.dtype == np.uint16
    np.testing.assert_array_equal(frame, edf)  # via Tiled, bit for bit
    record_property("replay_seconds", round(replay_s, 1))
    record_property("analyze_seconds", round(analyze_s, 1))
    print(
        f"\nreal series: replay {replay_s:.1f} s, results {results_s:.1f} s, "
        f"analyze {analyze_s:.1f} s"
    )
