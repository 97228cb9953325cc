"""The evaluation report: metrics.json, DVC plots (CSV, PNG), an offline HTML page and W&B runs,
each file written once (a partial sweep marked in metrics.json, the CSVs and the page).

Usage (gon.app.evaluate calls these):
    comp = write_report(runs, Path("reports"))    # -> gon.app.compare.Comparison, best first
    log_wandb(comp, Path("reports"), group_default="sweep")

Layout of <reports_dir>:
    metrics.json          {"<variant>": {"psnr": {mean, sd, ci95_low, ci95_high, n}, .., "rank",
                          "steps", "params"}, "best": {..}}: over the variant's seeds (and
                          nelbo, nelbo_bpd, .., iw_bpd for the variational models)
    variants.csv          one row per variant, best first: axes, n, place, Holm p vs the best,
                          <metric>_{mean,sd,ci95_low,ci95_high} (a DVC bar plot with error bars)
    val_curves.csv        variant, step, psnr_mean, psnr_ci95_low, psnr_ci95_high, n (DVC lines)
    runs.csv, effects.json, headline.json   one row per run; each axis's effects (test metrics,
                          and validation PSNR at every budget); the headline metrics (DVC's
                          `metrics`): gon.app.evaluate.effects
    curves/<slug>.csv     step, loss_outer, loss_inner: the training curve of its first seed
    images/<slug>/<grid>.png      recon, samples, slerp, superres of its first seed (DVC images)
    index.html            the comparison page (gon.app.evaluate.page): Vega charts, offline
    wandb/                offline W&B runs: one eval run per variant and one summary run, and
                          (gon.app.evaluate.cli) the sweep's train runs and the claims run
                          linked in: `wandb leet <reports_dir>/wandb` shows them all
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gon.app.claims.table import CLAIMS_FILE, load_claims
from gon.app.evaluate.compare import METRICS, Comparison, VariantSummary, compare, metric_names
from gon.app.evaluate.effects import EFFECT_COLUMNS, effect_table, write_tables
from gon.app.evaluate.page import CAPTIONS, GRIDS, render_html
from gon.app.evaluate.tables import slug
from gon.app.metrics import save_png
from gon.app.reliability.checkpoint import save_csv, save_json, save_text
from gon.app.tracking import git_commit, init_run, stable_id
from gon.app.variants import AXES, Variant, variant_choices, variant_tags

log = logging.getLogger(__name__)

STATS = ("mean", "sd", "ci95_low", "ci95_high")
# the report's revision: part of the eval and summary runs' W&B ids, so a re-evaluation updates
# them; bump it when what those runs hold changes, to start new ones
REVISION = 1
CURVE_COLUMNS = ["variant", "step", "psnr_mean", "psnr_ci95_low", "psnr_ci95_high", "n"]


def variant_metrics(s: VariantSummary) -> dict[str, Any]:
    """metrics.json's entry of a variant: an interval per metric, its place, steps, params."""
    first = s.runs[0].metrics
    return {**s.stats, "rank": s.rank.place, "seeds": [r.seed for r in s.runs],
            "steps": first.get("steps"), "params": first.get("params")}


def variant_row(s: VariantSummary, names: tuple[str, ...]) -> dict[str, Any]:
    """variants.csv's row of a variant for the metrics `names` ("" where undefined)."""
    row: dict[str, Any] = {"variant": s.name,
                           **dict(zip(AXES, variant_choices(s.runs[0].config), strict=True)),
                           "n": len(s.runs), "place": s.rank.place, "tied": s.rank.tied,
                           "p_holm_best": s.rank.p_best}
    for m in names:
        for k in STATS:
            row[f"{m}_{k}"] = s.stats.get(m, {}).get(k)
    row |= {"steps": s.runs[0].metrics.get("steps"), "params": s.runs[0].metrics.get("params")}
    return {k: "" if v is None else v for k, v in row.items()}


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str],
               partial: bool = False) -> None:
    """A CSV of `columns`, written atomically; a partial sweep's gets a last column
    complete=false on every row (the CSVs `dvc plots` draws say it too, not only metrics.json
    and the page)."""
    if partial:
        columns, rows = [*columns, "complete"], [{**r, "complete": "false"} for r in rows]
    save_csv(path, rows, columns)


