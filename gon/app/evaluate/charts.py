"""The page's charts as Vega-Lite specs, drawn offline by the Vega bundle the repo ships inlined in
.dvc/plots_offline.html (tools/build_dvc_plots_template.py): the same bar and line templates as
`dvc plots show` (.dvc/plots/*.json), a forest plot of effects and their course over budgets.

Usage:
    charts = {"bars": bars(rows, "psnr_mean"), "forest": forest(eff.test["psnr"], "test psnr")}
    html = "".join(chart_div(k) for k in charts) + embed(charts)   # + bundle() in <head>
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from gon.app.factorial import Effects

ROOT = Path(__file__).resolve().parents[3]
BUNDLE_PAGE = ROOT / ".dvc" / "plots_offline.html"  # Vega, Vega-Lite and vega-embed, inlined
TEMPLATES = ROOT / ".dvc" / "plots"  # bars_ci.json, lines_ci.json: DVC's templates
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an id; nothing is fetched


@functools.cache
def bundle() -> str:
    """The inlined libraries' script text ("" when the repo's .dvc/ is not there)."""
    if not BUNDLE_PAGE.exists():
        return ""
    page = BUNDLE_PAGE.read_text(encoding="utf8")
    start = page.index('<script type="text/javascript">') + len('<script type="text/javascript">')
    return page[start : page.index("</script>", start)]


def _template(name: str, rows: list[dict], x: str, y: str, title: str, x_label: str,
              y_label: str) -> dict[str, Any]:
    """A .dvc/plots/<name>.json template filled as DVC fills it (one revision: workspace)."""
    text = (TEMPLATES / f"{name}.json").read_text()
    for key, value in (("X", x), ("Y", y), ("TITLE", title), ("X_LABEL", x_label),
                       ("Y_LABEL", y_label)):
        text = text.replace(f"<DVC_METRIC_{key}>", json.dumps(value)[1:-1])
    spec = json.loads(text)
    spec["data"] = {"values": [{**r, "rev": "workspace"} for r in rows]}
    return spec


def bars(rows: list[dict], metric: str) -> dict[str, Any]:
    """variants.csv's rows: the metric's mean per variant with its interval (bars_ci)."""
    return _template("bars_ci", rows, f"{metric}_mean", "variant", f"test {metric}", metric,
                     "variant")


def curves(rows: list[dict]) -> dict[str, Any]:
    """val_curves.csv's rows: validation PSNR by step, a line and band per variant."""
    return _template("lines_ci", rows, "step", "psnr_mean", "validation PSNR", "step",
                     "PSNR (dB)")


def _term(r: dict) -> str:
    return f"{r['factor']}: {r['level']} - {r['reference']}"


def forest(eff: Effects, label: str) -> dict[str, Any]:
    """Each main effect and interaction as a point with its 95 % interval, a rule at 0."""
    rows = [{"term": _term(r), "kind": "interaction" if ":" in r["factor"] else "main",
             **{k: r[k] for k in ("estimate", "ci95_low", "ci95_high", "p")}}
            for r in eff.main + eff.interactions]
    y = {"field": "term", "type": "nominal", "sort": None, "title": None,
         "axis": {"labelLimit": 360}}
    x = {"type": "quantitative", "title": f"effect on {label} (95% interval)"}
    return {"$schema": SCHEMA, "width": 460, "height": {"step": 22},
            "data": {"values": rows}, "layer": [
                {"mark": {"type": "rule", "strokeDash": [4, 3], "color": "#888"},
                 "encoding": {"x": {"datum": 0, "type": "quantitative"}}},
                {"mark": {"type": "rule", "strokeWidth": 2},
                 "transform": [{"filter": "isValid(datum.ci95_low)"}],
                 "encoding": {"y": y, "x": {**x, "field": "ci95_low"}, "x2": {"field":
                                                                             "ci95_high"},
                              "color": {"field": "kind", "type": "nominal", "title": None}}},
                {"mark": {"type": "point", "filled": True, "size": 60, "tooltip": True},
                 "encoding": {"y": y, "x": {**x, "field": "estimate"},
                              "color": {"field": "kind", "type": "nominal", "title": None}}}]}


def by_budget(rows: list[dict], label: str) -> dict[str, Any]:
    """Each effect on the validation metric at every budget (rows: step + an effect row), a
    line with its interval band: does it hold, grow or flip as training goes on?"""
    values = [{"step": r["step"], "term": _term(r), **{k: r[k] for k in (
        "estimate", "ci95_low", "ci95_high")}} for r in rows]
    colour = {"field": "term", "type": "nominal", "title": "effect",
              "legend": {"labelLimit": 360, "orient": "bottom", "columns": 2}}
    x = {"field": "step", "type": "quantitative", "title": "training step"}
    return {"$schema": SCHEMA, "width": 460, "height": 260, "data": {"values": values},
            "layer": [
                {"mark": {"type": "rule", "strokeDash": [4, 3], "color": "#888"},
                 "encoding": {"y": {"datum": 0, "type": "quantitative"}}},
                {"mark": {"type": "area", "opacity": 0.15},
                 "transform": [{"filter": "isValid(datum.ci95_low)"}],
                 "encoding": {"x": x, "y": {"field": "ci95_low", "type": "quantitative"},
                              "y2": {"field": "ci95_high"}, "color": colour}},
                {"mark": {"type": "line", "point": True, "tooltip": True},
                 "encoding": {"x": x, "color": colour, "y": {
                     "field": "estimate", "type": "quantitative",
                     "title": f"effect on {label} (95% band)"}}}]}


def loss(rows: list[dict]) -> dict[str, Any]:
    """A training curve: loss_outer by step."""
    return {"$schema": SCHEMA, "width": 240, "height": 120, "data": {"values": rows},
            "mark": {"type": "line", "point": len(rows) < 30},
            "encoding": {"x": {"field": "step", "type": "quantitative"},
                         "y": {"field": "loss_outer", "type": "quantitative",
                               "scale": {"zero": False}, "title": "train loss_outer"}}}


def chart_div(chart_id: str) -> str:
    """Where a chart is drawn (chart_id: a slug)."""
    return f'<div class="vega" id="{chart_id}"></div>'


def embed(specs: dict[str, dict]) -> str:
    """The script that draws every chart into its div as SVG; a chart that fails says so in its
    div (and on the console). The specs are JSON with <, > and & escaped, so that no value
    closes the script."""
    data = (json.dumps(specs).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    return ("<script>const SPECS = " + data + ";\n"
            "for (const [id, spec] of Object.entries(SPECS)) {\n"
            "  const el = document.getElementById(id);\n"
            "  if (typeof vegaEmbed === 'undefined') { el.textContent = '(chart not drawn: "
            "the Vega bundle is missing)'; continue; }\n"
            "  vegaEmbed(el, spec, {actions: false, renderer: 'svg'}).catch(e => {\n"
            "    console.error(e); el.className += ' failed'; el.textContent = String(e); });\n"
            "}</script>")
