"""The offline comparison page (reports/index.html), written once. It opens with the answer: a
partial sweep's banner, a provenance line (dataset, steps, seeds, commit, study, date), the set
that cannot be told apart from the best, the effects of the axes as a forest plot with the
effects and interactions tables, and the effects at every budget; then the variants table, the
charts, a cross-variant strip (the same test images reconstructed by every variant), the ranking
at every budget, the claims and each variant's grids. Charts are Vega-Lite, drawn by the inlined
bundle (gon.app.evaluate.charts): nothing is fetched; images are relative links.

Usage:
    page = render_html(compare(runs), claims, partial, sweep_effects(runs), provenance)
"""

from __future__ import annotations

import math
from typing import Any

from gon.app.claims.table import BATCH_TOL
from gon.app.evaluate import charts
from gon.app.evaluate.compare import CURVE_METRIC, Comparison
from gon.app.evaluate.runs import encoding_rows
from gon.app.evaluate.tables import (
    budgets_table,
    cell,
    dropped_terms,
    effects_table,
    esc,
    likelihood_table,
    slug,
    variants_table,
)
from gon.app.factorial import EFFECTS_RULE
from gon.app.metrics import RECON_LAYOUT
from gon.app.stats import INTERVAL_RULE, RANKING_RULE

GRIDS = ("recon", "samples", "slerp", "superres")  # each variant's figures
STRIP = ("originals", "strip")  # the cross-variant strip: test images, their reconstructions
CAPTIONS = {"recon": f"test images and reconstructions ({RECON_LAYOUT})",
            "samples": "samples (variational: the prior N(0, I); else a Gaussian fit)",
            "slerp": "slerp between test images", "superres": "original, native, 4x render",
            "originals": "the first test images (originals)",
            "strip": "reconstructions of the first test images"}
RULE = esc(f"{INTERVAL_RULE} {RANKING_RULE}")  # told once, in gon.app.stats
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1300px}"
         "table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
         "tr.best{background:#dfd}td.sig,tr.sig td{color:#060}td.tie,tr.tie td{color:#777}"
         "tr.holds{background:#dfd}tr.does_not_hold{background:#fdd}"
         ".figs{display:flex;flex-wrap:wrap;gap:12px}.provenance{color:#333;font-size:90%}"
         "img{image-rendering:pixelated}figure{margin:0}.vega.failed{color:#c00}"
         "table.strip td,table.strip th{text-align:left;vertical-align:middle}"
         "table.strip tr.original{background:#eef;font-weight:bold}"
         ".partial{border:3px solid #c00;background:#fee;padding:0 1em;margin-bottom:1em}")


def partial_banner(fields: dict[str, Any] | None) -> str:
    """A partial sweep's warning atop the page (gon.app.sweeps.status.report_fields; "" for a
    complete one)."""
    if not fields:
        return ""
    t = fields["trials"]
    items = [f"<li>trial {esc(r['trial'])} failed ({esc(r['params'])}): {esc(r['error'])}</li>"
             for r in fields["failed_trials"]]
    items += [f"<li>trial {esc(r['trial'])}: run dir missing ({esc(r['dir'])})</li>"
              for r in fields["missing_trials"]]
    items += [f"<li>trial {esc(r['trial'])}: not finished</li>"
              for r in fields["unfinished_trials"]]
    if t["not_started"]:
        items.append(f"<li>{esc(t['not_started'])} trial(s) not started</li>")
    return (f'<div class="partial"><h2>Partial report</h2><p>Only {esc(t["finished"])} of '
            f"{esc(t['budget'])} trials of the sweep finished; this comparison is incomplete."
            f"</p><ul>{''.join(items)}</ul></div>")


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
        if not e["values"]:  # every seed but one diverged (gon.app.claims.table.compare)
            summary = "no seeds left"
        elif e["ci95"] is None:  # batch_dependence: the largest, against the baseline's smallest
            summary = (f"max {_claim_fmt(e['mean'])} (baseline min "
                       f"{_claim_fmt(min(e['baseline_values']))}, tolerance {BATCH_TOL:g})")
        else:
            summary = (f"{_claim_fmt(e['mean'])} [{_claim_fmt(e['ci95'][0])}, "
                       f"{_claim_fmt(e['ci95'][1])}]")
        cells = [f"{e['claim']}: {e['statement']}", e["budget"],
                 f"{e['contender']} vs {e['baseline']}",
                 f"{e['params']['contender']} / {e['params']['baseline']}", e["measure"],
                 summary, ", ".join(_claim_fmt(v) for v in e["values"]),
                 e["verdict"] + (f" ({e['note']})" if e.get("note") else ""), e["anchor"]]
        rows.append(f'<tr class="{esc(e["verdict"])}">'
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return (f'<h2 id="claims">Claims</h2><p>{esc(s["dataset"])}, seeds '
            f'{esc(s["seeds"])}, {esc(s["steps"])} steps; equal time: '
            f'{s["time_budget_s"]:.2f} s of training each (the GON\'s '
            f'{esc(s["steps"])} steps). {esc(s["rule"])}</p>'
            f"<table><tr>{head}</tr>{''.join(rows)}</table>")


def encoding_section(comp: Comparison) -> str:
    """The encoding curve (gon.app.evaluate.runs.encoding_rows): test PSNR of each variant
    encoded with k' = 1 .. 2k latent steps ("" where no variant has latent steps)."""
    rows = encoding_rows([r for s in comp.variants for r in s.runs])
    if not rows:
        return ""
    width = max(r["steps"] for r in rows)
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], {})[r["steps"]] = r
    head = "".join(f"<th>{h}</th>" for h in ["variant", "trained k", "images",
                                              *(f"k'={k}" for k in range(1, width + 1))])
    body = []
    for name, points in by.items():
        first = next(iter(points.values()))
        cells = [name, first["trained_steps"], first["images"], *(
            f"{_claim_fmt(p['psnr_mean'])} [{_claim_fmt(p['psnr_ci95_low'])}, "
            f"{_claim_fmt(p['psnr_ci95_high'])}]" if (p := points.get(k)) else ""
            for k in range(1, width + 1))]
        body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return ('<h2 id="encoding">Encoding curve</h2><p>Test PSNR (dB, mean [95% interval] over '
            "seeds) when encoding with k' latent steps, for a model trained with k (learned "
            "step sizes extended by their last value); diverged runs left out. "
            "<code>encoding_curve.json</code> holds each seed.</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table>")


