"""Training throughput and peak memory of the real student; our loop against transformers' Trainer.

Default mode: `baldistill.student.training.train` itself (not a copy of its loop)
per micro-batch size, on synthetic rows whose prompt and rationale fill
params.student.max_input_tokens and max_rationale_tokens, i.e. the longest rows
a stage can train on.

--compare: transformers' Trainer (`training.train`, what the pipeline runs)
against the hand-written loop it replaced (bench/hand_training.py) on the
same R52-like rows, seed and settings (the default params' batch, lr, LoRA),
interleaved (hand loop, Trainer, hand loop, Trainer, ...; one pair per seed)
so outside load hits both alike. Per run: seconds per step, the per-step
losses, and the held-out loss of the trained adapter (16 rows no run trains
on: the same stories under other report numbers and quotes). Prints the
Trainer / hand-loop ratio of s/step per pair and against the mean of the
hand-loop runs on either side (which cancels a steady change in outside
load), and both loops' loss curves and held-out losses beside their spread
over seeds (the noise: a seed changes LoRA init, order and dropout).

Every run is its own process (peak RSS is that run's own) with torch threads
fixed (--threads). Other jobs on the machine share the CPU, so the 1-minute
load average is printed beside the numbers.

    python bench/train.py                       # micro-batch 4 and 8, default params
    python bench/train.py --micro 4 8 --steps 3 --threads 2
    python bench/train.py --compare --seeds 0 1 2 --steps 6 --threads 1
    python bench/train.py --compare --pair plain trainer --seeds 0 1 2 --steps 6 --threads 2

--pair plain trainer: the Trainer with the rows' shared prompt prefix run once per
micro-batch (train.share_prefix, the default) against the plain pass, the same way.
--pair trainer bf16: the default Trainer against it with train.precision bf16 (autocast);
grouped: with train.group_by_length; bf16-grouped: both. --rows FILE trains on a real
run's rows (their lengths vary, so grouping by length has padding to remove):
    python bench/train.py --compare --pair trainer bf16-grouped --rows data/stages/s1/train.jsonl --steps 24
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from itertools import pairwise

WORDS = (
    "the company said net profit rose in the quarter on higher sales of its products while analysts "
    "expected lower shipments and the board approved a dividend payable next month to shareholders"
).split()
# The Trainer's variants as train.* settings over the defaults (fp32 and shuffled rows unless
# named); "hand" is bench/hand_training.py.
FP32_SHUFFLED = {"precision": "fp32", "group_by_length": False}
VARIANTS = {
    "plain": {"share_prefix": False},
    "trainer": {},
    "bf16": {"precision": "bf16"},
    "grouped": {"group_by_length": True},
    "bf16-grouped": {"precision": "bf16", "group_by_length": True},
}
IMPLEMENTATIONS = ("hand", *VARIANTS)
HELD_OUT = 16  # rows after the training rows, scored by every trained adapter


def r52_info():
    """The R52 data set's info, as the pipeline's prepare step would give it (the student prompt lists its labels)."""
    from student_common import R52_LABELS

    from baldistill.core.dataset_info import DatasetInfo

    return DatasetInfo("R52", "classification", R52_LABELS)


def synthetic_rows(n: int):
    from baldistill.core.rows import Row

    rows = []
    for i in range(n):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(400))  # ~1,500 chars, > 256 tokens
        rationale = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(200)) + ". The answer is earn."
        rows.append(Row(id=str(i), domain="earn", input=text, label="earn", rationale=rationale))
    return rows


def r52_like_rows(n: int):
    """`n` rows cycling bench/student_common.py's R52-like stories, each with a
    short rationale that quotes the story and ends in the answer sentence."""
    from student_common import R52_LIKE

    from baldistill.core.rows import Row

    rows = []
    for i in range(n):
        label, story = R52_LIKE[i % len(R52_LIKE)]
        words = story.split()
        quote = " ".join(words[i % 3 : i % 3 + 18])
        rationale = f"The story says {quote}. That is news about {label}. The answer is {label}."
        rows.append(Row(id=str(i), domain=label, input=f"report {i}: {story}", label=label, rationale=rationale))
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
            "train": {"batch_size": micro, "micro_batch_size": micro, "epochs": 1, **FP32_SHUFFLED},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(
            synthetic_rows(micro * steps), params.train, params.student, r52_info(), f"{tmp}/a", f"{tmp}/log"
        )
    summary["seq_tokens"] = summary["tokens"] // (micro * steps)
    return summary


def run_implementation(implementation: str, steps: int, seed: int, model: str, rows_file: str | None) -> dict:
    """One training run of `implementation` with the default params' batch, lr and LoRA:
    `steps` optimiser steps over as many R52-like rows (or the first rows of `rows_file`),
    one epoch; then the adapter's mean loss on the next HELD_OUT rows."""
    from baldistill.core.params import Params
    from baldistill.core.rows import read_rows
    from baldistill.student.training_log import read_log

    if implementation == "hand":
        from hand_training import hand_loop_train as train
    else:
        from baldistill.student.training import train
    settings = {"seed": seed, **FP32_SHUFFLED, **VARIANTS.get(implementation, {})}
    params = Params.model_validate(
        {"budget": {"total": 1}, "stages": {"s0": "start"}, "student": {"model": model}, "train": settings}
    )
    n = params.train.batch_size * steps
    rows = read_rows(rows_file)[: n + HELD_OUT] if rows_file else r52_like_rows(n + HELD_OUT)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(rows[:n], params.train.model_copy(update={"epochs": 1}), params.student, r52_info(),
                        f"{tmp}/a", f"{tmp}/log")  # fmt: skip
        summary["losses"] = [step["loss"] for step in read_log(f"{tmp}/log")]
        summary["held_out_loss"] = held_out_loss(params.student, f"{tmp}/a", rows[n:])
    return summary


