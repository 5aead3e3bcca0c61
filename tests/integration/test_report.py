"""HTML report of a derived run stored by a real Tiled server."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from helpers import processed_options

from xsvs_bluesky import cli
from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.report import write_report
from xsvs_bluesky.results import RunResults
from xsvs_bluesky.sim import SimMaxipix, SpeckleModel, directory_path_provider
from xsvs_bluesky.sim import xsvs_series as series_plan
from xsvs_bluesky.storage import make_tiled_writer

pytestmark = pytest.mark.tiled

GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (64, 64))
TIMES = [1e-3, 4e-3, 1.6e-2]
PNG = b"\x89PNG\r\n\x1a\n"


def images(text: str) -> list[bytes]:
    """Decoded PNG payloads of every <img> of the page (all must be inline)."""
    sources = re.findall(r'<img alt="[^"]*" src="([^"]+)">', text)
    assert len(sources) == text.count("<img")
    prefix = "data:image/png;base64,"
    assert all(s.startswith(prefix) for s in sources), sources
    return [base64.b64decode(s[len(prefix) :]) for s in sources]


def test_report_is_one_self_contained_html_file(
    RE, catalogs, tmp_path, capsys, monkeypatch
):
    from ophyd_async.core import init_devices

    model = SpeckleModel(geometry=GEO, efficiency_sigma=0.0, seed=8)
    with init_devices():
        det = SimMaxipix(
            directory_path_provider(catalogs.external_dir), model, name="mpx"
        )
    docs: list[tuple[str, dict[str, Any]]] = []
    cb = XSVSCallback(
        partitions=model.partitions(0.0015, 0.0030, rings_per_partition=5),
        emit=[make_tiled_writer(catalogs.processed), lambda n, d: docs.append((n, d))],
    )
    token = RE.subscribe(cb)
    try:
        RE(series_plan(det, TIMES, 50, sample_name="silica"))
    finally:
        RE.unsubscribe(token)
    res = RunResults.from_documents(docs)
    n_q = res.q.size
    assert n_q >= 2 and res.dynamics is not None

    code = cli.main(
        ["report", res.uid[:8], "--out", str(tmp_path), *processed_options(catalogs)]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    path = tmp_path / f"xsvs-report-{res.uid[:8]}.html"
    assert out.strip() == str(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # summary, P(k) per q, image, I(q), trace, fit parameters, beta + fits, Gamma(q^2)
    pngs = images(text)
    assert len(pngs) == 8
    assert all(p.startswith(PNG) and len(p) > 5000 for p in pngs)
    assert "http://" not in text and "https://" not in text
    assert res.uid in text and res.raw_uid in text and "silica" in text
    assert "<h2>Dynamics</h2>" in text
    rows = re.findall(r"<tr><td>(\d+)</td><td>", text.split("<h2>Results</h2>")[1])
    assert len(rows) == len(TIMES) * n_q
    beta = res.table["beta"].iloc[-1]
    err = res.table["beta_err"].iloc[-1]
    assert f"{beta:.4f} +- {err:.4f}" in text

    # without a dynamics stream: no dynamics section, two figures fewer
    no_dyn = RunResults.from_documents(
        [(n, d) for n, d in docs if not (n == "descriptor" and d["name"] == "dynamics")]
    )
    assert no_dyn.dynamics is None
    other = write_report(no_dyn, tmp_path / "plain.html")
    plain = other.read_text(encoding="utf-8")
    assert len(images(plain)) == 6 and "<h2>Dynamics</h2>" not in plain
