"""How many test rows per domain a comparison needs: the power to detect a
5-point macro score difference between two policies on a data set's real test
set (R52 by default; macro-F1 for classification, macro accuracy for MCQA/MATH).

    python bench/power.py [--dataset r52] [--delta 0.05] [--accuracy 0.5] [--shared 0.5] [--sims 200]
                          [--reading long-tailed|balanced] [--runs 1,2,3,4] [--seed-sd 1.8]

Model: every test row is answered correctly by the baseline with probability
`accuracy` and by the policy with `accuracy + delta`; a wrong answer is a
uniformly random other label. The two policies' draws share one uniform number
on a `shared` fraction of rows (hard rows are hard for both: the pairing) and
are independent on the rest. For each cap m (test rows per domain, as
`data.test_per_domain` draws them from the data set's test split) the script simulates
`sims` test sets, scores both sides with metrics.score (the macro score as
evaluation computes it), and reports the standard error of the paired difference and the
power of a two-sided 95% test, Phi(delta_hat / se - 1.96).

The headline is the long-tailed reading (each row weighted by its domain's
full-split count over the rows drawn, as evaluation scores it); `--reading
balanced` scores the rows unweighted. Runs: the same test set serves every run,
so its noise does not average out over seeds, while training noise (a policy's
seed-to-seed standard deviation, `--seed-sd` points; 1.8 is the pooled spread
of the long-tailed macro over the committed three-seed R52 runs) does. With n
runs per policy the difference of the two means has variance se_test^2 +
2 seed_sd^2 / n, and the table gives the smallest difference a 95% test finds
with 80% power, (1.96 + 0.84) x its standard error, at `--runs-cap` rows per domain.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from baldistill.core.metrics import score
from baldistill.core.params import Data
from baldistill.core.rows import domain_counts
from baldistill.data.datasets import cap_per_domain, head_threshold_for, load


def simulate(golds, labels, accuracy, delta, shared, rng):
    """(baseline answers, policy answers) for one simulated test set."""

    def answer(gold, u, p):
        return gold if u < p else rng.choice([label for label in labels if label != gold])

    base, policy = [], []
    for gold in golds:
        u = rng.random()
        v = u if rng.random() < shared else rng.random()  # the shared part makes the pair correlated
        base.append(answer(gold, u, accuracy))
        policy.append(answer(gold, v, accuracy + delta))
    return base, policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="r52", choices=("r52", "mcqa", "math"))
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--accuracy", type=float, default=0.5)
    parser.add_argument("--shared", type=float, default=0.5)
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--caps", default="2,5,10,15,20,30")
    parser.add_argument("--reading", default="long-tailed", choices=("long-tailed", "balanced"))
    parser.add_argument("--runs", default="1,2,3,4", help="runs per policy for the detectable-difference table")
    parser.add_argument("--seed-sd", type=float, default=1.8, help="seed-to-seed sd of the macro score, points")
    parser.add_argument("--runs-cap", type=int, default=20, help="rows per domain for the runs table")
    args = parser.parse_args()
    data = Data(dataset=args.dataset)
    loaded = load(data)
    pool = domain_counts(loaded.train)
    threshold = head_threshold_for(data, pool)
    test = [r for r in loaded.test if r.domain in pool]
    # Wrong answers are drawn from the data set's labels (R52's topics, MCQA's choice letters).
    labels = sorted({r.label for r in loaded.train} | {r.label for r in test})
    full_counts = domain_counts(test) if args.reading == "long-tailed" else None
    print(
        f"{args.dataset}: {len(test)} test rows in {len(domain_counts(test))} domains; {args.reading} macro; "
        f"delta {args.delta}, baseline accuracy {args.accuracy}, shared {args.shared}, {args.sims} simulations"
    )
    print("| rows per domain (cap) | test rows | se of the macro difference | power |")
    print("|---|---|---|---|")
    test_se = {}
    for cap in sorted({int(c) for c in args.caps.split(",")} | {args.runs_cap}):
        rows = cap_per_domain(test, cap, 0)
        golds, domains = [r.label for r in rows], [r.domain for r in rows]
        rng = random.Random(cap)
        diffs = []
        for _ in range(args.sims):
            base, policy = simulate(golds, labels, args.accuracy, args.delta, args.shared, rng)
            scored = [
                score(loaded.task, golds, p, domains, labels, pool, threshold, test_counts=full_counts)["macro"]
                for p in (base, policy)
            ]
            diffs.append(scored[1] - scored[0])
        se, mean = statistics.stdev(diffs), statistics.fmean(diffs)
        test_se[cap] = 100 * se
        power = 0.5 * (1 + math.erf((abs(mean) / se - 1.96) / math.sqrt(2)))
        print(f"| {cap} | {len(rows)} | {100 * se:.2f} points (mean difference {100 * mean:.2f}) | {power:.2f} |")
    cap_se = test_se[args.runs_cap]
    print(f"\nRuns per policy at {args.runs_cap} rows per domain (test se {cap_se:.2f}, seed sd {args.seed_sd}):")
    print("| runs per policy | se of the difference of means | detectable at 80% power |")
    print("|---|---|---|")
    for n in (int(r) for r in args.runs.split(",")):
        se_n = detectable_se(cap_se, args.seed_sd, n)
        print(f"| {n} | {se_n:.2f} points | {2.8 * se_n:.1f} points |")


def detectable_se(test_se: float, seed_sd: float, runs: int) -> float:
    """The standard error of two policies' mean scores over `runs` runs each on one test set:
    the test set's noise is shared by every run, training noise averages out."""
    return math.sqrt(test_se**2 + 2 * seed_sd**2 / runs)


if __name__ == "__main__":
    main()