def held_out_loss(student, adapter: str, rows) -> float:
    """Mean cross-entropy per rationale token of `rows` under the trained adapter."""
    import torch

    from baldistill.prompts import load_prompts
    from baldistill.student.model import load_student
    from baldistill.student.training_examples import IGNORE_INDEX, collate, encode_example

    model, tokenizer = load_student(student.model, adapter)
    examples = [
        encode_example(row, tokenizer, load_prompts("classification", r52_info().labels), student) for row in rows
    ]
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 4):
            batch = collate(examples[i : i + 4], tokenizer.pad_token_id)
            tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # the shifted targets the loss counts
            total += float(model(**batch).loss) * tokens
            count += tokens
    return round(total / count, 5)


def child(args: list[str], threads: int | None) -> dict:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    command = [sys.executable, __file__, *args, *(["--threads", str(threads)] if threads else [])]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def throughput_table(args) -> None:
    rows = []
    for micro in args.micro:
        result = child(["--one", str(micro), "--steps", str(args.steps), "--model", args.model], args.threads)
        rows.append((micro, result, os.getloadavg()[0]))
    print(f"\nstudent {args.model}, {args.steps} steps per size, {os.cpu_count()} CPUs, fp32, LoRA defaults")
    print("| micro-batch | tokens/row | steps | tokens | seconds | s/step | tokens/s | peak RSS MB | load 1m |")
    print("|---|---|---|---|---|---|---|---|---|")
    for micro, r, load in rows:
        print(
            f"| {micro} | {r['seq_tokens']} | {r['steps']} | {r['tokens']} | {r['seconds']:.1f} | "
            f"{r['seconds'] / r['steps']:.1f} | {r['overall_tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {load:.2f} |"
        )


