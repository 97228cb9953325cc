"""The evaluation report: metrics.json, DVC plots (CSV, PNG), an offline HTML page and W&B runs.

Usage (gon.app.evaluate calls these):
    best = write_report(variants, Path("reports"))    # -> the best variant's name
    log_wandb(variants, best, Path("reports"), group_default="sweep")

Layout of <reports_dir>:
    metrics.json                  {"<variant>": {psnr, ssim, mse, bce, probe_acc ..}, "best": {..}}
    variants.csv                  one row per variant (axes and metrics), a DVC bar plot
    curves/<variant>.csv          step, loss_outer, loss_inner: the training curve (DVC plot)
    images/<variant>/<grid>.png   recon, samples, slerp, superres (DVC image plots)
    index.html                    the comparison table and the grids, no scripts, relative links
    wandb/                        offline W&B runs: one eval run per variant and one summary run
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from gon.app.metrics import HIGHER_IS_BETTER, save_png
from gon.app.variants import AXES, Variant, variant_choices, variant_tags

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "mse", "bce", "probe_acc")  # the comparison table's columns
GRIDS = ("recon", "samples", "slerp", "superres")
CAPTIONS = {"recon": "test images | reconstructions", "samples": "samples (Gaussian fit)",
            "slerp": "slerp between test images", "superres": "original, native, 4x render"}


def objective(variants: list[Variant]) -> tuple[str, bool]:
    """(metric name, higher is better) of the sweep's optimized_metric, e.g. ("psnr", True)."""
    metric = variants[0].config.get("optimized_metric", "val/psnr")
    return metric.removeprefix("val/"), HIGHER_IS_BETTER.get(metric, True)


def best_variant(variants: list[Variant]) -> Variant:
    metric, higher = objective(variants)
    finite = [v for v in variants if math.isfinite(v.metrics.get(metric, math.nan))]
    if not finite:
        return variants[0]
    return (max if higher else min)(finite, key=lambda v: v.metrics[metric])


def write_report(variants: list[Variant], reports_dir: Path) -> str:
    """Write everything but the W&B runs; return the best variant's name."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("curves", "images"):  # stale variants of an earlier call must not linger
        shutil.rmtree(reports_dir / sub, ignore_errors=True)
    best = best_variant(variants)
    metrics = {v.name: v.metrics for v in variants} | {"best": best.metrics}
    (reports_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    columns = ["variant", *AXES, *METRICS, "steps", "params"]
    with open(reports_dir / "variants.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for v in variants:
            writer.writerow([v.name, *variant_choices(v.config),
                             *(v.metrics.get(k, "") for k in columns[5:])])
    (reports_dir / "curves").mkdir()
    for v in variants:
        with open(reports_dir / "curves" / f"{v.name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["step", "loss_outer", "loss_inner"])
            writer.writeheader()
            writer.writerows(v.curve)
        for grid, array in v.grids.items():
            path = reports_dir / "images" / v.name / f"{grid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(array, path)
    (reports_dir / "index.html").write_text(render_html(variants, best.name))
    return best.name


def _svg_curve(curve: list[dict[str, float]], width: int = 260, height: int = 120) -> str:
    """An inline SVG line of loss_outer against step (no scripts, no external files)."""
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


def render_html(variants: list[Variant], best: str) -> str:
    """The report page: the variants x metrics table (best first) and each variant's grids."""
    metric, higher = objective(variants)
    def rank(v: Variant) -> tuple[bool, float]:  # best first, non-finite last
        x = v.metrics.get(metric, math.nan)
        return not math.isfinite(x), -x if higher else x

    order = sorted(variants, key=rank)
    head = "".join(f"<th>{h}</th>" for h in ("variant", "encoding", "block", "loss",
                                              "latent_reduction", *METRICS, "steps"))
    rows = []
    for v in order:
        cells = [f'<a href="#{v.name}">{html.escape(v.name)}</a>',
                 *map(html.escape, variant_choices(v.config))]
        cells += [f"{v.metrics[k]:.4g}" if k in v.metrics else "" for k in (*METRICS, "steps")]
        cls = ' class="best"' if v.name == best else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    sections = []
    for v in order:
        figs = "".join(  # small grids shown at twice their size, pixels kept sharp
            f'<figure><img src="images/{html.escape(v.name)}/{g}.png" alt="{g}" '
            f'width="{min(2 * v.grids[g].shape[1], 640)}"><figcaption>{CAPTIONS[g]}</figcaption>'
            "</figure>" for g in GRIDS if g in v.grids)
        sections.append(f'<h2 id="{v.name}">{html.escape(v.name)}</h2><p>run dir '
                        f"<code>{html.escape(str(v.run_dir))}</code></p>"
                        f'<div class="figs">{figs}<figure>{_svg_curve(v.curve)}'
                        "<figcaption>training loss</figcaption></figure></div>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "tr.best{background:#dfd}.figs{display:flex;flex-wrap:wrap;gap:12px}"
             "img{image-rendering:pixelated}figure{margin:0}")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>GON variants</title>'
            f"<style>{style}</style></head><body><h1>GON variants</h1><p>Held-out split; sorted "
            f"by {metric} ({'higher' if higher else 'lower'} is better); best: <b>{best}</b>. "
            f"probe_acc: linear probe on the latents.</p><table><tr>{head}</tr>{''.join(rows)}"
            f"</table>{''.join(sections)}</body></html>\n")


def log_wandb(variants: list[Variant], best: str, reports_dir: Path, group_default: str) -> None:
    """One eval run per variant and a summary run with a variants x metrics table, in the
    trials' project and group; offline unless WANDB_MODE says otherwise, under reports_dir."""
    wcfg = (variants[0].config.get("logger") or {}).get("wandb")
    if not wcfg:
        log.info("the trials ran with logger=none: no W&B runs")
        return
    mode = os.environ.setdefault("WANDB_MODE", wcfg["mode"])  # env first, as gon.app.tracking
    import wandb

    common = {"project": wcfg["project"], "mode": mode, "dir": str(reports_dir),
              "group": wcfg.get("group") or group_default, "reinit": "finish_previous"}
    table = wandb.Table(columns=["variant", *AXES, *METRICS, *GRIDS])
    for v in variants:
        tags = variant_tags(OmegaConf.create(v.config))
        with wandb.init(job_type="eval", name=v.name, tags=tags, config=v.config, **common) as run:
            images = {g: wandb.Image(a, caption=CAPTIONS[g]) for g, a in v.grids.items()}
            run.log({**{f"test/{k}": x for k, x in v.metrics.items()}, **images})
            run.summary.update({f"test/{k}": x for k, x in v.metrics.items()})
        table.add_data(v.name, *variant_choices(v.config), *(v.metrics.get(k) for k in METRICS),
                       *(wandb.Image(v.grids[g]) for g in GRIDS))
    metric, _ = objective(variants)
    config = {"variants": [v.name for v in variants], "best": best, "objective": metric}
    with wandb.init(job_type="summary", name="summary", config=config, **common) as run:
        run.log({"variants": table, f"{metric}_by_variant": wandb.plot.bar(
            table, "variant", metric, title=f"test {metric} by variant")})
        best_v = next(v for v in variants if v.name == best)
        run.summary.update({"best": best, **{f"best/{k}": x for k, x in best_v.metrics.items()}})
    log.info("W&B (%s): %d eval runs and a summary run in %s", mode, len(variants),
             reports_dir / "wandb")
