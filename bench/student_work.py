"""The student's own work, today's code against this tree's, side by side on the same rows.

    python bench/student_work.py [--quick] [--rows 96] [--repeat 3] [--baseline 344ff1f] [--threads 2]

Real R52 pool rows (seeded sample), the student prompt as selection and evaluation
build it, in two lengths: today's prompt, and today's with the R52 label list
prefixed (what the label-set prompt adds, ~250 tokens). For each length:
- selection: greedy generation with NLL (select.max_new_tokens) + the direct pass,
  i.e. ifd.score_by_generation: generated tokens/s and IFD rows/s;
- evaluation: greedy generation of texts (evaluate.max_new_tokens): tokens/s;
each run by the baseline (generation.py and ifd.py at git revision --baseline, batch 16
as today's params, plain nn.Linear) and by this tree (the params' defaults, the
inference model of load_student(device=...)), alternating old, new,
old, new... so outside load hits both alike; ratios are per repetition (median and
range). Agreement: identical greedy outputs, IFD's largest relative difference.
Then training tokens/s (LoRA r=8, peft default targets, micro-batch 4, a few AdamW
steps). The machine's compute floor is a plain fp32 matmul's GFLOP/s measured in the
same run (best of its interleaved measurements); each row's "of floor" is its useful
GFLOP/s (2 FLOP per weight per token: prompt tokens through the layers, generated
tokens through the layers and the lm_head; training 6 per weight per token, as if
all weights were trained) divided by that floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from student_common import command, machine

from baldistill.core.params import Evaluate, Select, Student
from baldistill.data.datasets import load_r52, truncate_input
from baldistill.prompts import load_prompts
from baldistill.student import generation, ifd
from baldistill.student.device import student_device
from baldistill.student.encoding import build_prompt, encode_prompt
from baldistill.student.model import load_student

REPO = Path(__file__).resolve().parents[1]
BASELINE = "344ff1f"  # main before issue 34: HF generate, batches of 16 rows


def baseline_modules(rev: str):
    """(generation, ifd) as they were at git revision `rev`, importable side by side with today's."""
    mods = {}
    for name in ("generation", "ifd"):
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:src/baldistill/student/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.replace("baldistill.student.generation", "baseline_generation")
        spec = importlib.util.spec_from_loader(f"baseline_{name}", loader=None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)
        mods[name] = module
    return mods["generation"], mods["ifd"]


