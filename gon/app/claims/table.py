"""The GON claims table: what is compared, the interval, the verdict rule (the page section:
gon.app.evaluate.page.claims_section).

Each claim compares a *contender* with a *baseline* trained with the same seeds (trial names
of ``TRIALS``, run by gon.app.claims_run) at two budgets: equal steps and equal training
time. Per seed it takes a figure of merit in the claimed direction (bigger = the contender
is better):
- ``mse_ratio``: test MSE of the baseline / test MSE of the contender (interval on the log);
- ``nelbo_ratio``: the same for the test negative ELBO (nats per image, binary pixels);
- ``gain_db``: test PSNR of the contender - test PSNR of the baseline, in dB;
- ``batch_dependence``: the largest relative change of a latent between encoding an image
  alone and inside a batch of 64 (the contender's; the baseline's for contrast).
The verdict rule is VERDICT_RULE below, told once (claims.json records it; docs link here).
Diverged seeds and collapsed models: see ``compare`` and DIVERGENCE_RULE below.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gon.app.stats import ci95

CLAIMS_FILE = "claims.json"
BATCH_TOL = 1e-4  # float32 rounding of a latent is ~1e-7 relative; a batch effect is ~1
VERDICT_RULE = (
    "Verdict (the same for every claim): the two-sided 95 % Student-t interval of the mean over "
    "seeds (of log(ratio) for ratios) excludes the null (ratio 1, gain 0 dB) on the claimed side "
    "-> holds; on the other side -> does_not_hold; otherwise, or with fewer than 2 seeds -> "
    f"inconclusive. Batch dependence: the contender's largest <= {BATCH_TOL:g} and the "
    "baseline's smallest above it -> holds; the contender's above it -> does_not_hold; else "
    "inconclusive.")
BUDGETS = ("steps", "time")
VERDICTS = ("holds", "does_not_hold", "inconclusive", "diverged", "collapsed")
COLLAPSE_KL_NATS = 1.0  # a variational model whose mean test KL is below this: the prior
DIVERGENCE_RULE = (
    "A seed that diverged at a budget on either side (gon.app.train.loop.divergence) is left "
    "out of the entry's values and interval and counted (diverged, note); with fewer than 2 "
    "seeds left -> diverged. A likelihood claim whose models collapsed to the prior (mean test "
    f"KL under {COLLAPSE_KL_NATS:g} nat on either side) -> collapsed, not ranked.")
KS = (2, 3, 5)  # claim e: k latent steps against one
# trial name -> overrides of the embedded default config (digits, SIREN, BCE, sum, one step)
TRIALS: dict[str, list[str]] = {
    "gon": [],
    "detached": ["encoder=detached"],
    "mean": ["latent_reduction=mean"],
    "autoencoder": ["encoder=autoencoder"],
    "autoencoder_matched": ["encoder=autoencoder_matched"],
    "modulated_matched": ["block=modulated"],  # hidden_dim solved to the GON's parameters
    "modulated_linear": ["block=modulated", "block.linear_map=true"],  # the same hidden_dim
    "k1_learned": ["model.step_size=per_dim"],
    **{f"k{k}_{s}": [f"model.latent_updates={k}", f"model.step_size={step}"]
       for k in KS for s, step in (("fixed", "fixed"), ("learned", "per_dim"))},
    # claim f: binary pixels (one fixed draw), so the negative ELBO bounds -log p(x)
    "variational": ["encoder=variational", "dataset.binarize=fixed"],
    "vae": ["encoder=vae", "dataset.binarize=fixed"],
}
FIGURES = ("step", "seconds", "mse", "psnr", "nelbo", "kl", "diverged")  # a trial's scores at
# a budget (nelbo, kl: the variational trials only; diverged: None or why)
# (claim, name, contender, baseline, measure, statement, anchor figure)
COMPARISONS: list[tuple[str, str, str, str, str, str, str]] = [
    ("a", "second_order", "gon", "detached", "mse_ratio",
     "the second-order path matters: cutting it (detached latents) raises the test MSE",
     "Julia port, official conv-GON, MNIST 32x32: detached 1.5x worse at epoch 1, 3.2x at 5, "
     "17x at 500"),
    ("b", "sum_removes_batch_bias", "gon", "mean", "batch_dependence",  # after `steps`
     "a latent loss summed over the batch makes a latent independent of its batch",
     "gon-pytorch README: the mean biases latents by the batch size (no figure)"),
    ("b", "sum_learns_faster", "gon", "mean", "mse_ratio",
     "the summed latent loss learns faster than the mean (official) one",
     "no published figure"),
    ("c", "gon_vs_autoencoder", "gon", "autoencoder", "mse_ratio",
     "GON reconstructs better than an autoencoder with the same decoder (twice its parameters)",
     "paper: lower error than autoencoders with half the parameters; Julia port: the AE 1.2x "
     "worse at epoch 1, 1.65x at 5, better after ~100 epochs"),
    ("c", "gon_vs_autoencoder_matched", "gon", "autoencoder_matched", "mse_ratio",
     "GON reconstructs better than an autoencoder with as many parameters",
     "paper: lower error than autoencoders with half the parameters"),
    ("d", "modulated_vs_siren", "modulated_matched", "gon", "mse_ratio",
     "a modulated SIREN reconstructs better than a concatenated SIREN of equal parameters",
     "Mehta et al. 2021 (no GON figure)"),
    ("d", "linear_map_vs_mlp", "modulated_linear", "modulated_matched", "mse_ratio",
     "a linear latent-to-modulation map reconstructs better than the ReLU MLP map (same width)",
     "functa (Dupont et al. 2022): a linear map by default; its maintainers report a deeper "
     "map trains worse (no figure)"),
    ("e", "k1_learned_vs_one_step", "k1_learned", "gon", "gain_db",
     "a learned per-dimension step size (meta-SGD) gains over the fixed step",
     "COIN++ CIFAR-10: 3 -> 10 inner steps add 0.29-0.61 dB"),
    *[("e", f"k{k}_{s}_vs_one_step", f"k{k}_{s}", "gon", "gain_db",
       f"{k} latent steps ({s} step sizes) gain over one step",
       "COIN++ CIFAR-10: 3 -> 10 inner steps add 0.29-0.61 dB")
      for k in KS for s in ("fixed", "learned")],
    ("f", "variational_gon_vs_vae", "variational", "vae", "nelbo_ratio",
     "the variational GON reaches a lower test negative ELBO than a VAE with the same decoder",
     "Julia port, MNIST: test negative ELBO 193.9 (GON) vs 159.6 (VAE) nats at epoch 5, "
     "149.9 vs 140.3 after 1000 epochs: the VAE ahead by 21 % and 7 %"),
]
# the trials whose batch dependence a claim reads (contender and baseline of its comparisons)
PROBED = frozenset(n for c in COMPARISONS if c[4] == "batch_dependence" for n in c[2:4])


def verdict(lo: float, hi: float, null: float) -> str:
    """holds if the interval lies above `null` (the claimed side), does_not_hold if below."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    return "holds" if lo > null else "does_not_hold" if hi < null else "inconclusive"


