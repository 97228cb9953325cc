"""The offline comparison page (reports/index.html), written once: a partial sweep's banner, the
variants table with mean +- interval and the significance marks, a bar chart with error bars, the
validation curves, the ranking at every budget, the claims table and each variant's grids. Inline
SVG only: no scripts, no network, relative image links.

Usage:
    Path("reports/index.html").write_text(render_html(compare(runs), claims, partial))
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from typing import Any

from gon.app.claims.table import BATCH_TOL
from gon.app.evaluate.compare import METRICS, Comparison, reversals
from gon.app.metrics import LIKELIHOOD
from gon.app.stats import ALPHA, LEVEL

GRIDS = ("recon", "samples", "slerp", "superres")
CAPTIONS = {"recon": "test images | reconstructions",
            "samples": "samples (variational: the prior N(0, I); else a Gaussian fit)",
            "slerp": "slerp between test images", "superres": "original, native, 4x render"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94")  # tab20's darker and lighter halves
RULE = (f"Intervals: two-sided {LEVEL:.0%} Student t over the seeds (mean &plusmn; "
        "t<sub>0.975,n-1</sub>&middot;sd/&radic;n). Ranking: by mean; each variant is compared "
        "with the best by a two-sided Welch t-test, the p-values adjusted by Holm's method over "
        f"those comparisons; adjusted p &lt; {ALPHA}: significantly worse (its own place), "
        "otherwise it shares first place (=1). With one seed nothing is tested.")


def slug(name: str) -> str:
    """A variant's name as an HTML id, a link and a file name: letters, digits, `.`, `_`, `-`
    only; a name that needed changing gets a hash of itself, so two names never share a slug."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".") or "_"
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _e(x: object) -> str:
    """Any value as HTML text or a quoted attribute's value."""
    return html.escape(str(x), quote=True)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def _cell(iv: dict | None) -> str:
    """mean +- half-width of the interval (or the mean alone with n = 1)."""
    if not iv or iv["mean"] is None:
        return ""
    if iv["ci95_low"] is None:
        return _fmt(iv["mean"])
    half = (iv["ci95_high"] - iv["ci95_low"]) / 2
    return f'{_fmt(iv["mean"])} <small>&plusmn; {_fmt(half, 2)}</small>'


def _mark(p: float | None, significant: bool) -> str:
    if p is None:
        return '<td title="not tested">?</td>'
    return (f'<td class="{"sig" if significant else "tie"}">{">" if significant else "="} '
            f"<small>p={p:.2g}</small></td>")


def _place(rank) -> str:
    return f"={rank.place}" if rank.tied else str(rank.place)


def svg_bars(comp: Comparison, width: int = 560) -> str:
    """Horizontal bars of the objective's mean per variant, with interval whiskers."""
    m, rows = comp.metric, [(s.name, s.stats.get(comp.metric)) for s in comp.variants]
    rows = [(n, iv) for n, iv in rows if iv and iv["mean"] is not None]
    if not rows:
        return ""
    hi = max(iv["ci95_high"] if iv["ci95_high"] is not None else iv["mean"] for _, iv in rows)
    lo = min(0.0, *(iv["ci95_low"] if iv["ci95_low"] is not None else iv["mean"]
                    for _, iv in rows))
    left, bar, height = 190, 16, 22 * len(rows) + 30
    def x(v: float) -> float:
        return left + (v - lo) / ((hi - lo) or 1) * (width - left - 20)

    parts = [f'<svg width="{width}" height="{height}" role="img" class="chart">'
             f"<title>test {_e(m)} by variant, mean and {LEVEL:.0%} interval</title>"]
    for i, (name, iv) in enumerate(rows):
        y = 10 + 22 * i
        parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">'
                     f"{html.escape(name)}</text><rect x=\"{x(0 if lo == 0 else lo):.1f}\" "
                     f'y="{y}" width="{x(iv["mean"]) - x(0 if lo == 0 else lo):.1f}" '
                     f'height="{bar}" fill="{PALETTE[i % len(PALETTE)]}"/>')
        if iv["ci95_low"] is not None:
            a, b, c = x(iv["ci95_low"]), x(iv["ci95_high"]), y + bar / 2
            parts.append(f'<path d="M{a:.1f},{c}H{b:.1f}M{a:.1f},{c - 5}V{c + 5}M{b:.1f},'
                         f'{c - 5}V{c + 5}" stroke="#000" stroke-width="1.5"/>')
    parts.append(f'<text x="{left}" y="{height - 4}" font-size="10">{_fmt(lo)}</text>'
                 f'<text x="{width - 20}" y="{height - 4}" font-size="10" text-anchor="end">'
                 f"{_fmt(hi)} dB</text></svg>" if m == "psnr" else "</svg>")
    return "".join(parts)


