"""One W&B dir per sweep, seen as a user sees it: every trial of a multirun logs into
<sweep>/wandb, gon-evaluate links them (and the claims run) into <reports>/wandb next to its eval
and summary runs, and `wandb leet <reports>/wandb`, driven in tmux, lists every run and overlays
the val/psnr curves of the two runs selected with the space bar.

$ python -m pytest tests/test_wandb_view.py -q          # the leet test is slow (about 30 s)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run, subprocess_env, train_cli
from wandb_reader import read_run, wandb_cli

from gon.app.evaluate.report import REVISION
from gon.app.tracking import gather_runs, init_run, offline_runs, stable_id

TMUX = shutil.which("tmux")
SGR = re.compile(r"\x1b\[([0-9;]*)m")
BRAILLE = re.compile("[\u2801-\u28ff]")  # a chart's plotted cells (U+2800 is blank)


def _run_id(folder: Path) -> str:
    return folder.name.rsplit("-", 1)[1]


@pytest.mark.slow  # three W&B runs: about 10 s
def test_gather_keeps_one_newest_copy_per_run(wandb_offline: Path) -> None:
    """Sources with the same run id twice (a resumed run) and another run: gathered (twice)
    into one dir, one folder per id, the newest, hard-linked rather than copied."""
    for src, run_id in (("a", "r1"), ("b", "r2"), ("b", "r1")):  # b's r1 is the newer copy
        with init_run(project="gon", dir=str(wandb_offline / src), id=run_id, mode="offline",
                      reinit="finish_previous") as r:
            r.log({"x": 1.0 if src == "a" else 2.0})
        time.sleep(1.1)  # the folder names hold the start time in seconds
    dest = wandb_offline / "reports" / "wandb"
    dest.mkdir(parents=True)
    sources = [wandb_offline / "a" / "wandb", wandb_offline / "b" / "wandb"]
    for _ in range(2):
        assert gather_runs(sources, dest) == 2
        assert sorted(_run_id(p) for p in offline_runs(dest)) == ["r1", "r2"]
    (r1,) = offline_runs(dest, "r1")
    (newest,) = offline_runs(sources[1], "r1")
    assert r1.name == newest.name and read_run(r1)["history"][-1]["x"] == 2
    log = next(r1.glob("*.wandb"))
    assert log.stat().st_ino == (newest / log.name).stat().st_ino  # a link, not a copy
    assert not (dest / "latest-run").exists()  # run folders only


def _chars(line: str) -> list[tuple[str, str | None]]:
    """(character, 256-colour foreground or None) for every cell of a `capture-pane -e` line."""
    out, fg, pos = [], None, 0
    for m in SGR.finditer(line + "\x1b[m"):
        out += [(c, fg) for c in line[pos:m.start()]]
        pos = m.end()
        codes = m.group(1).split(";") if m.group(1) else ["0"]
        i = 0
        while i < len(codes):
            if codes[i] == "38" and codes[i + 1:i + 2] == ["5"]:
                fg, i = codes[i + 2], i + 3
                continue
            if codes[i] == "38" and codes[i + 1:i + 2] == ["2"]:
                fg, i = ";".join(codes[i + 2:i + 5]), i + 5
                continue
            if codes[i] in ("0", "39"):
                fg = None
            i += 1
    return out


class Pane:
    """A fixed-size tmux window on a private server, running one command."""

    def __init__(self, command: list[str], tmp: Path, width: int = 260, height: int = 60):
        self.tmux = [TMUX, "-L", f"gon-test-{os.getpid()}", "-f", "/dev/null"]
        env = {**subprocess_env(tmp), "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "config"),
               "TERM": "xterm-256color"}
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "leet", "-x", str(width),
                        "-y", str(height), *map(str, command)], env=env, check=True)

    def text(self, colours: bool = False) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", *(["-e"] if colours else []),
                               "-t", "leet"], capture_output=True, text=True, check=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "leet", *keys], check=True)

    def wait(self, condition, timeout: float = 30, what: str = "") -> str:
        """Poll the pane until condition(text) holds; the pane's text then."""
        deadline = time.monotonic() + timeout
        while not condition(text := self.text()):
            assert time.monotonic() < deadline, f"leet never showed {what}:\n{text}"
            time.sleep(0.2)
        return text

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def _rows(text: str, ids: set[str]) -> list[tuple[str, str]]:
    """(marker, run id) of the runs list, top to bottom: ▶ the primary selected run, ● another
    selected one, ○ not selected."""
    rows = []
    for line in text.splitlines()[1:]:
        m = re.match(r"\s*([▶●○])\s+offline-run-\d+_\d+-(\w+)", line)
        if m and m.group(2) in ids:
            rows.append((m.group(1), m.group(2)))
    return rows


def _cursor(text: str) -> str | None:
    """The run under the cursor: the run overview's ID."""
    m = re.search(r"ID: (\w+)", text)
    return m.group(1) if m else None


def _marker(text: str, ids: set[str], run_id: str) -> str:
    return dict((i, m) for m, i in _rows(text, ids))[run_id]


