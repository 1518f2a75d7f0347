"""Where do the rows IFD selection picks sit in their domain? Measured on a fully
scored sample of the real pool.

Scores every row of a random sample of each chosen domain's pool rows with the
stage's student (default the stage-0 adapter of a finished run), once with the
select step's max_new_tokens and once with each shorter length asked for. The
sample, scored at the reference length, stands for the domain's unused rows.
Then, for each candidates_per_row c, it repeats the select step's rule many
times (draw c candidates at random, keep the top one by `ifd.rank`) and
reports the mean percentile, in the reference ranking, of the row kept:

- "measured": the percentile actually reached within the fully scored sample;
- "estimate": what the select report writes (ifd.pick_percentiles, c/(c+1));
- for a shorter generation length: candidates ranked by the shorter IFD,
  percentile read in the reference ranking (does the pick hold?), and the
  Spearman correlation of the two scorings.

    python bench/ifd_percentile.py --adapter models/s0 --domains earn acq crude --rows 40 --short 32
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import time


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def percentile_in(reference: list[float], i: int, drop: bool) -> float:
    """Share of the sample ranked below row i by the select rule (ties count half)."""
    from baldistill.student import ifd

    order = ifd.rank(reference, len(reference), drop)  # best first
    place = order.index(i)
    return (len(order) - 1 - place) / max(len(order) - 1, 1)


def simulate(reference: list[float], ranking: list[float], c: int, draws: int, drop: bool, seed: int) -> float:
    from baldistill.student import ifd

    rng = random.Random(seed)
    got = []
    for _ in range(draws):
        cands = rng.sample(range(len(reference)), c)
        top = cands[ifd.rank([ranking[i] for i in cands], 1, drop)[0]]
        got.append(percentile_in(reference, top, drop))
    return sum(got) / len(got)


def score(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> tuple[list[float], float]:
    from baldistill.student.ifd import score_by_generation

    started = time.perf_counter()
    _, scores = score_by_generation(model, tokenizer, prompts, max_new_tokens, batch_size)
    return [s.ifd for s in scores], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default="models/s0")
    parser.add_argument("--domains", nargs="+", default=["earn", "acq", "crude"])
    parser.add_argument("--rows", type=int, default=40, help="rows per domain in the fully scored sample")
    parser.add_argument("--short", type=int, nargs="*", default=[32], help="shorter max_new_tokens to compare")
    parser.add_argument("--candidates", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from baldistill.core import layout
    from baldistill.core.dataset_info import DatasetInfo
    from baldistill.core.params import load_params
    from baldistill.core.rows import read_rows
    from baldistill.prompts import load_prompts
    from baldistill.student.encoding import build_prompt
    from baldistill.student.model import load_student

    params = load_params()
    cfg, drop = params.select, params.select.drop_ifd_ge_1
    pool = read_rows(layout.POOL)
    rng = random.Random(args.seed)
    model, tokenizer = load_student(params.student.model, args.adapter)
    info = DatasetInfo.load(layout.INFO)
    templates = load_prompts(info.task, info.labels)
    lengths = [cfg.max_new_tokens, *args.short]
    header = ["domain", "rows", "tokens", "c", "measured", "estimate", "spearman", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for domain in args.domains:
        rows = [r for r in pool if r.domain == domain]
        sample = rng.sample(rows, min(args.rows, len(rows)))
        prompts = [build_prompt(tokenizer, templates, r.input, params.student.max_input_tokens) for r in sample]
        scored = {n: score(model, tokenizer, prompts, n, cfg.batch_size) for n in lengths}
        reference = scored[cfg.max_new_tokens][0]
        for n in lengths:
            ranking, seconds = scored[n]
            rho = spearman(reference, ranking) if n != cfg.max_new_tokens else 1.0
            for c in args.candidates:
                measured = simulate(reference, ranking, c, args.draws, drop, args.seed)
                cells = [domain, len(sample), n, c, f"{measured:.3f}", f"{c / (c + 1):.3f}", f"{rho:.3f}"]
                lines.append("| " + " | ".join(map(str, [*cells, f"{seconds:.0f}"])) + " |")
        print("\n".join(lines[-len(lengths) * len(args.candidates) :]), file=sys.stderr)
    print("\n".join(lines))
    print(f"\nload average {os.getloadavg()[0]:.2f}; command: python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
