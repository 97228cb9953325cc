"""Write docs/results.md from the committed JSON, so that no measured number is copied by hand.

    python tools/results_page.py            # regenerate docs/results.md
    python tools/results_page.py --check    # exit 1 if docs/results.md is not what the JSON gives

Sources, in this order: reports/metrics.json (the variants of `dvc repro`), reports/claims.json
(the claims of `dvc repro`), then every benchmarks/results/*.json by name. Each JSON is drawn by
the renderer its "kind" names (RENDERERS; a claims file is recognised by its "setup" and
"entries"); any other JSON is drawn generically: "title", "command" and "setup" become the
section's head, a "rows" list of flat objects a table, every other value a key | value table.
Standard library only (no torch), so the page and its test run anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("docs/results.md")
FIXED = (Path("reports/metrics.json"), Path("reports/claims.json"))
BENCHMARKS = Path("benchmarks/results")
HEAD_KEYS = ("title", "kind", "command", "setup", "note", "rows")


def fmt(x: Any, digits: int = 3) -> str:
    """A number to `digits` significant figures; lists joined by ", "; anything else as str."""
    if isinstance(x, bool) or x is None:
        return str(x).lower() if isinstance(x, bool) else "null"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    if isinstance(x, list) and all(not isinstance(v, (dict, list)) for v in x):
        return ", ".join(fmt(v, digits) for v in x)
    if isinstance(x, (dict, list)):
        return json.dumps(x, sort_keys=True)
    return str(x)


def cell(x: Any, digits: int = 3) -> str:
    """One markdown table cell: formatted, with pipes escaped and on one line."""
    return fmt(x, digits).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]], digits: int = 3) -> list[str]:
    """A markdown table (header and rows of cells)."""
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(cell(c, digits) for c in r) + " |" for r in rows]
    return out


def source_line(path: Path, setup: str) -> str:
    return f"Source: `{path.as_posix()}`" + (f"; {setup}" if setup else "") + "."


def setup_text(setup: Any) -> str:
    """A JSON "setup": a string as is, an object as `key: value` pairs of its scalars and lists
    (and of its flat objects, as `key: k v, k v`)."""
    if isinstance(setup, dict):
        return "; ".join(
            f"{k}: " + (", ".join(f"{a} {fmt(b, 4)}" for a, b in v.items())
                        if isinstance(v, dict) else fmt(v, 4))
            for k, v in setup.items()
            if not isinstance(v, dict) or not any(isinstance(b, (dict, list)) for b in v.values()))
    return "" if setup is None else str(setup)


def render_metrics(data: dict[str, Any], path: Path) -> list[str]:
    """reports/metrics.json: one row per variant, best place first, mean [95 % CI] per metric."""
    variants = {k: v for k, v in data.items()
                if k != "best" and isinstance(v, dict) and "rank" in v}
    metrics = list(dict.fromkeys(m for v in variants.values() for m, s in v.items()
                                 if isinstance(s, dict) and "mean" in s))
    first = next(iter(variants.values()), {})
    setup = f"seeds {fmt(first.get('seeds'))}, {first.get('steps')} training steps per run"
    if data.get("complete") is False:
        setup += "; PARTIAL sweep (see `complete`, `failed_trials` in the file)"
    rows = []
    for name, v in sorted(variants.items(), key=lambda kv: (kv[1]["rank"], -psnr(kv[1]))):
        n = next((s.get("n") for s in v.values() if isinstance(s, dict) and "n" in s), None)
        cells = [f"`{name}`", v["rank"], v.get("params"), n]
        for m in metrics:
            s = v.get(m) or {"mean": ""}
            ci = ("" if s.get("ci95_low") is None
                  else f" [{fmt(s['ci95_low'], 4)}, {fmt(s['ci95_high'], 4)}]")
            cells.append(f"{fmt(s['mean'], 4)}{ci}")
        rows.append(cells)
    return [source_line(path, setup + " (test split; mean [95 % t-interval] over the seeds; "
                        "place by the rule of [statistics](statistics.md))"), "",
            *table(["variant", "place", "params", "n", *metrics], rows, 4)]


def psnr(variant: dict[str, Any]) -> float:
    """A variant's mean test PSNR (0 without one), the order within a shared place."""
    return (variant.get("psnr") or {}).get("mean") or 0.0