def provenance(runs: list[Variant], study: str | None = None) -> dict[str, str]:
    """What the page's first line says: dataset, steps, seeds, commit, study and date."""
    def each(values: set) -> str:
        return ", ".join(map(str, sorted(values)))

    return {"dataset": each({str((r.config.get("dataset") or {}).get("name")) for r in runs}),
            "steps": each({r.metrics.get("steps") for r in runs}),
            "seeds": each({r.seed for r in runs}),
            "commit": git_commit() or "unknown (no git checkout)",
            "study": study or "none recorded (a plain multirun or single runs)",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def write_report(runs: list[Variant], reports_dir: Path, partial: dict[str, Any] | None = None,
                 study: str | None = None, wandb: dict[str, str] | None = None) -> Comparison:
    """Write everything but the W&B runs, each file once; return the comparison (best variant
    first). `partial`: a partial sweep's fields (gon.app.sweeps.status.report_fields), written
    into metrics.json, the CSVs and the page ({} or None: a complete sweep); `study`: the
    sweep's study name for the page's provenance line; `wandb`: the runs' W&B project and group
    (wandb_target), named in headline.json."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("curves", "images"):  # stale variants of an earlier call must not linger
        shutil.rmtree(reports_dir / sub, ignore_errors=True)
    comp, partial = compare(runs), partial or {}
    write_tables(runs, comp, reports_dir, wandb)  # runs.csv, effects.json, headline.json
    metrics = {s.name: variant_metrics(s) for s in comp.variants}
    metrics = {**partial, **metrics, "best": metrics[comp.best.name]}
    save_json(reports_dir / "metrics.json", metrics, sort_keys=False)
    names = metric_names(runs)
    rows = [variant_row(s, names) for s in comp.variants]
    marked = bool(partial)
    _write_csv(reports_dir / "variants.csv", rows, list(rows[0]), marked)
    _write_csv(reports_dir / "val_curves.csv", comp.curves, CURVE_COLUMNS, marked)
    (reports_dir / "curves").mkdir()
    for s in comp.variants:
        shown = s.shown
        _write_csv(reports_dir / "curves" / f"{slug(s.name)}.csv", shown.curve,
                   ["step", "loss_outer", "loss_inner"], marked)
        for grid, array in shown.grids.items():
            path = reports_dir / "images" / slug(s.name) / f"{grid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(array, path)
    claims = load_claims(reports_dir / CLAIMS_FILE)  # the claims stage's table
    page = render_html(comp, claims, partial, comp.effects, provenance(runs, study))
    save_text(reports_dir / "index.html", page)
    return comp


def summary_columns(names: tuple[str, ...] = METRICS) -> list[str]:
    """The W&B summary table's columns: variant, axes, n, place, <metric>/<stat>, grids."""
    return ["variant", *AXES, "n", "place", *(f"{m}/{k}" for m in names for k in STATS),
            *GRIDS]


def wandb_target(runs: list[Variant], group_default: str) -> dict[str, str] | None:
    """{"project", "group"} of the trials' W&B runs (their logger config; the group defaults to
    the sweep dir's name, as gon.app.tracking's), where the eval and summary runs go too; None
    if the trials ran with logger=none."""
    wcfg = (runs[0].config.get("logger") or {}).get("wandb")
    return {"project": wcfg["project"], "group": wcfg.get("group") or group_default} if wcfg \
        else None


def log_wandb(comp: Comparison, reports_dir: Path, group_default: str,
              extra: dict | None = None) -> None:
    """One eval run per variant (its seeds' intervals, the first seed's grids) and a summary run
    (a table with mean, sd and interval per variant, a PSNR bar chart, the validation curves),
    in the trials' project and group; offline unless WANDB_MODE says otherwise. `extra` (a
    partial sweep's {"complete": false, "failed_trials": ...}, gon.app.completeness) goes into
    the summary run's config and summary, its failed trials also as a table."""
    target = wandb_target(comp.best.runs, group_default)
    if target is None:
        log.info("the trials ran with logger=none: no W&B runs")
        return
    wcfg = comp.best.runs[0].config["logger"]["wandb"]
    mode = os.environ.setdefault("WANDB_MODE", wcfg["mode"])  # env first, as gon.app.tracking
    import wandb

    common = {**target, "mode": mode, "dir": str(reports_dir), "reinit": "finish_previous",
              "init_timeout": wcfg.get("init_timeout")}
    names = metric_names([r for s in comp.variants for r in s.runs])
    table = wandb.Table(columns=summary_columns(names))
    for s in comp.variants:
        shown = s.shown
        tags = variant_tags(OmegaConf.create(shown.config))
        config = {**shown.config, "variant": s.name, "seeds": [r.seed for r in s.runs]}
        flat = {f"test/{m}/{k}": v for m, iv in s.stats.items() for k, v in iv.items()}
        with init_run(job_type="eval", name=s.name, tags=tags, config=config, **common,
                      id=stable_id(common["group"], "eval", s.name, REVISION)) as run:
            images = {g: wandb.Image(a, caption=CAPTIONS[g]) for g, a in shown.grids.items()}
            run.log({**{k: v for k, v in flat.items() if v is not None}, **images})
            run.summary.update({**flat, "place": s.rank.place})
        table.add_data(s.name, *variant_choices(shown.config), len(s.runs), s.rank.place,
                       *(s.stats.get(m, {}).get(k) for m in names for k in STATS),
                       *(wandb.Image(shown.grids[g]) if g in shown.grids else None
                         for g in GRIDS))
    curves = wandb.Table(columns=CURVE_COLUMNS, data=[[r[c] for c in CURVE_COLUMNS]
                                                      for r in comp.curves])
    config = {"variants": [s.name for s in comp.variants], "best": comp.best.name,
              "objective": comp.metric, "seeds": comp.seeds, **(extra or {})}
    m = comp.metric
    with init_run(job_type="summary", name="partial summary" if extra else "summary",
                  config=config, **common,
                  id=stable_id(common["group"], "summary", REVISION)) as run:
        logged: dict[str, Any] = {"variants": table, "val_curves": curves,
                                  f"{m}_by_variant": wandb.plot.bar(
                                      table, "variant", f"{m}/mean",
                                      title=f"test {m} by variant (mean over seeds)")}
        if comp.curves:
            steps = sorted({r["step"] for r in comp.curves})
            by = {s.name: {r["step"]: r["psnr_mean"] for r in comp.curves
                           if r["variant"] == s.name} for s in comp.variants}
            logged["val_psnr_curves"] = wandb.plot.line_series(
                xs=steps, ys=[[by[n].get(x) for x in steps] for n in by], keys=list(by),
                title="validation PSNR (mean over seeds) by step", xname="step")
        if comp.effects is not None:  # the effects table and the objective's main effects
            effects = wandb.Table(columns=EFFECT_COLUMNS, data=effect_table(comp.effects))
            logged |= {"effects": effects, f"{m}_effects": wandb.plot.bar(
                wandb.Table(columns=EFFECT_COLUMNS, data=[r for r in effects.data if r[0] == m
                                                         and r[1] is None]),
                "term", "estimate", title=f"effect on test {m} (vs the reference level)")}
        if extra:
            logged["failed_trials"] = wandb.Table(columns=["trial", "params", "error"], data=[
                [r["trial"], json.dumps(r["params"]), r["error"]] for r in extra["failed_trials"]])
            run.summary.update({"complete": False, **extra["trials"]})
        run.log(logged)
        run.summary.update({"best": comp.best.name, **{
            f"best/{k}/mean": iv["mean"] for k, iv in comp.best.stats.items()}})
    log.info("W&B (%s): %d eval runs and a summary run in %s", mode, len(comp.variants),
             reports_dir / "wandb")
