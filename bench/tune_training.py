"""Choose the training settings on the validation split (never the test set).

Trains a fresh LoRA per setting on one fixed training set (by default the last
stage's data/stages/<stage>/train.jsonl of a finished run), scores each on the
validation rows held out of the pool (data/prepared/validation.jsonl), and
prints per setting: optimiser steps, first/last training loss (mean of the
first and last three steps), validation macro/micro, answer-sentence rate, and
seconds. The zero-shot student is scored on the same rows as the reference.
The same settings then hold for every policy: nothing here looks at a policy.

    python bench/tune_training.py --set lr=0.0002,batch_size=16 --set lr=0.001,batch_size=4
    python bench/tune_training.py --train data/stages/s1/train.jsonl --json docs/results/tuning.json

Run it from a project whose `dvc repro` has finished (it reads data/prepared/).
Do not run it beside the local teacher: both want every core.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time


def parse_setting(text: str) -> dict:
    """'lr=0.001,batch_size=4,epochs=3' -> {'lr': 0.001, 'batch_size': 4, 'epochs': 3}."""
    out = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=", 1)
        out[key.strip()] = json.loads(value)
    return out


def loss_ends(live_dir: str) -> tuple[float, float, int]:
    from baldistill.student.training_log import read_log

    losses = [step["loss"] for step in read_log(live_dir)]
    head, tail = losses[:3], losses[-3:]
    return sum(head) / len(head), sum(tail) / len(tail), len(losses)


def score(params, adapter: str | None, rows) -> dict:
    from baldistill.core import layout
    from baldistill.core.dataset_info import DatasetInfo
    from baldistill.core.files import read_json
    from baldistill.student.evaluation import evaluate

    info = DatasetInfo.load(layout.INFO)
    started = time.perf_counter()
    metrics, _ = evaluate(
        rows,
        params.evaluate,
        params.student,
        info.head_threshold,
        info.task,
        info.labels,
        read_json(layout.COUNTS),
        adapter,
    )
    keep = ("macro", "micro", "head", "tail", "answer_sentence_rate")
    return {**{k: metrics[k] for k in keep}, "eval_seconds": round(time.perf_counter() - started, 1)}


def run(train_path: str, settings: list[dict], zero_shot: bool) -> list[dict]:
    from baldistill.core import layout
    from baldistill.core.dataset_info import DatasetInfo
    from baldistill.core.params import load_params
    from baldistill.core.rows import read_rows
    from baldistill.student.training import train

    params = load_params()
    info = DatasetInfo.load(layout.INFO)
    rows, validation = read_rows(train_path), read_rows(layout.scored_rows("validation"))
    print(f"{len(rows)} training rows from {train_path}, {len(validation)} validation rows", file=sys.stderr)
    results = []
    if zero_shot:
        results.append({"setting": "zero-shot", **score(params, None, validation)})
        print(json.dumps(results[-1]), file=sys.stderr)
    for setting in settings:
        cfg = params.train.model_copy(update=setting)
        if "batch_size" in setting and "micro_batch_size" not in setting:
            cfg = cfg.model_copy(update={"micro_batch_size": min(cfg.micro_batch_size, cfg.batch_size)})
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(rows, cfg, params.student, info, f"{tmp}/adapter", f"{tmp}/log")
            first, last, steps = loss_ends(f"{tmp}/log")
            scores = score(params, f"{tmp}/adapter", validation)
        label = ",".join(f"{k}={v}" for k, v in setting.items()) or "params.yaml"
        results.append(
            {
                "setting": label,
                "steps": steps,
                "loss_first3": round(first, 3),
                "loss_last3": round(last, 3),
                "train_seconds": round(summary["seconds"], 1),
                **scores,
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def table(results: list[dict]) -> str:
    cols = ["setting", "steps", "loss_first3", "loss_last3", "macro", "micro", "head", "tail"]
    cols += ["answer_sentence_rate", "train_seconds", "eval_seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        cells = [r.get(c, "") for c in cols]
        lines.append("| " + " | ".join(f"{c:.4f}" if isinstance(c, float) and c < 1 else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/stages/s1/train.jsonl")
    parser.add_argument("--set", action="append", default=[], help="train.* overrides, e.g. lr=0.001,batch_size=4")
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.set] or [{}]
    results = run(args.train, settings, not args.no_zero_shot)
    print(table(results))
    print(f"\nload average {os.getloadavg()[0]:.2f}; command: python {shlex.join(sys.argv)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