def entry_summary(e: dict[str, Any]) -> str:
    if e.get("ci95") is None and "baseline_values" in e:  # the batch dependence
        return f"max {fmt(e['mean'])} ({e['baseline']}'s min {fmt(min(e['baseline_values']))})"
    if e.get("ci95") is None:
        return fmt(e["mean"])
    return f"{fmt(e['mean'])} [{fmt(e['ci95'][0])}, {fmt(e['ci95'][1])}]"


def render_claims(data: dict[str, Any], path: Path) -> list[str]:
    """A claims file (gon.claims' claims.json): the setup, the rule, one row per entry."""
    s = data["setup"]
    setup = (f"{s.get('dataset')}, seeds {fmt(s.get('seeds'))}, {s.get('steps')} steps; "
             f"equal time {fmt(s.get('time_budget_s'))} CPU-s of training; "
             f"{s.get('jobs')} jobs; the run took {fmt(s.get('wall_s'))} s wall, "
             f"{fmt(s.get('cpu_s'))} CPU-s")
    if s.get("overrides"):
        setup += f"; overrides {fmt(s['overrides'])}"
    rows = [[f"`{e['id']}` ({e['measure']})",
             f"{e['contender']} / {e['baseline']} ({e['params']['contender']} / "
             f"{e['params']['baseline']})", fmt(e["values"]), entry_summary(e),
             e["verdict"] + (f" ({e['note']})" if e.get("note") else ""),
             e.get("anchor", "") if e.get("budget") != "time" else "same as @steps"]
            for e in data["entries"]]
    return [source_line(path, setup), "", f"Rule: {s.get('rule', '')}", "",
            *([f"Diverged seeds and collapsed models: {s['divergence_rule']}", ""]
              if s.get("divergence_rule") else []),
            *table(["entry", "contender / baseline (params)", "per seed", "mean [95 % CI]",
                    "verdict (note)", "published anchor"], rows)]


def render_quality(data: dict[str, Any], path: Path) -> list[str]:
    """benchmarks/quality.py --json: test PSNR at the step budget and at the baseline's time."""
    rows = []
    for r in data["rows"]:
        earlier = sorted((k for k in r if k.startswith("at_") and k.endswith("_steps")
                          and k != "at_steps"), key=lambda k: int(k[3:-6]))
        for at in (*earlier, "at_steps", "at_time"):  # quality.py --target: earlier budgets
            a = r.get(at)
            if a:
                rows.append([f"`{r['config']}`", r["role"], at.replace("_", " "),
                             f"{fmt(a['psnr_mean'], 4)} [{fmt(a['ci95'][0], 4)}, "
                             f"{fmt(a['ci95'][1], 4)}]", fmt(a["psnr"], 4),
                             fmt(a["steps_mean"], 4), fmt(a["seconds_mean"], 4), r["params"],
                             fmt(r["val_fall_db"], 3) if r.get("val_fall_db") and
                             at == "at_steps" else ""])
    return [source_line(path, setup_text(data.get("setup"))), "",
            f"Command: `{data.get('command', '')}`", "",
            *table(["config", "role", "scored", "test PSNR dB [95 % CI]", "per seed",
                    "steps", "training CPU-s", "params",
                    "validation curve's largest fall after its first quarter, dB, per seed"],
                   rows), *curve_tables(data)]


def curve_tables(data: dict[str, Any]) -> list[str]:
    """Each candidate's mean validation curve (quality.py --curve-every) against steps and
    training CPU seconds, and the published anchor's points beside it."""
    out: list[str] = []
    for r in data["rows"]:
        if r.get("val_curve_mean"):
            out += ["", f"Validation curve of `{r['config']}`, the mean of "
                    f"{len(r['val_curves'])} seeds:", "",
                    *table(["step", "training CPU-s", "validation PSNR dB [95 % CI]"],
                           [[p["step"], fmt(p["seconds"], 3), f"{fmt(p['psnr'], 4)} "
                             f"[{fmt(p['ci95'][0], 4)}, {fmt(p['ci95'][1], 4)}]"]
                            for p in r["val_curve_mean"]])]
    if out and (anchor := data.get("anchor")):
        out += ["", f"Anchor, {anchor['source']}: " + ", ".join(
            f"epoch {e} ({n} steps) {db} dB" for e, n, db in anchor["points"])]
    return out