def svg_curves(comp: Comparison, width: int = 560, height: int = 300) -> str:
    """The validation PSNR curves (mean over seeds) of every variant, with a legend."""
    if not comp.curves:
        return ""
    steps = [r["step"] for r in comp.curves]
    ys = [r["psnr_mean"] for r in comp.curves]
    x0, x1, y0, y1 = min(steps), max(steps), min(ys), max(ys)
    left, top, plot_w, plot_h = 40, 10, width - 230, height - 40
    def pt(s: float, v: float) -> str:
        return (f"{left + (s - x0) / ((x1 - x0) or 1) * plot_w:.1f},"
                f"{top + plot_h - (v - y0) / ((y1 - y0) or 1) * plot_h:.1f}")

    parts = [f'<svg width="{width}" height="{height}" role="img" class="chart"><title>'
             "validation PSNR by training step, mean over seeds</title>"
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
             'stroke="#ccc"/>']
    for i, s in enumerate(comp.variants):
        rows = [r for r in comp.curves if r["variant"] == s.name]
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(pt(r["step"], r["psnr_mean"]) for r in rows)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{points}"/><text x="{left + plot_w + 8}" y="{top + 10 + 15 * i}" '
                     f'font-size="10" fill="{colour}">{html.escape(s.name)}</text>')
    parts.append(f'<text x="2" y="{top + 8}" font-size="10">{_fmt(y1)}</text>'
                 f'<text x="2" y="{top + plot_h}" font-size="10">{_fmt(y0)}</text>'
                 f'<text x="{left}" y="{height - 8}" font-size="10">step {x0}</text>'
                 f'<text x="{left + plot_w}" y="{height - 8}" font-size="10" '
                 f'text-anchor="end">{x1}</text></svg>')
    return "".join(parts)


def _svg_loss(curve: list[dict[str, float]], width: int = 260, height: int = 120) -> str:
    """An inline SVG line of the training loss_outer against step."""
    if len(curve) < 2:
        return ""
    xs, ys = [r["step"] for r in curve], [r["loss_outer"] for r in curve]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pts = " ".join(f"{5 + (x - x0) / ((x1 - x0) or 1) * (width - 10):.1f},"
                   f"{height - 15 - (y - y0) / ((y1 - y0) or 1) * (height - 25):.1f}"
                   for x, y in zip(xs, ys, strict=True))
    return (f'<svg width="{width}" height="{height}" role="img"><title>training loss_outer'
            f'</title><polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
            f'<text x="5" y="10" font-size="10">{y1:.4g}</text><text x="5" y="{height - 2}" '
            f'font-size="10">{y0:.4g} (step {x0}..{x1})</text></svg>')


def budgets_table(comp: Comparison) -> str:
    """Places at every budget (rows: the final order) and where the ranking changes."""
    if not comp.budgets:
        return "<p>No learning curves were recorded.</p>"
    head = "".join(f"<th>{b.step}</th>" for b in comp.budgets)
    places = [{r.name: r for r in b.ranked} for b in comp.budgets]
    rows = "".join(f"<tr><td>{html.escape(s.name)}</td>" + "".join(
        f"<td>{_place(p[s.name])}</td>" for p in places) + "</tr>" for s in comp.variants)
    rho = "".join(f"<td>{_fmt(b.rho, 2)}</td>" for b in comp.budgets)
    final = comp.budgets[-1]
    notes = []
    for b in comp.budgets[:-1]:
        flips = reversals(b, final)
        if flips:
            shown = ", ".join(f"{_e(a)} &gt; {_e(c)}" for a, c in flips[:4])
            notes.append(f"<li>step {b.step}: {len(flips)} pair(s) in the opposite order to step "
                         f"{final.step}, e.g. {shown}; leader(s) {_e(', '.join(b.leaders))}</li>")
    change = ("<ul>" + "".join(notes) + "</ul>") if notes else (
        "<p>No pair of variants is in significantly opposite order at any budget.</p>")
    return (f"<table><tr><th>variant</th>{head}</tr>{rows}<tr><td>Spearman &rho; with step "
            f"{final.step}</td>{rho}</tr></table><p>Where the ranking changes with the budget "
            "(a pair counts when a significant gap separates it at both budgets):</p>" + change)


