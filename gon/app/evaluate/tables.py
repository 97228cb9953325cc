"""The page's tables as HTML: the variants with their intervals and marks, the effects and
interactions, the places at every budget, the likelihoods and the claims; every value escaped
(gon.app.evaluate.page puts them together).
"""

from __future__ import annotations

import hashlib
import html
import re

from gon.app.evaluate.compare import METRICS, Comparison, reversals
from gon.app.factorial import Effects
from gon.app.metrics import LIKELIHOOD


def slug(name: str) -> str:
    """A variant's name as an HTML id, a link and a file name: letters, digits, `.`, `_`, `-`
    only; a name that needed changing gets a hash of itself, so two names never share a slug."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".") or "_"
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def esc(x: object) -> str:
    """Any value as HTML text or a quoted attribute's value."""
    return html.escape(str(x), quote=True)


def fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def cell(iv: dict | None) -> str:
    """mean +- half-width of the interval (or the mean alone with n = 1)."""
    if not iv or iv["mean"] is None:
        return ""
    if iv["ci95_low"] is None:
        return fmt(iv["mean"])
    half = (iv["ci95_high"] - iv["ci95_low"]) / 2
    return f'{fmt(iv["mean"])} <small>&plusmn; {fmt(half, 2)}</small>'


def _mark(p: float | None, significant: bool) -> str:
    if p is None:
        return '<td title="not tested">?</td>'
    return (f'<td class="{"sig" if significant else "tie"}">{">" if significant else "="} '
            f"<small>p={p:.2g}</small></td>")


def _place(rank) -> str:
    return f"={rank.place}" if rank.tied else str(rank.place)


def variants_table(comp: Comparison) -> str:
    """One row per variant, best first: place, each metric's mean +- half-interval, the Holm p
    against the best, steps and parameters."""
    head = "".join(f"<th>{h}</th>" for h in ("place", "variant", "n", *METRICS, "vs best",
                                              "steps", "params"))
    rows = []
    for s in comp.variants:
        cells = [f"<td>{_place(s.rank)}</td>", f'<td><a href="#{slug(s.name)}">{esc(s.name)}'
                 f"</a></td>", f"<td>{len(s.runs)}</td>",
                 *(f"<td>{cell(s.stats.get(k))}</td>" for k in METRICS),
                 _mark(s.rank.p_best, s.rank.worse) if s is not comp.variants[0]
                 else "<td></td>", f"<td>{esc(s.runs[0].metrics.get('steps', ''))}</td>",
                 f"<td>{esc(s.runs[0].metrics.get('params', ''))}</td>"]
        cls = ' class="best"' if s.rank.place == 1 else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _p(p: float | None) -> str:
    return "" if p is None else f"{p:.2g}"


def _span(r: dict) -> str:
    if r["ci95_low"] is None:
        return ""
    return f"[{fmt(r['ci95_low'], 3)}, {fmt(r['ci95_high'], 3)}]"


def effects_table(rows: list[dict], what: str) -> str:
    """Effects rows (gon.app.stats.Effects.main or .interactions) as a table; a row whose
    interval excludes 0 is marked."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in (what, "level - reference", "effect",
                                              "95% interval", "p", "n (level / reference)"))
    body = "".join(
        f'<tr class="{"sig" if r["p"] is not None and r["p"] < 0.05 else "tie"}">'
        f"<td>{esc(r['factor'])}</td><td>{esc(r['level'])} - {esc(r['reference'])}</td>"
        f"<td>{fmt(r['estimate'], 3)}</td><td>{_span(r)}</td>"
        f"<td>{_p(r['p'])}</td>"
        f"<td>{esc(r['n'])} / {esc(r['n_ref'])}</td></tr>" for r in rows)
    return f'<table class="effects"><tr>{head}</tr>{body}</table>'


def dropped_terms(eff: Effects) -> str:
    """The terms the model could not estimate, and why."""
    if not eff.dropped:
        return ""
    return "<ul>" + "".join(f"<li>dropped {esc(d['term'])}: {esc(d['reason'])}</li>"
                            for d in eff.dropped) + "</ul>"


def budgets_table(comp: Comparison) -> str:
    """Places at every budget (rows: the final order) and where the ranking changes."""
    if not comp.budgets:
        return "<p>No learning curves were recorded.</p>"
    head = "".join(f"<th>{b.step}</th>" for b in comp.budgets)
    places = [{r.name: r for r in b.ranked} for b in comp.budgets]
    rows = "".join(f"<tr><td>{esc(s.name)}</td>" + "".join(
        f"<td>{_place(p[s.name])}</td>" for p in places) + "</tr>" for s in comp.variants)
    rho = "".join(f"<td>{fmt(b.rho, 2)}</td>" for b in comp.budgets)
    final = comp.budgets[-1]
    notes = []
    for b in comp.budgets[:-1]:
        flips = reversals(b, final)
        if flips:
            shown = ", ".join(f"{esc(a)} &gt; {esc(c)}" for a, c in flips[:4])
            notes.append(f"<li>step {b.step}: {len(flips)} pair(s) in the opposite order to step "
                         f"{final.step}, e.g. {shown}; leader(s) {esc(', '.join(b.leaders))}</li>")
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
        f"<td>{len(s.runs)}</td>" + "".join(f"<td>{cell(s.stats.get(k))}</td>"
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
