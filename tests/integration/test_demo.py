"""``xsvs-bluesky demo``: a simulated live series through RunEngine and Tiled.

The embedded-server test starts its own SimpleTiledServer (the command's
default path); the named-server test uses the session's server through
``--tiled-uri``.  Both check the printed table against the simulation's
truth, the figure, and that the derived run can be found afterwards.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from xsvs_bluesky import cli
from xsvs_bluesky.core.geometry import Partitions
from xsvs_bluesky.demo import (
    DEMO_EXPOSURE_TIMES,
    QueuedCallback,
    demo_model,
    demo_partitions,
)

FRAMES = 120
# exp t_e q kbar beta +- err beta_true z [flags]
_ROW = re.compile(
    r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+\+-\s+(\S+)\s+(\S+)\s+(\S+)"
    r"(?:\s+[a-z][\w,-]*)?\s*$"
)


@pytest.fixture
def main():
    return cli.main


def parse_table(text: str) -> list[tuple[float, ...]]:
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            rows.append(tuple(float(v) for v in m.groups()))
    return rows


def check_output(out: str, seed: int) -> list[tuple[float, ...]]:
    assert "beta_true" in out and "z" in out.splitlines()[0]
    assert out.splitlines()[0].endswith("flags")
    rows = parse_table(out)
    model = demo_model(seed)
    spec = demo_partitions(model)
    n_q = len(spec["centers"])
    assert len(rows) == 8 * n_q
    exposures = sorted({int(r[0]) for r in rows})
    assert exposures == list(range(8))
    times = sorted({r[1] for r in rows})
    np.testing.assert_allclose(times, DEMO_EXPOSURE_TIMES, rtol=1e-2)
    parts = Partitions.from_centers(
        model.q_map, spec["centers"], spec["dq"], mask=model.mask
    )
    for _, t_e, q, _, beta, err, true, z in rows:
        # the printed truth is the model's ring truth sum(mu^2 beta)/sum(mu^2),
        # computed here from the model's maps; the z-score is consistent with it
        j = int(np.argmin(np.abs(np.asarray(parts.centers) - q)))
        idx = parts.pixels[j]
        mu = model.kbar_map(t_e).ravel()[idx]
        ring = np.sum(mu**2 * model.beta_map(t_e).ravel()[idx]) / np.sum(mu**2)
        assert true == pytest.approx(float(ring), abs=6e-5)
        assert err > 0 and math.isfinite(beta)
        rounding = (1e-4 + 5e-5 * abs(z)) / err + 0.01  # 4 printed decimals
        assert z == pytest.approx((beta - true) / err, abs=rounding)
        assert abs(z) < 5, (t_e, q, beta, true, err)
    assert np.mean([abs(r[-1]) < 2 for r in rows]) > 0.8
    return rows


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.tiled
@pytest.mark.slow
def test_demo_embedded_server(main, tmp_path, capsys):
    data = tmp_path / "xsvs-data"
    rc = main(["demo", "--data-dir", str(data), "--frames", str(FRAMES)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    check_output(captured.out, seed=0)
    # quiet: one progress bar, no live tables or refits without -v
    assert "acquired: 100%" in captured.err
    assert "[xsvs]" not in captured.err and "Tiled ready" not in captured.err
    assert re.search(
        r"next, try: xsvs-bluesky results --data-dir \S+ \w{8}", captured.err
    )
    assert f"figure: {(data / 'xsvs-demo.png').resolve()}" in captured.err
    assert f"data folder: {data.resolve()}" in captured.err.splitlines()[0]
    check_png(data / "xsvs-demo.png")
    # the frame files are compressed by default and their size is printed
    disk = re.search(
        r"detector files: ([\d.]+) MB on disk in 8 HDF5 files \(blosc-lz4; "
        r"(\d+) MB uncompressed\)",
        captured.err,
    )
    assert disk is not None, captured.err
    files = list((data / "external").rglob("*.h5"))
    assert len(files) == 8
    on_disk = sum(f.stat().st_size for f in files)
    assert float(disk.group(1)) == pytest.approx(on_disk / 1e6, abs=0.05)
    assert int(disk.group(2)) == round(8 * FRAMES * 256 * 256 * 2 / 1e6)
    assert on_disk < 8 * FRAMES * 256 * 256 * 2 / 4  # LZ4 + shuffle: < 1/4
    derived = re.search(r"derived run ([0-9a-f-]{36}) \(success\)", captured.err)
    assert derived is not None
    assert f"xsvs-bluesky results --data-dir {data.resolve()}" in captured.err
    assert "true 4e+07" in captured.out  # D from Gamma = D q^2 beside the truth
    # the runs stay in the folder for later commands
    rc = main(["results", "--data-dir", str(data), "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    records = json.loads(captured.out)
    assert {r["run_uid"] for r in records} == {derived.group(1)}
    assert len(records) == 8 * 6
    assert {r["n_frames"] for r in records} == {FRAMES}


@pytest.mark.tiled
@pytest.mark.slow
def test_demo_named_server_with_estimator_and_figure(
    main, catalogs, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TILED_API_KEY", catalogs.api_key)
    figure = tmp_path / "fig" / "beta.png"
    rc = main(
        [
            "demo",
            "--tiled-uri",
            catalogs.uri,
            "--external-dir",
            str(catalogs.external_dir),
            "--backup-dir",
            str(catalogs.backup_dir),
            "--frames",
            str(FRAMES),
            "--estimator",
            "moments",
            "--figure",
            str(figure),
            "--seed",
            "3",
            "-v",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # -v: the live table per exposure and the timings
    assert "[xsvs] exposure 7" in captured.err
    assert "derived run stored in Tiled" in captured.err
    # moments without a flat-field correction sees the 10 % efficiency
    # spread as extra contrast: only the low-count exposures stay close
    rows = parse_table(captured.out)
    assert len(rows) == 8 * 6
    assert "estimator moments" in captured.out
    check_png(figure)
    assert f"--tiled-uri {catalogs.uri}" in captured.err
    # the runs were stored: their backup files are gone
    assert list(catalogs.backup_dir.iterdir()) == []


def test_demo_partitions_are_whole_rings_of_the_model():
    model = demo_model(1)
    parts = demo_partitions(model)
    rings = model.partitions(0.0015, 0.0075, rings_per_partition=5)
    assert parts["centers"] == pytest.approx(list(rings.centers[::2]))
    built = Partitions.from_centers(
        model.q_map, parts["centers"], parts["dq"], mask=model.mask
    )
    for ring, part in zip(rings.pixels[::2], built.pixels, strict=True):
        np.testing.assert_array_equal(ring, part)  # so the ring truth is exact


def test_queued_callback_keeps_order_and_survives_errors():
    seen: list[str] = []

    def consumer(name, doc):
        if name == "bad":
            raise RuntimeError("boom")
        seen.append(name)

    q = QueuedCallback(consumer)
    for name in ["start", "bad", "descriptor", "stop"]:
        q(name, {})
    assert q.wait(timeout=10)
    assert seen == ["start", "descriptor", "stop"]
    q.close()
    with pytest.raises(RuntimeError, match="closed"):
        q("start", {})