def likelihood_table(comp: Comparison) -> str:
    """The variational models' negative ELBO and IW bound over seeds, with the pixels."""
    shown = [s for s in comp.variants if "nelbo" in s.stats]
    if not shown:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("variant", "pixels", "n", *LIKELIHOOD))
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(pixels(s.runs[0].config))}</td>"
        f"<td>{len(s.runs)}</td>" + "".join(f"<td>{_cell(s.stats.get(k))}</td>"
                                            for k in LIKELIHOOD) + "</tr>" for s in shown)
    return ("<h2>Likelihood</h2><p>Test split, nats per image (bpd: bits per dimension); "
            "nelbo = nelbo_recon + nelbo_kl is the negative ELBO, iw_nelbo the importance-"
            "weighted bound (tighter). With binary pixels (dataset.binarize=fixed or dynamic) "
            "both bound -log p(x) from above; on grey levels (pixels: grey) the Bernoulli "
            "likelihood is the BCE, not a distribution over grey images, so they bound "
            f"nothing.</p><table><tr>{head}</tr>{rows}</table>")


def pixels(config: dict) -> str:
    """What the likelihood is over: "grey" levels (BCE, not a bound) or the binarisation."""
    return str((config.get("dataset") or {}).get("binarize") or "grey")


def partial_banner(fields: dict[str, Any] | None) -> str:
    """A partial sweep's warning atop the page (gon.app.sweeps.status.report_fields; "" for a
    complete one)."""
    if not fields:
        return ""
    t = fields["trials"]
    items = [f"<li>trial {r['trial']} failed ({html.escape(str(r['params']))}): "
             f"{html.escape(r['error'])}</li>" for r in fields["failed_trials"]]
    items += [f"<li>trial {r['trial']}: run dir missing ({html.escape(r['dir'])})</li>"
              for r in fields["missing_trials"]]
    items += [f"<li>trial {r['trial']}: not finished</li>" for r in fields["unfinished_trials"]]
    if t["not_started"]:
        items.append(f"<li>{t['not_started']} trial(s) not started</li>")
    return (f'<div class="partial"><h2>Partial report</h2><p>Only {t["finished"]} of '
            f"{t['budget']} trials of the sweep finished; this comparison is incomplete.</p>"
            f"<ul>{''.join(items)}</ul></div>")


def _claim_fmt(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) and math.isfinite(x) else str(x)


