"""The offline comparison page (reports/index.html): the variants table with mean +- interval and
the significance marks, a bar chart with error bars, the validation curves, the ranking at every
budget and each variant's grids. Inline SVG only: no scripts, no network, relative image links.

Usage:
    Path("reports/index.html").write_text(render_html(compare(runs)))
"""

from __future__ import annotations

import html

from gon.app.evaluate.compare import METRICS, Comparison, reversals
from gon.app.metrics import LIKELIHOOD, RECON_LAYOUT
from gon.app.stats import ALPHA, LEVEL

GRIDS = ("recon", "samples", "slerp", "superres")
CAPTIONS = {"recon": f"test images and reconstructions ({RECON_LAYOUT})",
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
             f"<title>test {m} by variant, mean and {LEVEL:.0%} interval</title>"]
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
            shown = ", ".join(f"{a} &gt; {c}" for a, c in flips[:4])
            notes.append(f"<li>step {b.step}: {len(flips)} pair(s) in the opposite order to step "
                         f"{final.step}, e.g. {shown}; leader(s) {', '.join(b.leaders)}</li>")
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


def render_html(comp: Comparison, claims: str = "") -> str:
    """The whole page; `claims` is the claims table's section (gon.app.claims.render_section)."""
    m, higher = comp.metric, comp.higher
    head = "".join(f"<th>{h}</th>" for h in ("place", "variant", "n", *METRICS, "vs best",
                                              "steps", "params"))
    rows = []
    for s in comp.variants:
        cells = [f"<td>{_place(s.rank)}</td>", f'<td><a href="#{s.name}">{html.escape(s.name)}'
                 f"</a></td>", f"<td>{len(s.runs)}</td>",
                 *(f"<td>{_cell(s.stats.get(k))}</td>" for k in METRICS),
                 _mark(s.rank.p_best, s.rank.worse) if s is not comp.variants[0]
                 else "<td></td>", f"<td>{s.runs[0].metrics.get('steps', '')}</td>",
                 f"<td>{s.runs[0].metrics.get('params', '')}</td>"]
        cls = ' class="best"' if s.rank.place == 1 else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    sections = []
    for s in comp.variants:
        shown = s.shown
        figs = "".join(
            f'<figure><img src="images/{html.escape(s.name)}/{g}.png" alt="{g}" '
            f'width="{min(2 * shown.grids[g].shape[1], 640)}"><figcaption>{CAPTIONS[g]}'
            "</figcaption></figure>" for g in GRIDS if g in shown.grids)
        train, block = shown.config.get("train", {}), shown.config.get("block", {})
        setting = f"lr {train.get('lr')}" + (f", w0_initial {block['w0_initial']}"
                                             if block.get("w0_initial") is not None else "")
        sections.append(f'<h3 id="{s.name}">{html.escape(s.name)}</h3><p>{setting}; seeds '
                        f"{', '.join(str(r.seed) for r in s.runs)}; grids of seed {shown.seed}, "
                        f"run dir <code>{html.escape(str(shown.run_dir))}</code></p>"
                        f'<div class="figs">{figs}<figure>{_svg_loss(shown.curve)}'
                        "<figcaption>training loss</figcaption></figure></div>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "tr.best{background:#dfd}td.sig{color:#060}td.tie{color:#999}"
             "tr.holds{background:#dfd}tr.does_not_hold{background:#fdd}"
             ".figs{display:flex;flex-wrap:wrap;gap:12px}"
             "img{image-rendering:pixelated}figure{margin:0}")
    leaders = ", ".join(s.name for s in comp.variants if s.rank.place == 1)
    seeds = ", ".join(map(str, comp.seeds))
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>GON variants</title>'
            f"<style>{style}</style></head><body><h1>GON variants</h1><p>Held-out test split; "
            f"seeds {seeds}; sorted by {m} ({'higher' if higher else 'lower'} is better); "
            f"first place: <b>{leaders}</b>. probe_acc: linear probe on the latents. "
            f"&plusmn; is half the interval. vs next: &gt; the difference to the next row is "
            f"significant, = it is not.</p><p><small>{RULE}</small></p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>{likelihood_table(comp)}"
            f'<h2>Test {m}</h2>{svg_bars(comp)}<h2>Validation PSNR during training</h2>'
            f"{svg_curves(comp)}<h2>Ranking at every budget (validation PSNR)</h2>"
            f"{budgets_table(comp)}{claims}<h2>Variants</h2>{''.join(sections)}</body></html>\n")