def provenance_line(prov: dict[str, Any] | None) -> str:
    """dataset, steps, seeds, commit, study and date, as one line."""
    if not prov:
        return ""
    return ('<p class="provenance">' + "; ".join(f"<b>{esc(k)}</b> {esc(v)}"
                                                 for k, v in prov.items()) + "</p>")


def answer_section(comp: Comparison, eff: Any, specs: dict[str, dict]) -> str:
    """The best, the variants indistinguishable from it, and the effects of the axes (eff:
    gon.app.evaluate.effects.SweepEffects, or None); adds its charts to `specs`."""
    m, best = comp.metric, comp.best
    tied = [s.name for s in comp.variants if s.rank.place == 1 and s is not best]
    worse = sum(1 for s in comp.variants if s.rank.worse)
    out = [f'<h2 id="answer">The answer</h2><p>Best by test {esc(m)}: <b>{esc(best.name)}</b> '
           f"({cell(best.stats.get(m))}, n={len(best.runs)}). Cannot be told apart from it "
           f"(each against the best, Welch, Holm): <b>{esc(', '.join(tied) or 'none')}</b>; "
           f"significantly worse: {worse} of {len(comp.variants) - 1}.</p>"]
    if eff is None or m not in eff.test or not eff.factors:
        return "".join(out) + "<p>No axis varies in this sweep: there are no effects.</p>"
    fit = eff.test[m]
    ref = ", ".join(f"{f}={r}" for f, r in eff.reference.items())
    specs["forest"] = charts.forest(fit, f"test {m}")
    out.append(f"<h3>Effects on test {esc(m)}</h3><p>Reference levels: {esc(ref)}; {fit.n} "
               f"runs, residual df {fit.df_resid}. <small>{esc(EFFECTS_RULE)}</small></p>"
               f"{charts.chart_div('forest')}{effects_table(fit.main, 'axis')}"
               f"<h3>Interactions</h3>"
               f"{effects_table(fit.interactions, 'axes') or '<p>None estimated.</p>'}"
               f"{dropped_terms(fit)}")
    if eff.by_step:
        specs["by-budget"] = charts.by_budget(eff.by_step, f"validation {CURVE_METRIC}")
        out.append(f"<h3>Effects at every budget (validation {CURVE_METRIC})</h3>"
                   f"<p>Does an effect hold, grow or flip as training goes on?</p>"
                   f"{charts.chart_div('by-budget')}")
    return "".join(out)


