"""The docs: docs/results.md is what tools/results_page.py makes of the committed JSON, the
README is a front door (<= 250 lines), and every relative link of the README and docs/ resolves
to a file that exists (and, with an anchor, to one of its headings)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SCREEN = 60  # lines: a page longer than this needs a contents list


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page",
                                                  ROOT / "tools" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_is_generated_from_the_json() -> None:
    page = (ROOT / "docs" / "results.md").read_text()
    assert page == _results_page().render(ROOT), (
        "docs/results.md differs from the committed JSON: run `python tools/results_page.py`")


def test_results_page_draws_every_json_with_its_source(tmp_path: Path) -> None:
    """A claims file, a quality file and a JSON of a kind nobody registered all get a section
    naming their file and setup, with their numbers in it."""
    rp = _results_page()
    bench = tmp_path / "benchmarks" / "results"
    bench.mkdir(parents=True)
    claims = json.loads((ROOT / "reports" / "claims.json").read_text())
    (bench / "claims-x.json").write_text(json.dumps(claims))
    quality = {"kind": "quality", "command": "python benchmarks/quality.py --json q.json",
               "setup": {"dataset": "digits", "steps": 7},
               "rows": [{"config": "block=modulated", "role": "baseline", "params": 12,
                         "at_steps": {"psnr": [20.0, 22.0], "psnr_mean": 21.0,
                                      "ci95": [8.29, 33.7], "steps_mean": 7.0,
                                      "seconds_mean": 0.5}, "at_time": None,
                         "at_3_steps": {"psnr": [18.0, 19.0], "psnr_mean": 18.5,
                                        "ci95": [12.1, 24.9], "steps_mean": 3.0,
                                        "seconds_mean": 0.2}}]}
    (bench / "quality-x.json").write_text(json.dumps(quality))
    odd = {"title": "Odd bench", "setup": "one machine", "rows": [{"a": 1.23456, "b": "x|y"}],
           "nested": {"deep": {"value": 0.000123456}}, "list": [1, 2]}
    (bench / "zz-odd.json").write_text(json.dumps(odd))
    page = rp.render(tmp_path)
    for needle in ("## Claims (claims-x)", "Source: `benchmarks/results/claims-x.json`; digits",
                   claims["entries"][0]["id"], "Source: `benchmarks/results/quality-x.json`; "
                   "dataset: digits; steps: 7", "21 [8.29, 33.7]", "## Odd bench",
                   "| at 3 steps | 18.5 [12.1, 24.9] |",
                   "Source: `benchmarks/results/zz-odd.json`; one machine.", "| 1.235 | x\\|y |",
                   "| `nested.deep.value` | 0.0001235 |", "| `list` | 1, 2 |",
                   "- [Odd bench](#odd-bench)"):
        assert needle in page, needle
    assert "reports/" not in page  # no reports/*.json under tmp_path: no section for them


def test_pruning_figures_quoted_in_the_docs_are_the_json() -> None:
    """The pruning benchmark's headline (the "note" of benchmarks/results/pruning-*.json, written
    by benchmarks/pruning.py from its figures) is quoted verbatim where pruning is documented
    (docs/experiments.md) and in the README, never retyped; both pruners, median and hyperband,
    are measured."""
    notes = {p.stem: json.loads(p.read_text())["note"]
             for p in sorted((ROOT / "benchmarks" / "results").glob("pruning-*.json"))}
    assert {"pruning-median", "pruning-hyperband"} <= set(notes), \
        f"both pruners measured: {sorted(notes)}"
    notes = list(notes.values())
    for page in (ROOT / "docs" / "experiments.md", ROOT / "README.md"):
        text = " ".join(page.read_text().split())  # a quote may wrap over lines
        missing = [n for n in notes if n not in text]
        assert not missing, f"{page.name} does not quote the pruning JSON's note: {missing}"


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def _anchors(page: Path) -> set[str]:
    slug = _results_page().slug
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.replace("`", "")) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            bad.append(f"{target}: no such heading")
    assert not bad, f"{page.name}: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_long_pages_have_a_contents_list(page: Path) -> None:
    text = page.read_text()
    if len(text.splitlines()) > SCREEN:
        assert re.search(r"^## Contents$", text, flags=re.M), f"{page.name} has no contents"