def _marks(lines: list[str]) -> dict[str, str | None]:
    """The colour of each selected run's marker (▶, ●) in the runs list."""
    marks = {}
    for line in lines:
        row = [(c, fg) for c, fg in _chars(line) if c.strip()]
        if row and row[0][0] in "▶●" and "offline-run-" in line:
            marks[row[0][0]] = row[0][1]
    return marks


def _chart_colours(lines: list[str], title: str) -> set[str]:
    """The foreground colours of the plotted cells inside the chart box titled `title`."""
    cells = [_chars(line) for line in lines]
    plain = ["".join(c for c, _ in row) for row in cells]
    top = next(i for i, line in enumerate(plain) if re.search(rf"│{re.escape(title)}\s", line))
    left = plain[top].index("│" + title)
    right = plain[top].index("│", left + 1)
    colours: set[str] = set()
    for row, line in zip(cells[top + 1:], plain[top + 1:], strict=True):
        if line[left:left + 1] == "╰":
            break
        colours |= {fg for c, fg in row[left + 1:right] if BRAILLE.match(c) and fg}
    return colours


@pytest.mark.slow
@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (.ci/run installs it)")
def test_one_leet_shows_every_run_of_a_sweep(tmp_path: Path, data_dir: Path) -> None:
    sweep, reports = tmp_path / "sweep", tmp_path / "reports"
    run(train_cli(data_dir, "logger=wandb", "train.max_steps=12", "-m", "block=siren,modulated",
                  f"hydra.sweep.dir={sweep}"), tmp_path)
    trains = {_run_id(p) for p in offline_runs(sweep / "wandb")}  # one W&B dir: both trials
    assert len(trains) == 2 and not list(sweep.glob("*/wandb"))
    evaluate = [sys.executable, "-m", "gon.evaluate", str(sweep), str(reports),
                "--probe-images", "100", "--rows", "4", "--device", "cpu"]
    for _ in range(2):  # a second evaluation replaces its runs and the links
        out = run(evaluate, tmp_path)
        assert f"wandb leet {reports / 'wandb'}" in out, out[-2000:]
    names = [f"none-{b}-bce-sum" for b in ("siren", "modulated")]
    ids = trains | {stable_id("sweep", "eval", n, REVISION) for n in names} | {
        stable_id("sweep", "summary", REVISION)}
    assert {_run_id(p) for p in offline_runs(reports / "wandb")} == ids  # 5 runs, each once
    assert json.loads((reports / "headline.json").read_text())["wandb"] == {
        "project": "gon", "group": "sweep"}

    sync = subprocess.run([wandb_cli(), "sync", "--dry-run", "-p", "gon", reports / "wandb"],
                          env=subprocess_env(tmp_path), capture_output=True, text=True, check=True)
    assert "Would sync 5 run(s)" in sync.stdout + sync.stderr  # one sync command reaches all
    _select_and_overlay(reports / "wandb", ids, trains, tmp_path)


def _select_and_overlay(wandb_dir: Path, ids: set[str], trains: set[str], tmp: Path) -> None:
    """In tmux, `wandb leet <wandb_dir>` lists the runs `ids`; the space bar selects the runs
    `trains` (and only them); their val/psnr curves are then drawn in one chart."""
    pane = Pane([wandb_cli(), "leet", wandb_dir], tmp)
    try:
        text = pane.wait(lambda t: {i for _, i in _rows(t, ids)} == ids and _cursor(t),
                         what="every run of the sweep in its runs list")
        assert "Runs [5 items]" in text
        order = [i for _, i in _rows(text, ids)]
        for run_id in order:  # select exactly the two train runs with the space bar
            while (at := _cursor(pane.text())) != run_id:  # the overview shows the cursor's run
                step = 1 if order.index(run_id) > order.index(at) else -1
                pane.keys("s" if step > 0 else "w")  # one key at a time: a burst drops keys
                to = order[order.index(at) + step]
                pane.wait(lambda t, to=to: _cursor(t) == to, what=f"the cursor on {to}")
            if (_marker(pane.text(), ids, run_id) != "○") != (run_id in trains):
                pane.keys("Space")
                pane.wait(lambda t, r=run_id: (_marker(t, ids, r) != "○") == (r in trains),
                          what=f"{run_id} toggled")
        text = pane.text()
        assert {i for m, i in _rows(text, ids) if m != "○"} == trains, text
        assert re.search(r"Name: none-\w+-bce-sum/seed0", text), text  # the last row: a trial
        pane.keys("/")  # the metrics filter: the val/psnr chart alone
        pane.wait(lambda t: "Filter (regex):" in t, what="the metrics filter")
        pane.keys("-l", "val/psnr$")
        pane.wait(lambda t: "val/psnr$" in t, what="the typed filter")
        pane.keys("Enter")
        pane.wait(lambda t: "Metrics [1-1 of 1 filtered" in t and "│val/psnr " in t,
                  what="the val/psnr chart")

        def overlaid() -> bool:  # both selected runs' colours drawn in the val/psnr chart
            lines = pane.text(colours=True).splitlines()
            marks = _marks(lines)
            return len(set(marks.values())) == 2 and set(marks.values()) <= _chart_colours(
                lines, "val/psnr")

        pane.wait(lambda _: overlaid(), what="both selected runs in the val/psnr chart")
    finally:
        pane.close()