def compare(args) -> None:
    """One interleaved pair (args.pair: by default the hand loop, then the Trainer) per seed."""
    runs: list[tuple[str, int, dict, float]] = []
    common = ["--steps", str(args.steps), "--model", args.model, *(["--rows", args.rows] if args.rows else [])]
    for seed in args.seeds:
        for implementation in args.pair:
            result = child(["--impl", implementation, "--seed", str(seed), *common], args.threads)
            runs.append((implementation, seed, result, os.getloadavg()[0]))
            print(f"{implementation} seed {seed}: {result['seconds'] / result['steps']:.2f} s/step", file=sys.stderr)
    print(f"\nstudent {args.model}, {args.steps} steps of batch 4 (micro 4), default lr and LoRA, one epoch,")
    print(f"{args.threads or 'default'} torch threads, {os.cpu_count()} CPUs, runs in this order:")
    print("| run | loop | seed | s/step | tokens/s | peak RSS MB | first loss | last loss | held-out loss | load 1m |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, (implementation, seed, r, load) in enumerate(runs, 1):
        print(
            f"| {i} | {implementation} | {seed} | {r['seconds'] / r['steps']:.2f} | {r['overall_tokens_per_s']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['losses'][0]:.4f} | {r['losses'][-1]:.4f} | {r['held_out_loss']:.4f} | "
            f"{load:.2f} |"
        )
    print_speed([r["seconds"] / r["steps"] for _, _, r, _ in runs], args.pair)
    print_losses(runs, args.pair)


def print_speed(per_step: list[float], pair: tuple[str, str]) -> None:
    """per_step alternates pair[0], pair[1], pair[0], pair[1]..."""
    pairs = [per_step[i + 1] / per_step[i] for i in range(0, len(per_step), 2)]
    hands = per_step[0::2]
    neighbours = [per_step[i] / statistics.mean(hands[j : j + 2]) for j, i in enumerate(range(1, len(per_step), 2))]
    for name, ratios in (("per pair", pairs), (f"against the {pair[0]} runs on either side", neighbours)):
        print(
            f"\n{pair[1]} / {pair[0]}, s/step, {name}: median {statistics.median(ratios):.3f}, "
            f"range {min(ratios):.3f}-{max(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})"
        )


def print_losses(runs, pair: tuple[str, str]) -> None:
    """Each loop's mean curve and held-out loss over the seeds, beside the spread between seeds."""
    by_loop = {name: [r for n, _, r, _ in runs if n == name] for name in pair}
    for name, results in by_loop.items():
        held = [r["held_out_loss"] for r in results]
        spread = statistics.stdev(held) if len(held) > 1 else float("nan")
        means = [statistics.mean(r["losses"]) for r in results]
        print(
            f"{name}: held-out loss mean {statistics.mean(held):.4f} (sd over seeds {spread:.4f}); "
            f"training loss, mean over the epoch: {', '.join(f'{m:.4f}' for m in means)}"
        )
    hand, trainer = by_loop[pair[0]], by_loop[pair[1]]
    gap = [statistics.mean(abs(a - b) for a, b in zip(h["losses"], t["losses"])) for h, t in zip(hand, trainer)]
    seeds = [statistics.mean(abs(a - b) for a, b in zip(x["losses"], y["losses"])) for x, y in pairwise(hand)]
    print(f"mean |{pair[0]} - {pair[1]}| per step, same seed: {', '.join(f'{g:.4f}' for g in gap)}")
    print(f"mean |{pair[0]} seed s - seed s+1| per step (the noise): {', '.join(f'{g:.4f}' for g in seeds)}")
    print("| step | " + " | ".join(f"{n} seed {s}" for n, s, _, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for step in range(len(runs[0][2]["losses"])):
        print(f"| {step + 1} | " + " | ".join(f"{r['losses'][step]:.4f}" for _, _, r, _ in runs) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", type=int, nargs="+", default=[4, 8], help="micro-batch sizes to measure")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per run")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compare", action="store_true", help="transformers' Trainer against the hand loop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--compare: one pair per seed")
    parser.add_argument("--pair", nargs=2, choices=IMPLEMENTATIONS, default=("hand", "trainer"), help="--compare: A B")
    parser.add_argument("--rows", help="--compare: train on these JSONL rows (a run's data/stages/s1/train.jsonl)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size, JSON out
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)  # child: one compare run
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one or args.impl:
        result = run_one(args.one, args.steps, args.model) if args.one else None
        result = result or run_implementation(args.impl, args.steps, args.seed, args.model, args.rows)
        print("RESULT " + json.dumps(result), flush=True)
        return
    compare(args) if args.compare else throughput_table(args)
    print("\nreproduce: python " + shlex.join(["bench/train.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