def batch_verdict(contender: Sequence[float], baseline: Sequence[float]) -> str:
    if max(contender) > BATCH_TOL:
        return "does_not_hold"
    return "holds" if min(baseline) > BATCH_TOL else "inconclusive"


def compare(measure: str, contender: list[dict], baseline: list[dict]) -> dict[str, Any]:
    """Per-seed figures (rows: one per seed, same order) -> values, mean, ci95, verdict over
    the seeds where neither side diverged ("used": their indices, "n": how many), the
    "diverged" count per side and a "note" saying what was left out or collapsed."""
    diverged = {who: sum(bool(r.get("diverged")) for r in rows)
                for who, rows in (("contender", contender), ("baseline", baseline))}
    used = [i for i, (c, b) in enumerate(zip(contender, baseline, strict=True))
            if not c.get("diverged") and not b.get("diverged")]
    notes = [f"{k} of {len(contender)} {who} seeds diverged" for who, k in diverged.items() if k]
    out: dict[str, Any] = {"diverged": diverged, "used": used, "n": len(used)}
    if notes:
        notes[-1] += f"; left out, the figures are over the other {len(used)}"
    kl = {who: [rows[i]["kl"] for i in used if "kl" in rows[i]]
          for who, rows in (("contender", contender), ("baseline", baseline))}
    collapsed = [who for who, v in kl.items() if v and statistics.fmean(v) < COLLAPSE_KL_NATS]
    if collapsed:
        notes.append(f"{' and '.join(collapsed)} collapsed to the prior (mean KL under "
                     f"{COLLAPSE_KL_NATS:g} nat)")
    if len(used) < 2 and any(diverged.values()):
        ci = None if measure == "batch_dependence" else [math.nan, math.nan]
        return out | {"values": [], "mean": math.nan, "ci95": ci, "verdict": "diverged",
                      "note": "; ".join(notes)}
    figures = _figures(measure, [contender[i] for i in used], [baseline[i] for i in used])
    return out | figures | {"verdict": "collapsed" if collapsed else figures["verdict"],
                            "note": "; ".join(notes)}