def render_generic(data: Any, path: Path) -> list[str]:
    """Any other JSON: its head keys, a "rows" table, then every other value as key | value."""
    body = data if isinstance(data, dict) else {"value": data}
    out = [source_line(path, setup_text(body.get("setup")))]
    for key in ("command", "note"):
        if body.get(key):
            out += ["", f"{key.capitalize()}: `{body[key]}`" if key == "command"
                    else str(body[key])]
    rows = body.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        header = list(dict.fromkeys(k for r in rows for k in r))
        out += ["", *table(header, [[r.get(k, "") for k in header] for r in rows], 4)]
    flat = flatten({k: v for k, v in body.items() if k not in HEAD_KEYS})
    if flat:
        out += ["", *table(["key", "value"], [[f"`{k}`", v] for k, v in flat], 4)]
    return out


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects as dotted keys; lists of scalars stay one value."""
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [kv for i, v in enumerate(value) for kv in flatten(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), value)]


Renderer = Callable[[Any, Path], list[str]]
# a JSON's "kind" -> its renderer; a benchmark that writes a new kind may add one here
RENDERERS: dict[str, Renderer] = {"metrics": render_metrics, "claims": render_claims,
                                  "quality": render_quality, "generic": render_generic}


def kind_of(path: Path, data: Any) -> str:
    if path == FIXED[0]:
        return "metrics"
    if isinstance(data, dict):
        if {"setup", "entries"} <= data.keys():
            return "claims"
        if data.get("kind") in RENDERERS:
            return data["kind"]
    return "generic"


def title_of(path: Path, data: Any, kind: str) -> str:
    if isinstance(data, dict) and isinstance(data.get("title"), str):
        return data["title"]
    if path in FIXED:
        return f"{'Variants' if kind == 'metrics' else 'Claims'} (dvc repro)"
    return f"Claims ({path.stem})" if kind == "claims" else path.stem


def slug(title: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def sources(root: Path) -> list[Path]:
    bench = sorted((root / BENCHMARKS).glob("*.json"))
    return [p for p in FIXED if (root / p).exists()] + [p.relative_to(root) for p in bench]


def verdict_rows(claims: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    """One row per claims entry id, one verdict per claims file."""
    ids = list(dict.fromkeys(e["id"] for _, d in claims for e in d["entries"]))
    by = [{e["id"]: e["verdict"] for e in d["entries"]} for _, d in claims]
    return [[f"`{i}`", *(v.get(i, "") for v in by)] for i in ids]


def render(root: Path = ROOT) -> str:
    """The whole page, from the JSON under `root`."""
    sections: list[tuple[str, list[str]]] = []
    claims: list[tuple[str, dict[str, Any]]] = []
    for path in sources(root):
        data = json.loads((root / path).read_text())
        kind = kind_of(path, data)
        title = title_of(path, data, kind)
        if kind == "claims":
            claims.append((f"{title}: {data['setup'].get('steps')} steps", data))
        sections.append((title, RENDERERS[kind](data, path)))
    if len(claims) > 1:
        sections.insert(0, ("Claims verdicts by budget", [
            "The verdict of each claims entry in every claims file below, side by side.", "",
            *table(["entry", *(t for t, _ in claims)], verdict_rows(claims))]))
    lines = ["# Results", "",
             "<!-- GENERATED by `python tools/results_page.py` from committed JSON: do not edit."
             " tests/test_docs.py fails when this page and the JSON disagree. -->", "",
             "Every figure here is read from a committed JSON file, named under its heading. "
             "How each is measured and how to read it: [statistics](statistics.md) (the "
             "variants, the claims, the quality benchmark), [library](library.md) (step "
             "speed), [GPUs and clusters](gpus-and-clusters.md). A rerun that writes the JSON, "
             "then `python tools/results_page.py`, updates this page.", "", "## Contents", ""]
    lines += [f"- [{t}](#{slug(t)})" for t, _ in sections]
    for title, body in sections:
        lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare, do not write")
    args = p.parse_args(argv)
    text, page = render(ROOT), ROOT / PAGE
    if args.check:
        same = page.exists() and page.read_text() == text
        print(f"{PAGE}: {'up to date' if same else 'differs from the JSON; regenerate it'}")
        return 0 if same else 1
    page.parent.mkdir(exist_ok=True)
    page.write_text(text)
    print(f"wrote {PAGE} from {len(sources(ROOT))} JSON files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
