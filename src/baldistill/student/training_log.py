"""The training log, written through dvclive, DVC's own logger.

One dvclive folder per stage (layout.StagePaths.train_live, metrics/<stage>/train/),
so the K stages never overwrite each other. Per optimiser step it appends to
plots/metrics/<name>.tsv (columns `step`, `<name>`; step counts optimiser steps
from 1): the loss (mean over the step's micro-batches and processes), the
learning rate the step used, tokens/s of that step, the fractional epoch and
the cumulative non-padding tokens. metrics.json holds the last step's values
and the run's summary (rows, seconds, peak memory, accumulation...). These
files are the only record of a training run: dvc.yaml declares them as the
train step's metrics and plots, so `dvc exp show`, `dvc plots diff` and DVC's
editor extension read them, and they update after every step during
`dvc exp run`.

dvclive is told to leave DVC's side to DVC: no dvc.yaml of its own
(dvcyaml=None, since ours declares the files), no experiment save or commit
(save_dvc_exp=False; `dvc exp run` saves the experiment), no report, no
timestamps in the TSVs (only tokens_per_s and the summary's seconds depend on
the clock, so the rest of the outputs are the same on every re-run).
dvclive opens the DVC project it runs in; run training from the project root.
"""

from __future__ import annotations

import csv
from pathlib import Path

from dvclive import Live

STEP_METRICS = ("loss", "lr", "tokens_per_s", "epoch", "tokens")
PLOTS = Path("plots") / "metrics"  # dvclive's layout inside its folder


def open_log(live_dir: str | Path) -> Live:
    """A fresh log in `live_dir` (dvclive removes what an earlier run left there)."""
    return Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)


def log_step(live: Live, record: dict) -> None:
    """One optimiser step's `STEP_METRICS`, at dvclive step `record["step"]`;
    metrics.json is rewritten, so a running experiment shows it at once."""
    live.step = record["step"]
    for name in STEP_METRICS:
        live.log_metric(name, record[name])
    live.next_step()


def close_log(live: Live, summary: dict) -> None:
    """Add the run's summary to metrics.json and close the log.

    With no step logged (a policy that does not train) the step files are
    still written, header only, so every stage has the same outputs."""
    for name in STEP_METRICS:
        path = Path(live.dir) / PLOTS / f"{name}.tsv"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{name}\n")
    live.summary.update(summary)
    live.end()


def read_log(live_dir: str | Path) -> list[dict]:
    """The logged steps, one dict per step: {"step": 1, "loss": ..., "lr": ..., ...}."""
    steps: dict[int, dict] = {}
    for name in STEP_METRICS:
        with open(Path(live_dir) / PLOTS / f"{name}.tsv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                step = int(row["step"])
                value = float(row[name])
                steps.setdefault(step, {"step": step})[name] = int(value) if name == "tokens" else value
    return [steps[step] for step in sorted(steps)]