def strip_section(comp: Comparison) -> str:
    """The same test images reconstructed by every variant: the originals first, then one row
    per variant (best first)."""
    drawn = [s for s in comp.variants if "strip" in s.shown.grids]
    if not drawn:
        return ""
    rows = [f'<tr class="original"><th>originals (test images)</th><td><img src="images/'
            f'{slug(drawn[0].name)}/originals.png" alt="original test images" width="'
            f'{2 * drawn[0].shown.grids["originals"].shape[1]}"></td></tr>']
    rows += [f'<tr><th><a href="#{slug(s.name)}">{esc(s.name)}</a></th><td><img src="images/'
             f'{slug(s.name)}/strip.png" alt="reconstructions by {esc(s.name)}" width="'
             f'{2 * s.shown.grids["strip"].shape[1]}"></td></tr>' for s in drawn]
    return ("<h2>The same test images, every variant</h2><p>First row: the test images "
            "(originals); below, each variant's reconstructions of them (its first seed).</p>"
            f'<table class="strip">{"".join(rows)}</table>')


def variant_sections(comp: Comparison, specs: dict[str, dict]) -> str:
    """Each variant's setting, seeds, grids and training curve."""
    out = []
    for s in comp.variants:
        shown, key = s.shown, slug(s.name)
        figs = "".join(
            f'<figure><img src="images/{key}/{g}.png" alt="{g}" '
            f'width="{min(2 * shown.grids[g].shape[1], 640)}"><figcaption>{CAPTIONS[g]}'
            "</figcaption></figure>" for g in GRIDS if g in shown.grids)
        if len(shown.curve) > 1:
            specs[f"loss-{key}"] = charts.loss(shown.curve)
            figs += f"<figure>{charts.chart_div(f'loss-{key}')}<figcaption>training loss" \
                    "</figcaption></figure>"
        train, block = shown.config.get("train", {}), shown.config.get("block", {})
        setting = f"lr {train.get('lr')}" + (f", w0_initial {block['w0_initial']}"
                                             if block.get("w0_initial") is not None else "")
        out.append(f'<h3 id="{key}">{esc(s.name)}</h3><p>{esc(setting)}; seeds '
                   f"{esc(', '.join(str(r.seed) for r in s.runs))}; grids of seed "
                   f"{esc(shown.seed)}, run dir <code>{esc(shown.run_dir)}</code></p>"
                   f'<div class="figs">{figs}</div>')
    return "".join(out)


def render_html(comp: Comparison, claims: dict[str, Any] | None = None,
                partial: dict[str, Any] | None = None, eff: Any = None,
                provenance: dict[str, Any] | None = None) -> str:
    """The whole page. claims: reports/claims.json's content; partial: a partial sweep's fields
    (gon.app.sweeps.status.report_fields), marked in the title and a banner; eff: the sweep's
    effects (gon.app.evaluate.effects.sweep_effects); provenance: {name: value} for the top."""
    m, higher = comp.metric, comp.higher
    specs: dict[str, dict] = {}
    answer = answer_section(comp, eff, specs)
    bars = [{"variant": s.name, **{f"{m}_{k}": (s.stats.get(m) or {}).get(k)
                                   for k in ("mean", "ci95_low", "ci95_high")}}
            for s in comp.variants]
    specs["bars"] = charts.bars(bars, m)
    if comp.curves:
        specs["curves"] = charts.curves(comp.curves)
    variants = variant_sections(comp, specs)
    title = "PARTIAL: GON variants" if partial else "GON variants"
    script = charts.bundle()
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style>" + (f"<script>{script}</script>" if script else "")
            + f"</head><body>{partial_banner(partial)}<h1>GON variants</h1>"
            f"{provenance_line(provenance)}{answer}"
            f"<h2>Variants</h2><p>Held-out test split; seeds "
            f"{esc(', '.join(map(str, comp.seeds)))}; sorted by {esc(m)} "
            f"({'higher' if higher else 'lower'} is better). probe_acc: "
            "linear probe on the latents. &plusmn; is half the interval. vs best: &gt; "
            "significantly worse than the best, = not.</p>"
            f"<p><small>{RULE}</small></p>{variants_table(comp)}{likelihood_table(comp)}"
            f"<h2>Test {esc(m)}</h2>{charts.chart_div('bars')}"
            "<h2>Validation PSNR during training</h2>"
            + (charts.chart_div("curves") if comp.curves else "<p>No curves recorded.</p>")
            + f"{strip_section(comp)}<h2>Ranking at every budget (validation PSNR)</h2>"
            f"{budgets_table(comp)}{encoding_section(comp)}{claims_section(claims)}"
            f"<h2>Each variant</h2>{variants}"
            f"{charts.embed(specs)}</body></html>\n")
