"""Time the IFD scorers on the same model and rows, and check they agree.

    python bench/ifd.py [--model PATH] [--rows 16] [--batch-size 16] [--max-new-tokens 48]

Every method needs the student's greedy rationale y first, so each row of
the table includes a generation:
- floor:           bare batched generation + one batched pass over y alone
                   (the least any IFD-by-generation scorer can cost)
- generation route: batched generation with raw logits kept + one pass over y
                   (ifd.score_by_generation, what selection uses)
- batched two-pass: bare batched generation + batched conditional and direct passes
- one-row reference: bare batched generation + two passes per row, one row at a time

and, for the batched two-pass scorer alone, its floor: the bare batched forward
passes it needs (same batches, same padding, logits only; no loss bookkeeping).
"""

from __future__ import annotations

import math

import torch
from student_common import command, machine, parser, setup, timer

from baldistill.student import ifd
from baldistill.student.encoding import encode_prompt
from baldistill.student.generation import generate, left_pad, length_batches, pad_id_of


def max_rel_diff(a: list[ifd.IfdScore], b: list[ifd.IfdScore]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for f in ("ifd", "ppl_cond", "ppl_direct"):
            u, v = getattr(x, f), getattr(y, f)
            if math.isnan(u) and math.isnan(v):
                continue
            worst = max(worst, abs(u - v) / abs(v) if v else math.inf)
    return worst


@torch.no_grad()
def bare_passes(model, seqs: list[list[int]], batch_size: int, pad_id: int) -> None:
    """The forward passes a batched scorer cannot avoid: same batches, no NLL."""
    for batch in length_batches([len(s) for s in seqs], batch_size):
        ids, mask = left_pad([seqs[i] for i in batch], pad_id)
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    model, tokenizer, prompts = setup(args)
    n, bs, new = len(prompts), args.batch_size, args.max_new_tokens
    generate(model, tokenizer, prompts[:2], 4, 2, progress=False)  # warm-up: one-time kernel setup
    t: dict[str, float] = {}
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    for _ in range(args.repeat):  # interleaved, so a burst of outside load hits every method alike
        with timer(t, "gen"):
            bare = generate(model, tokenizer, prompts, new, bs, progress=False)
        ys = [g.token_ids for g in bare]
        direct_seqs, direct_starts = ifd.direct_rows(tokenizer, ys)
        with timer(t, "direct"):
            ifd.sequence_nll(model, direct_seqs, direct_starts, bs, pad_id_of(tokenizer))
        with timer(t, "route"):
            routed_gen, routed = ifd.score_by_generation(model, tokenizer, prompts, new, bs, progress=False)
        with timer(t, "two_pass"):
            batched = ifd.score_two_pass(model, tokenizer, prompt_ids, ys, bs)
        with timer(t, "reference"):
            reference = ifd.score_reference(model, tokenizer, prompt_ids, ys)
        with timer(t, "bare_two_pass"):
            pad = pad_id_of(tokenizer)
            bare_passes(model, [p + y for p, y in zip(prompt_ids, ys)], bs, pad)
            bare_passes(model, direct_seqs, bs, pad)

    same_ids = sum(a.token_ids == b.token_ids for a, b in zip(bare, routed_gen))
    table = [
        ("floor: generation + y-only pass", t["gen"] + t["direct"]),
        ("generation-logits route", t["route"]),
        ("batched two-pass", t["gen"] + t["two_pass"]),
        ("one-row two-pass reference", t["gen"] + t["reference"]),
    ]
    tokens = sum(len(y) for y in ys)
    print(
        f"{n} rows, batch {bs}, max_new_tokens {new}, {tokens} generated tokens, model {args.model}, "
        f"fastest of {args.repeat}; {machine()}"
    )
    print(f"{'method':34s} {'total s':>8s} {'s/row':>7s} {'extra over bare generation, s/row':>34s}")
    for name, seconds in table:
        print(f"{name:34s} {seconds:8.2f} {seconds / n:7.3f} {(seconds - t['gen']) / n:34.3f}")
    print(
        f"batched two-pass scoring {t['two_pass']:.2f} s vs its bare forward passes {t['bare_two_pass']:.2f} s "
        f"(x{t['two_pass'] / t['bare_two_pass']:.2f} of the floor)"
    )
    print(
        f"max relative difference vs reference: two-pass {max_rel_diff(batched, reference):.2e}, "
        f"generation route {max_rel_diff(routed, reference):.2e} (rows with identical generations: {same_ids}/{n})"
    )
    ok = max(max_rel_diff(batched, reference), max_rel_diff(routed, reference)) <= 1e-4
    print("scores equal within 1e-4 relative:", "yes" if ok else "NO")
    print("reproduce:", command())


if __name__ == "__main__":
    main()