def claims_section(claims: dict[str, Any] | None) -> str:
    """The claims table (reports/claims.json, gon.app.claims.table) as a section ("" without)."""
    if not claims:
        return ""
    s = claims["setup"]
    head = "".join(f"<th>{h}</th>" for h in ("claim", "budget", "contender vs baseline",
                                              "params", "measure", "mean [95% CI]", "per seed",
                                              "verdict", "anchor"))
    rows = []
    for e in claims["entries"]:
        if e["ci95"] is None:  # batch_dependence: the largest, against the baseline's smallest
            summary = (f"max {_claim_fmt(e['mean'])} (baseline min "
                       f"{_claim_fmt(min(e['baseline_values']))}, tolerance {BATCH_TOL:g})")
        else:
            summary = (f"{_claim_fmt(e['mean'])} [{_claim_fmt(e['ci95'][0])}, "
                       f"{_claim_fmt(e['ci95'][1])}]")
        cells = [f"{e['claim']}: {e['statement']}", e["budget"],
                 f"{e['contender']} vs {e['baseline']}",
                 f"{e['params']['contender']} / {e['params']['baseline']}", e["measure"],
                 summary, ", ".join(_claim_fmt(v) for v in e["values"]), e["verdict"],
                 e["anchor"]]
        rows.append(f'<tr class="{html.escape(str(e["verdict"]))}">'
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (f'<h2 id="claims">Claims</h2><p>{html.escape(str(s["dataset"]))}, seeds '
            f'{html.escape(str(s["seeds"]))}, {html.escape(str(s["steps"]))} steps; equal time: '
            f'{s["time_budget_s"]:.2f} s of training each (the GON\'s '
            f'{html.escape(str(s["steps"]))} steps). {html.escape(str(s["rule"]))}</p>'
            f"<table><tr>{head}</tr>{''.join(rows)}</table>")


def render_html(comp: Comparison, claims: dict[str, Any] | None = None,
                partial: dict[str, Any] | None = None) -> str:
    """The whole page; `claims`: reports/claims.json's content, `partial`: a partial sweep's
    fields (gon.app.sweeps.status.report_fields), marked in the title and a banner."""
    m, higher = comp.metric, comp.higher
    head = "".join(f"<th>{h}</th>" for h in ("place", "variant", "n", *METRICS, "vs best",
                                              "steps", "params"))
    rows = []
    for s in comp.variants:
        cells = [f"<td>{_place(s.rank)}</td>", f'<td><a href="#{slug(s.name)}">{_e(s.name)}'
                 f"</a></td>", f"<td>{len(s.runs)}</td>",
                 *(f"<td>{_cell(s.stats.get(k))}</td>" for k in METRICS),
                 _mark(s.rank.p_best, s.rank.worse) if s is not comp.variants[0]
                 else "<td></td>", f"<td>{_e(s.runs[0].metrics.get('steps', ''))}</td>",
                 f"<td>{_e(s.runs[0].metrics.get('params', ''))}</td>"]
        cls = ' class="best"' if s.rank.place == 1 else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    sections = []
    for s in comp.variants:
        shown = s.shown
        figs = "".join(
            f'<figure><img src="images/{slug(s.name)}/{g}.png" alt="{g}" '
            f'width="{min(2 * shown.grids[g].shape[1], 640)}"><figcaption>{CAPTIONS[g]}'
            "</figcaption></figure>" for g in GRIDS if g in shown.grids)
        train, block = shown.config.get("train", {}), shown.config.get("block", {})
        setting = f"lr {train.get('lr')}" + (f", w0_initial {block['w0_initial']}"
                                             if block.get("w0_initial") is not None else "")
        sections.append(f'<h3 id="{slug(s.name)}">{_e(s.name)}</h3><p>{_e(setting)}; seeds '
                        f"{', '.join(str(r.seed) for r in s.runs)}; grids of seed {shown.seed}, "
                        f"run dir <code>{html.escape(str(shown.run_dir))}</code></p>"
                        f'<div class="figs">{figs}<figure>{_svg_loss(shown.curve)}'
                        "<figcaption>training loss</figcaption></figure></div>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "tr.best{background:#dfd}td.sig{color:#060}td.tie{color:#999}"
             "tr.holds{background:#dfd}tr.does_not_hold{background:#fdd}"
             ".figs{display:flex;flex-wrap:wrap;gap:12px}"
             "img{image-rendering:pixelated}figure{margin:0}"
             ".partial{border:3px solid #c00;background:#fee;padding:0 1em;margin-bottom:1em}")
    leaders = _e(", ".join(s.name for s in comp.variants if s.rank.place == 1))
    seeds = ", ".join(map(str, comp.seeds))
    title = "PARTIAL: GON variants" if partial else "GON variants"
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}'
            f"</title><style>{style}</style></head><body>{partial_banner(partial)}"
            f"<h1>GON variants</h1><p>Held-out test split; "
            f"seeds {seeds}; sorted by {_e(m)} ({'higher' if higher else 'lower'} is better); "
            f"first place: <b>{leaders}</b>. probe_acc: linear probe on the latents. "
            f"&plusmn; is half the interval. vs next: &gt; the difference to the next row is "
            f"significant, = it is not.</p><p><small>{RULE}</small></p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>{likelihood_table(comp)}"
            f'<h2>Test {_e(m)}</h2>{svg_bars(comp)}<h2>Validation PSNR during training</h2>'
            f"{svg_curves(comp)}<h2>Ranking at every budget (validation PSNR)</h2>"
            f"{budgets_table(comp)}{claims_section(claims)}<h2>Variants</h2>"
            f"{''.join(sections)}</body></html>\n")