def _figures(measure: str, contender: list[dict], baseline: list[dict]) -> dict[str, Any]:
    """values, mean, ci95 and verdict of the seeds' rows (one per seed, same order)."""
    if measure == "batch_dependence":
        values = [r["batch_dependence"] for r in contender]
        base = [r["batch_dependence"] for r in baseline]
        return {"values": values, "baseline_values": base, "mean": max(values), "ci95": None,
                "verdict": batch_verdict(values, base)}
    if measure in ("mse_ratio", "nelbo_ratio"):
        key = measure.removesuffix("_ratio")
        values = [b[key] / c[key] for c, b in zip(contender, baseline, strict=True)]
        lo, hi = ci95([math.log(v) for v in values])
        mean = math.exp(statistics.fmean(math.log(v) for v in values))  # geometric mean
        return {"values": values, "mean": mean, "ci95": [math.exp(lo), math.exp(hi)],
                "verdict": verdict(lo, hi, 0.0)}
    if measure == "gain_db":
        values = [c["psnr"] - b["psnr"] for c, b in zip(contender, baseline, strict=True)]
        lo, hi = ci95(values)
        return {"values": values, "mean": statistics.fmean(values), "ci95": [lo, hi],
                "verdict": verdict(lo, hi, 0.0)}
    raise ValueError(f"unknown measure {measure!r}; choose mse_ratio, nelbo_ratio, gain_db, "
                     "batch_dependence")


def entries(results: dict[str, list[dict]], seeds: list[int]) -> list[dict[str, Any]]:
    """The claims table from the trials' results: results[trial] is one row per seed, each
    {"params", "batch_dependence", "at_steps": {step, seconds, mse, psnr}, "at_time": {..}}."""
    out = []
    for claim, name, cont, base, measure, statement, anchor in COMPARISONS:
        budgets = ("final",) if measure == "batch_dependence" else BUDGETS
        for budget in budgets:
            key = "at_steps" if budget in ("steps", "final") else "at_time"
            rows_c = [r[key] | {"batch_dependence": r.get("batch_dependence")}
                      for r in results[cont]]
            rows_b = [r[key] | {"batch_dependence": r.get("batch_dependence")}
                      for r in results[base]]
            figures = {who: {k: [r[k] for r in rows] for k in FIGURES if k in rows[0]}
                       for who, rows in (("contender", rows_c), ("baseline", rows_b))}
            verdicts = compare(measure, rows_c, rows_b)
            out.append({
                "id": f"{claim}.{name}@{budget}", "claim": claim, "name": name,
                "statement": statement, "budget": budget, "contender": cont, "baseline": base,
                "measure": measure, "seeds": seeds,
                "seeds_used": [seeds[i] for i in verdicts.pop("used")],
                "params": {"contender": results[cont][0]["params"],
                           "baseline": results[base][0]["params"]},
                **verdicts, "figures": figures, "anchor": anchor,
            })
    return out


def load_claims(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None
