"""Batched vs one-sequence-at-a-time greedy generation, in generated tokens per second.

python bench/generation.py [--model PATH] [--rows 16] [--batch-size 16] [--max-new-tokens 48]
"""

from __future__ import annotations

from student_common import command, machine, parser, setup, timer

from baldistill.student.generation import generate


def main() -> None:
    args = parser(__doc__.splitlines()[0], repeat=2).parse_args()  # one-at-a-time is slow: 2 runs
    model, tokenizer, prompts = setup(args)
    new = args.max_new_tokens
    generate(model, tokenizer, prompts[:2], 4, 2, progress=False)  # warm-up: one-time kernel setup
    t: dict[str, float] = {}
    for _ in range(args.repeat):  # interleaved, so a burst of outside load hits both modes alike
        with timer(t, "batched"):
            batched = generate(model, tokenizer, prompts, new, args.batch_size, progress=False)
        with timer(t, "single"):
            single = [generate(model, tokenizer, [p], new, 1, progress=False)[0] for p in prompts]

    print(f"{len(prompts)} rows, max_new_tokens {new}, model {args.model}, fastest of {args.repeat}; {machine()}")
    print(f"{'mode':28s} {'tokens':>7s} {'seconds':>8s} {'tokens/s':>9s}")
    rate = {}
    modes = (
        ("batched", f"batched (batch {args.batch_size})", batched),
        ("single", "one sequence at a time", single),
    )
    for key, name, out in modes:
        tokens = sum(len(g.token_ids) for g in out)
        rate[key] = tokens / t[key]
        print(f"{name:28s} {tokens:7d} {t[key]:8.2f} {rate[key]:9.1f}")
    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single))
    print(
        f"speed-up {rate['batched'] / rate['single']:.2f}x in tokens/s; identical greedy outputs: {same}/{len(prompts)}"
    )
    print("reproduce:", command())


if __name__ == "__main__":
    main()
