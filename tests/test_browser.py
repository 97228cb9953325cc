"""The report's charts in a real browser (headless Chromium, no network): `dvc plots show` with
the committed offline template (.dvc/plots_offline.html) draws its Vega-Lite bar and line
charts, and reports/index.html draws every Vega-Lite chart with the same inlined bundle, with no
console error, and shows the cross-variant strip.

$ python -m pytest tests/test_browser.py -q        # needs `chromium` (apt-get install chromium)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, browse, chromium, subprocess_env
from PIL import Image

from gon.app.evaluate.report import write_report
from gon.app.evaluate.runs import evaluate_sweep, write_encoding_curve

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium() is None, reason="chromium is not installed")]
DVC = [str(Path(sys.executable).with_name("dvc"))]
VEGA_BLUE = (0x4C, 0x78, 0xA8)  # the first colour of Vega's default category scheme


def _pixels_near(png: Path, rgb: tuple[int, int, int], tol: int = 12) -> int:
    with Image.open(png) as img:
        a = np.asarray(img.convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(-1) <= tol).sum())


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


@pytest.fixture(scope="module")
def reports(tiny_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo with this checkout's dvc.yaml, params.yaml and .dvc/ settings, and the tiny
    sweep's report in reports/."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc",
                    ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    runs = evaluate_sweep(tiny_sweep, torch.device("cpu"), probe_images=200, rows=4)
    write_report(runs, repo / "reports")
    write_encoding_curve(runs, repo / "reports")  # as gon.evaluate does
    return repo


def test_dvc_plots_are_drawn_offline(reports: Path, tmp_path: Path) -> None:
    env = subprocess_env(tmp_path) | {"DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([*DVC, "plots", "show", "-o", str(tmp_path / "plots")], cwd=reports,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    page = tmp_path / "plots" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html  # nothing to fetch
    n_charts = html.count("vegaEmbed(")
    # variants.csv bars, val_curves.csv lines, a training curve each, the encoding curve
    assert n_charts == 2 + 2 + 1
    dom, png = browse(page, tmp_path / "plots.png")
    assert dom.count('class="marks"') == n_charts, "a Vega chart was not drawn"
    assert _pixels_near(png, VEGA_BLUE) > 500, "the charts are blank"


def _console(page: Path) -> list[str]:
    """The console messages headless Chromium logs while it runs the page's scripts."""
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", page.resolve().as_uri()], capture_output=True,
                         text=True, timeout=120, check=True)
    return [line for line in out.stderr.splitlines() if "CONSOLE" in line]


def test_index_html_charts_are_drawn(reports: Path, tmp_path: Path) -> None:
    page = reports / "reports" / "index.html"
    html = page.read_text()
    charts = list(json.loads(re.search(r"const SPECS = (.*?);\n", html).group(1)))
    assert {"forest", "by-budget", "bars", "curves"} <= set(charts) and len(charts) >= 6
    dom, png = browse(page, tmp_path / "index.png")
    for chart in charts:  # an SVG drawn by Vega inside each chart's div, no failure note
        start = dom.index(f'id="{chart}"')
        ends = [i for i in (dom.find('<div class="vega', start), dom.find("<script", start))
                if i > 0]
        div = dom[dom.rindex("<div", 0, start):min(ends)]
        tag = div[:div.index(">")]
        assert "vega-embed" in tag and "failed" not in tag, chart
        assert "<svg" in div and 'class="marks"' in div and "not drawn" not in div, chart
    errors = [m for m in _console(page) if "error" in m.lower() or "uncaught" in m.lower()]
    assert not errors, errors
    assert _pixels_near(png, VEGA_BLUE) > 300, "the charts are blank"
    assert _pixels_near(png, (0, 0, 0), tol=0) > 20  # text, ticks and interval rules
    strip = dom[dom.index('<table class="strip">'):]
    strip = strip[:strip.index("</table>")]
    assert 'class="original"' in strip and strip.count("<img") == 1 + 2  # originals, variants