def matmul_gflops(seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of [2048 x 576] @ [576 x 1536], the student's MLP shape at prefill."""
    a, b = torch.randn(2048, 576), torch.randn(576, 1536)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 2048 * 576 * 1536 * count / (time.perf_counter() - start) / 1e9


def labelled(templates, labels: list[str]):
    """Today's student template with the label set prefixed, as the label-set prompt adds it."""
    head = "Assign a topic to this news story."
    assert head in templates.student, "the student template changed: update this bench"
    listed = f"{head} You must select the topic from this set: {', '.join(labels)}."
    return dataclasses.replace(templates, student=templates.student.replace(head, listed))


def model_weights(model) -> tuple[int, int]:
    """(weights a prompt token passes through, weights of the lm_head)."""
    head = model.lm_head.weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embed - (0 if model.config.tie_word_embeddings else head)
    return body, head


class Ledger:
    """Per (setting, code) the timings of every repetition and what they produced."""

    def __init__(self):
        self.seconds: dict[tuple, list[float]] = {}
        self.out: dict[tuple, object] = {}

    def run(self, key: tuple, fn):
        start = time.perf_counter()
        self.out[key] = fn()
        self.seconds.setdefault(key, []).append(time.perf_counter() - start)
        return self.out[key]


def max_rel(a: list[ifd.IfdScore], b: list[ifd.IfdScore]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        u, v = x.ifd, y.ifd
        if u == u and v == v and v:  # both finite-or-inf and not NaN
            worst = max(worst, abs(u - v) / abs(v)) if abs(v) != float("inf") else worst
    return worst


def train_rate(model, tokenizer, prompts: list[str], targets: list[list[int]], steps: int) -> tuple[float, int]:
    """Tokens/s of LoRA training steps (micro-batch 4) on prompt + target rows."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, task_type="CAUSAL_LM"))
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    pad = generation.pad_id_of(tokenizer)
    seqs = [encode_prompt(tokenizer, p) + t for p, t in zip(prompts, targets)]
    tokens, start = 0, None
    for step in range(steps + 1):  # the first step warms up and is not counted
        if step == 1:
            tokens, start = 0, time.perf_counter()
        batch = seqs[4 * step : 4 * step + 4] or seqs[:4]
        ids, mask = generation.left_pad(batch, pad)
        labels = ids.masked_fill(mask == 0, -100)
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(mask.sum())
    rate = tokens / (time.perf_counter() - start)
    peft_model.unload()
    model.eval()
    return rate, tokens


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="48 rows, 2 repetitions: under ~10 minutes alone")
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline", default=BASELINE, help="git revision of today's code")
    p.add_argument("--threads", type=int, default=2, help="torch threads, fixed for the whole run")
    p.add_argument("--train-steps", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        args.rows, args.repeat, args.train_steps = 48, 2, 2
    torch.set_num_threads(args.threads)
    old_gen, old_ifd = baseline_modules(args.baseline)
    student, sel, ev = Student(), Select(), Evaluate()
    device = student_device()
    model, tokenizer = load_student(student.model)  # today's: plain nn.Linear
    model.to(device)
    packed, _ = load_student(student.model, device=device)  # this tree's inference model
    loaded = load_r52()
    rows = random.Random(0).sample(loaded.train, args.rows)
    labels = sorted({r.label for r in loaded.train})
    base = load_prompts("classification")
    inputs = [truncate_input(r.input, 600) for r in rows]
    prompt_sets = {
        "today": [build_prompt(tokenizer, base, x, student.max_input_tokens) for x in inputs],
        "labels": [build_prompt(tokenizer, labelled(base, labels), x, student.max_input_tokens) for x in inputs],
    }
    body, head = model_weights(model)
    generation.generate(packed, tokenizer, prompt_sets["today"][:2], 4, 2, progress=False)  # one-time kernel setup
    old_gen.generate(model, tokenizer, prompt_sets["today"][:2], 4, 2, progress=False)

    def select_old(ps):
        gen = old_gen.generate(model, tokenizer, ps, sel.max_new_tokens, 16, with_nll=True, progress=False)
        seqs, starts = old_ifd.direct_rows(tokenizer, [g.token_ids for g in gen])
        direct = old_ifd.sequence_nll(model, seqs, starts, 16, generation.pad_id_of(tokenizer))
        return gen, [ifd.score_from_nll(g.nll, d) for g, d in zip(gen, direct)]

    def select_new(ps):
        return ifd.score_by_generation(
            packed, tokenizer, ps, sel.max_new_tokens, sel.batch_size, batch_tokens=sel.batch_tokens, progress=False
        )

    def evaluate_old(ps):
        return old_gen.generate(model, tokenizer, ps, ev.max_new_tokens, 16, progress=False)

    def evaluate_new(ps):
        return generation.generate(
            packed, tokenizer, ps, ev.max_new_tokens, ev.batch_size, batch_tokens=ev.batch_tokens, progress=False
        )

    work = {"select": (select_old, select_new), "evaluate": (evaluate_old, evaluate_new)}
    ledger, floors = Ledger(), []
    began = time.perf_counter()
    for rep in range(args.repeat):
        floors.append(matmul_gflops())
        for setting, (old, new) in work.items():
            for length, ps in prompt_sets.items():
                for code, fn in (("old", old), ("new", new)) if rep % 2 == 0 else (("new", new), ("old", old)):
                    ledger.run((setting, length, code), lambda fn=fn, ps=ps: fn(ps))
                print(
                    f"rep {rep + 1}/{args.repeat} {setting} {length}: {time.perf_counter() - began:.0f} s", flush=True
                )
    floors.append(matmul_gflops())
    floor = max(floors)

    print(f"\n{args.rows} R52 pool rows, fastest of {args.repeat} per cell; {machine()}; baseline {args.baseline}")
    print(
        f"compute floor: fp32 matmul {floor:.0f} GFLOP/s (best of {len(floors)}, range {min(floors):.0f}-{floor:.0f})"
    )
    print(
        f"{'setting':9s} {'prompt':7s} {'tok/row':>7s} {'old tok/s':>9s} {'new tok/s':>9s} "
        f"{'ratio (median, range)':>22s} {'old/new of floor':>16s} {'same outputs':>12s} {'IFD max rel':>11s}"
    )
    for setting in work:
        for length, ps in prompt_sets.items():
            olds, news = ledger.seconds[(setting, length, "old")], ledger.seconds[(setting, length, "new")]
            old_out, new_out = ledger.out[(setting, length, "old")], ledger.out[(setting, length, "new")]
            old_gens, new_gens = (old_out[0], new_out[0]) if setting == "select" else (old_out, new_out)
            generated = sum(len(g.token_ids) for g in old_gens)
            prompt_tokens = sum(len(encode_prompt(tokenizer, q)) for q in ps)
            flop = 2 * (body * (prompt_tokens + generated) + head * generated)
            if setting == "select":  # the direct pass: every generated token through the layers and lm_head
                flop += 2 * (body + head) * generated
            of_floor = [flop / min(s) / 1e9 / floor for s in (olds, news)]
            same = sum(a.token_ids == b.token_ids for a, b in zip(old_gens, new_gens))
            rel = f"{max_rel(old_out[1], new_out[1]):.1e}" if setting == "select" else "-"
            ratios = [o / n for o, n in zip(olds, news)]
            print(
                f"{setting:9s} {length:7s} {prompt_tokens / len(ps):7.0f} {generated / min(olds):9.1f} "
                f"{generated / min(news):9.1f} {spread(ratios):>22s} "
                f"{of_floor[0]:7.2f}/{of_floor[1]:.2f} {same:>8d}/{len(ps)} {rel:>11s}"
            )
            if setting == "select":
                print(f"{'':17s} IFD rows/s: old {len(ps) / min(olds):.2f}, new {len(ps) / min(news):.2f}")

    targets = [g.token_ids for g in ledger.out[("select", "today", "new")][0]]
    rate, tokens = train_rate(model, tokenizer, prompt_sets["today"], targets, args.train_steps)
    print(
        f"training (LoRA r=8, micro-batch 4, {args.train_steps} steps, {tokens} tokens): {rate:.0f} tokens/s, "
        f"{6 * (body + head) * rate / 1e9 / floor:.2f} of floor (6 FLOP per weight per token)"
    )
    print(f"whole bench {time.perf_counter() - began:.0f} s")
    print("reproduce:", command())


if __name__ == "__main__":
    main()
