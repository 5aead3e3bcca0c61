"""``xsvs-bluesky analyze`` on small synthetic legacy series built in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fabio.edfimage import EdfImage

from xsvs_bluesky.cli import main
from xsvs_bluesky.core.geometry import Geometry, Partitions
from xsvs_bluesky.core.synthetic import speckle_frames

SHAPE = (32, 40)  # rows, columns: not square on purpose
CENX, CENY = 20.5, 16.5  # 1-based
GEOMETRY_KEYS = {
    "wavelength": "1.53",
    "cenx": str(CENX),
    "ceny": str(CENY),
    "pix": "0.055",
    "sddist": "2140",
    "q1": "0.0006",
    "q2": "0.0016",
    "qs": "0.0005",
    "dq": "0.00025",
}
PREFIX = "img_"
SUFFIX = ".edf.gz"


def write_edf(path: Path, data: np.ndarray) -> None:
    EdfImage(data=np.ascontiguousarray(data)).write(str(path))


def write_series(
    root: Path,
    exposures: list[tuple[str, float, np.ndarray]],
    *,
    main: dict[str, str] | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """Frames, a mask and an INI file; exposures = (section, t_e, frames)."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_edf(root / "mask.edf", np.zeros(SHAPE, np.int8) if mask is None else mask)
    keys = {"data dir": "data/", "mask": "mask.edf", **GEOMETRY_KEYS, **(main or {})}
    lines = ["[Main]", *(f"{k} = {v}" for k, v in keys.items() if v is not None)]
    number = 1
    for section, t_e, frames in exposures:
        first = number
        for frame in frames:
            write_edf(data / f"{PREFIX}{number:04d}{SUFFIX}", frame)
            number += 1
        lines += [
            "",
            f"[{section}]",
            f"data prefix = {PREFIX}",
            f"data suffix = {SUFFIX}",
            f"first data file = {first}",
            f"last data file = {number - 1}",
            f"exp time = {t_e}",
        ]
    ini = root / "input.txt"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def small_series(root: Path, **kwargs) -> Path:
    frames = speckle_frames(6, SHAPE, 1.0, 0.2, rng=1)
    return write_series(
        root, [("Exp_1", 1e-3, frames[:3]), ("Exp_2", 2e-3, frames[3:])], **kwargs
    )


