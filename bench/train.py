"""Training throughput and peak memory of the real student, per micro-batch size.

Runs `baldistill.student.training.train` itself (not a copy of its loop) on synthetic
rows whose prompt and rationale fill params.student.max_input_tokens and
max_rationale_tokens, i.e. the longest rows a stage can train on. Each
micro-batch size runs in its own process so peak RSS is that run's own.

    python bench/train.py                       # micro-batch 4 and 8, default params
    python bench/train.py --micro 4 8 --steps 3 --threads 2

Prints a table and the command that produced it. Other jobs on the machine
share the CPU, so the 1-minute load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

WORDS = (
    "the company said net profit rose in the quarter on higher sales of its products while analysts "
    "expected lower shipments and the board approved a dividend payable next month to shareholders"
).split()


def synthetic_rows(n: int):
    from baldistill.core.rows import Row

    rows = []
    for i in range(n):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(400))  # ~1,500 chars, > 256 tokens
        rationale = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(200)) + ". The answer is earn."
        rows.append(Row(id=str(i), domain="earn", input=text, label="earn", rationale=rationale))
    return rows


def run_one(micro: int, steps: int, model: str) -> dict:
    """Train `steps` optimiser steps of one micro-batch each (no accumulation)."""
    from baldistill.core.params import Params
    from baldistill.student.training import train

    params = Params.model_validate(
        {
            "budget": {"total": 1},
            "stages": {"s0": "start"},
            "student": {"model": model},
            "train": {"batch_size": micro, "micro_batch_size": micro, "epochs": 1},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(
            synthetic_rows(micro * steps), params.train, params.student, "classification", f"{tmp}/a", f"{tmp}/log"
        )
    summary["seq_tokens"] = summary["tokens"] // (micro * steps)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", type=int, nargs="+", default=[4, 8], help="micro-batch sizes to measure")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per size")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size, JSON out
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.steps, args.model)), flush=True)
        return
    rows = []
    for micro in args.micro:
        child = [sys.executable, __file__, "--one", str(micro), "--steps", str(args.steps), "--model", args.model]
        child += ["--threads", str(args.threads)] if args.threads else []
        out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        rows.append((micro, result, os.getloadavg()[0]))
    print(f"\nstudent {args.model}, {args.steps} steps per size, {os.cpu_count()} CPUs, fp32, LoRA defaults")
    print("| micro-batch | tokens/row | steps | tokens | seconds | s/step | tokens/s | peak RSS MB | load 1m |")
    print("|---|---|---|---|---|---|---|---|---|")
    for micro, r, load in rows:
        print(
            f"| {micro} | {r['seq_tokens']} | {r['steps']} | {r['tokens']} | {r['seconds']:.1f} | "
            f"{r['seconds'] / r['steps']:.1f} | {r['overall_tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {load:.2f} |"
        )
    print("\nreproduce: python " + shlex.join(["bench/train.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