def run_cli(capsys, *args: str | os.PathLike[str]) -> tuple[int, str, str]:
    code = main(["analyze", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- a good series -----------------------------------------------------------------
def test_known_beta_recovered_in_json(tmp_path, capsys):
    beta, kbar = 0.25, 0.8
    frames = speckle_frames(160, SHAPE, kbar, beta, rng=20240601)
    ini = write_series(
        tmp_path, [("Exp_1", 1e-3, frames[:80]), ("Exp_2", 2e-3, frames[80:])]
    )
    code, out, err = run_cli(capsys, ini, "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 2 * 3
    assert set(records[0]) == {
        "run_uid", "raw_uid", "exposure", "exposure_time", "partition", "q",
        "n_pixels", "n_frames", "kbar", "kbar_err", "beta", "beta_err", "M",
        "M_err", "estimator", "flags",
    }  # fmt: skip
    geometry = Geometry(1.53, 2140.0, 0.055, CENX, CENY, SHAPE)
    rings = Partitions.from_range(geometry.q_map(), 0.0006, 0.0016, 0.0005, 0.00025)
    for rec in records:
        assert rec["run_uid"] is None and rec["raw_uid"] is None
        assert rec["estimator"] == "mle-intensity"  # the default, no flat field
        assert rec["n_frames"] == 80
        assert rec["n_pixels"] == rings.n_pixels[rec["partition"]]
        assert rec["q"] == pytest.approx(rings.centers[rec["partition"]])
        assert rec["kbar"] == pytest.approx(kbar, rel=0.05)
        # truth within 3 standard errors, and the errors are not absurd
        assert abs(rec["beta"] - beta) < 3 * rec["beta_err"], rec
        assert 0.005 < rec["beta_err"] < 0.1
    assert [r["exposure_time"] for r in records] == [1e-3] * 3 + [2e-3] * 3


def test_table_and_csv_formats(tmp_path, capsys):
    ini = small_series(tmp_path)
    code, out, err = run_cli(capsys, ini)
    assert code == 0 and err == ""
    assert out.splitlines()[0].split()[:3] == ["exp", "t_e", "[s]"]
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 2 + 2 * 3
    code, out, err = run_cli(capsys, ini, "--format", "csv")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.startswith("run_uid,raw_uid,exposure,exposure_time,partition,q")
    assert len(rows) == 6


def test_exposures_in_numeric_order(tmp_path, capsys):
    frames = speckle_frames(11 * 2, SHAPE, 0.5, 0.1, rng=3)
    # sections written out of order; Exp_10 must come after Exp_9, not Exp_1
    order = [10, 2, 1, 11, 3, 9, 4, 8, 5, 7, 6]
    exposures = [
        (f"Exp_{i}", i * 1e-3, frames[2 * k : 2 * k + 2]) for k, i in enumerate(order)
    ]
    ini = write_series(tmp_path, exposures)
    code, out, err = run_cli(capsys, ini, "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    times = [r["exposure_time"] for r in records if r["partition"] == 0]
    assert times == pytest.approx([i * 1e-3 for i in range(1, 12)])
    assert [r["exposure"] for r in records if r["partition"] == 0] == list(range(11))


def test_frames_per_exposure_limits_frames(tmp_path, capsys):
    ini = small_series(tmp_path)
    code, out, _ = run_cli(
        capsys, ini, "--format", "json", "--frames-per-exposure", "2"
    )
    assert code == 0
    assert {r["n_frames"] for r in json.loads(out)} == {2}


def test_dynamics_json_records(tmp_path, capsys):
    gamma = 300.0  # 1/s
    times = [1e-3, 2e-3, 4e-3, 8e-3]
    exposures = []
    for k, t_e in enumerate(times):
        x = gamma * t_e
        beta = 0.3 * (np.exp(-2 * x) - 1 + 2 * x) / (2 * x**2)
        frames = speckle_frames(60, SHAPE, 2.0, beta, rng=100 + k)
        exposures.append((f"Exp_{k + 1}", t_e, frames))
    ini = write_series(tmp_path, exposures)
    code, out, err = run_cli(capsys, ini, "--format", "json", "--dynamics")
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 3
    for rec in records:
        assert list(rec)[:9] == [
            "partition", "q", "model", "gamma", "gamma_err", "beta0",
            "beta0_err", "D", "D_err",
        ]  # fmt: skip
        assert rec["model"] == "exponential"
        assert abs(rec["gamma"] - gamma) < 4 * rec["gamma_err"], rec
        assert abs(rec["beta0"] - 0.3) < 4 * rec["beta0_err"], rec
        # whether the numbers stand: per rate, then D (the same on every row)
        assert rec["determined"] is True
        assert rec["D_error_scale"] >= 1.0 and isinstance(rec["D_flags"], list)
        assert rec["D_status"] == records[0]["D_status"]
    # Gamma does not grow as q^2 here: D is not presented, the table says why
    assert {r["D_status"] for r in records} == {"non-diffusive"}
    code, out, err = run_cli(capsys, ini, "--dynamics")
    assert code == 0, err
    dyn = out[out.index("\npart ") + 1 :]
    assert dyn.splitlines()[0].split()[-1] == "flags"
    assert "non-diffusive: Gamma/q^2 is not constant within errors" in dyn
    assert "D = " not in dyn


# -- bad input: exit 2, one line on stderr naming file/section/key ---------------
def test_missing_ini(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert_user_error(*run_cli(capsys, missing), str(missing), "not found")


def test_missing_key(tmp_path, capsys):
    ini = small_series(tmp_path, main={"wavelength": None})
    assert_user_error(*run_cli(capsys, ini), str(ini), "[Main]", "wavelength")


def test_bad_number(tmp_path, capsys):
    ini = small_series(tmp_path, main={"sddist": "2.1e3mm"})
    assert_user_error(*run_cli(capsys, ini), str(ini), "[Main]", "sddist", "2.1e3mm")


def test_missing_section(tmp_path, capsys):
    ini = small_series(tmp_path)
    ini.write_text(ini.read_text().replace("[Main]", "[Settings]"))
    assert_user_error(*run_cli(capsys, ini), str(ini), "[Main]")


def test_missing_frame_files(tmp_path, capsys):
    ini = small_series(tmp_path)
    (tmp_path / "data" / f"{PREFIX}0005{SUFFIX}").unlink()
    assert_user_error(
        *run_cli(capsys, ini), str(ini), "[Exp_2]", f"{PREFIX}0005{SUFFIX}", "missing"
    )


def test_mask_of_wrong_shape(tmp_path, capsys):
    ini = small_series(tmp_path, mask=np.zeros(SHAPE[::-1], np.int8))
    assert_user_error(*run_cli(capsys, ini), "mask.edf", "shape", "[Main] mask")


def test_missing_mask_file(tmp_path, capsys):
    ini = small_series(tmp_path, main={"mask": "masks/absent.edf"})
    assert_user_error(*run_cli(capsys, ini), str(ini), "[Main] mask", "absent.edf")


def test_bad_estimator_option(tmp_path, capsys):
    ini = small_series(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(ini), "--estimator", "magic"])
    assert exc.value.code == 2
    assert "magic" in capsys.readouterr().err


def corrupt(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated gzip stream


def test_corrupt_gz_is_an_error(tmp_path, capsys):
    ini = small_series(tmp_path)
    corrupt(tmp_path / "data" / f"{PREFIX}0002{SUFFIX}")
    code, out, err = run_cli(capsys, ini)
    assert_user_error(
        code, out, err, str(ini), "[Exp_1]", f"{PREFIX}0002", "(--skip-bad-frames)"
    )
    assert "skip_bad" not in err  # the library's argument, not the CLI's option


def test_corrupt_gz_skipped_with_option(tmp_path, capsys):
    ini = small_series(tmp_path)
    corrupt(tmp_path / "data" / f"{PREFIX}0002{SUFFIX}")
    code, out, err = run_cli(capsys, ini, "--format", "json", "--skip-bad-frames")
    assert code == 0
    frames = {r["exposure"]: r["n_frames"] for r in json.loads(out)}
    assert frames == {0: 2, 1: 3}
    assert "skipped 1 bad frame file" in err and f"[Exp_1] {PREFIX}0002" in err


def test_corrupt_gz_subprocess_one_line(tmp_path):
    """End to end in a fresh interpreter: logging set up, still one line."""
    ini = small_series(tmp_path)
    corrupt(tmp_path / "data" / f"{PREFIX}0004{SUFFIX}")
    script = (
        "import sys\nfrom xsvs_bluesky.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "analyze", str(ini)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "[Exp_2]" in lines[0] and f"{PREFIX}0004{SUFFIX}" in lines[0]


def test_xpcs_mode_bins_frames_and_decodes_each_file_once(tmp_path, capsys):
    from xsvs_bluesky.offline import LegacyAnalysis

    beta = 0.3  # independent frames: binning n of them gives beta / n
    frames = speckle_frames(150, SHAPE, 0.5, beta, rng=7)
    ini = write_series(tmp_path, [("Exp_bins", 1e-3, frames)], main={"mode": "XPCS"})
    ini.write_text(ini.read_text() + "bin start = 0\nbin stop = 1\nbin step = 3\n")
    code, out, err = run_cli(capsys, ini, "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    first = [r for r in records if r["partition"] == 0]
    assert [r["n_frames"] for r in first] == [150, 50, 15]
    assert [r["exposure_time"] for r in first] == pytest.approx([1e-3, 3e-3, 1e-2])
    for rec in records:
        factor = round(rec["exposure_time"] / 1e-3)
        assert rec["kbar"] == pytest.approx(0.5 * factor, rel=0.05)
        assert abs(rec["beta"] - beta / factor) < 3.5 * rec["beta_err"], rec
    job = LegacyAnalysis(ini)
    assert job.reader.n_files == 150  # three exposures, one decode per file
    assert job.run().files_read == 150
    code, out, _ = run_cli(
        capsys, ini, "--format", "json", "--frames-per-exposure", "4"
    )
    assert [r["n_frames"] for r in json.loads(out) if r["partition"] == 0] == [4] * 3


def test_mask_polarity_warning_is_one_line(tmp_path, capsys):
    mask = np.ones(SHAPE, np.int8)
    mask[:, :8] = 0  # marks good pixels with 0 -> 80 % "bad"
    ini = small_series(tmp_path, mask=mask)
    code, out, err = run_cli(capsys, ini, "--format", "json")
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 2  # one line per warning, each once
    assert "warning" in lines[0] and "mask.edf" in lines[0] and "polarity" in lines[0]
    # the mask leaves the first partition empty: said, and flagged in the results
    assert "1 of 3 q partitions hold no pixel" in lines[1]
    records = json.loads(out)
    assert all("no-data" in r["flags"] for r in records if r["n_pixels"] == 0)


def test_missing_files_skipped_with_option(tmp_path, capsys):
    ini = small_series(tmp_path)
    (tmp_path / "data" / f"{PREFIX}0003{SUFFIX}").unlink()
    code, out, err = run_cli(capsys, ini, "--format", "json", "--skip-bad-frames")
    assert code == 0
    assert {r["exposure"]: r["n_frames"] for r in json.loads(out)} == {0: 2, 1: 3}
    assert f"[Exp_1] {PREFIX}0003{SUFFIX} (file not found)" in err


def test_analyze_runs_without_the_extras(tmp_path):
    """The light install: no tiled, bluesky, ophyd or matplotlib importable."""
    ini = small_series(tmp_path)
    script = (
        "import json, sys\n"
        "for name in ('tiled', 'bluesky', 'bluesky_tiled_plugins', 'ophyd',\n"
        "             'ophyd_async', 'matplotlib'):\n"
        "    sys.modules[name] = None  # import raises ModuleNotFoundError\n"
        "from xsvs_bluesky.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "analyze", str(ini), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert {r["exposure_time"] for r in records} == {1e-3, 2e-3}


# -- resource limits -----------------------------------------------------------------
@pytest.mark.parametrize(
    "q2, needle", [("1e6", "1e+09 q partitions"), ("100", "99999 q partitions")]
)
def test_hostile_q_range_is_one_line_before_allocating(tmp_path, capsys, q2, needle):
    import resource

    ini = small_series(tmp_path, main={"q2": q2, "qs": "0.001", "q1": "0.002"})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = run_cli(capsys, ini)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert_user_error(code, out, err, needle, "--max-partitions")
    assert grown_mb < 300  # imports; 22.8 GB for q2 = 1e6 without the limit


def test_max_partitions_option_raises_the_limit(tmp_path, capsys):
    ini = small_series(tmp_path, main={"qs": "0.0001", "dq": "0.00005"})  # 11
    code, out, err = run_cli(capsys, ini, "--max-partitions", "10")
    assert_user_error(code, out, err, "11 q partitions", "limit of 10")
    code, out, err = run_cli(capsys, ini, "--max-partitions", "11", "--format", "csv")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + 2 * 11


def test_gzip_bomb_frame_is_one_line_naming_the_file(tmp_path, capsys):
    import gzip

    ini = small_series(tmp_path)
    target = tmp_path / "data" / f"{PREFIX}0002{SUFFIX}"
    payload = gzip.decompress(target.read_bytes()) + bytes(4 * 2**20)
    target.write_bytes(gzip.compress(payload))  # 4 MiB inflated, a few kB stored
    code, out, err = run_cli(capsys, ini, "--max-frame-mb", "1")
    assert_user_error(code, out, err, str(target), "inflates to more than 1048576")
    assert "--max-frame-mb" in err
    code, out, err = run_cli(capsys, ini, "--max-frame-mb", "1", "--skip-bad-frames")
    assert code == 0, err
    assert "0002" in err  # named as skipped


# -- garbage refused: one line, never a silent table of NaN -------------------------
def test_a_beam_centre_of_1e300_is_one_line(tmp_path, capsys):
    ini = small_series(tmp_path, main={"cenx": "1e300"})
    code, out, err = run_cli(capsys, ini)
    assert_user_error(code, out, err, "center_x = 1e+300 px", "check the beam centre")


def test_an_all_ones_mask_is_one_line(tmp_path, capsys):
    ini = small_series(tmp_path, mask=np.ones(SHAPE, np.int8))
    code, out, err = run_cli(capsys, ini)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the mask-polarity warning
    assert "masks exclude every pixel" in last


def test_a_flat_field_of_1e30_on_used_pixels_is_one_line(tmp_path, capsys):
    flat = np.ones(SHAPE, np.float32)
    flat[16, 25:28] = 1e30  # on the partitions (q ~ 0.001 1/A)
    write_edf(tmp_path / "flat.edf", flat)
    ini = small_series(tmp_path, main={"flat field": "flat.edf"})
    code, out, err = run_cli(capsys, ini)
    assert_user_error(code, out, err, "flat field", "1e+30", "times their median")


def test_a_first_frame_of_the_wrong_shape_blames_the_frame(tmp_path, capsys):
    ini = small_series(tmp_path)
    first = tmp_path / "data" / f"{PREFIX}0001{SUFFIX}"
    write_edf(first, np.zeros((10, 12), np.uint16))  # EdfImage writes plain EDF
    code, out, err = run_cli(capsys, ini)
    assert_user_error(
        code, out, err, f"first frame file {first} has shape (10, 12)", "the mask"
    )
    assert "mask.edf: mask shape" not in err  # not the mask's fault
