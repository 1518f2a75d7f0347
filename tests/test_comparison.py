"""Policies against a baseline with paired intervals (pure: predictions in, table out)."""

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.report.comparison import align, compare, compare_pairs, comparison_markdown, pairs_markdown

LABELS = ["earn", "acq", "grain", "tea"]
COUNTS = {"earn": 900, "acq": 400, "grain": 60, "tea": 3}
GOLDS = ["earn", "acq", "grain", "tea"] * 10


def run(preds, ids=None):
    ids = ids or [f"t{i}" for i in range(len(GOLDS))]
    return [{"id": i, "domain": g, "gold": g, "pred": p} for i, g, p in zip(ids, GOLDS, preds)]


def wrong(gold):
    return "earn" if gold != "earn" else "acq"


def test_rows_are_paired_by_id_whatever_their_order():
    base = run(GOLDS)
    shuffled = list(reversed(run([wrong(g) for g in GOLDS])))
    golds, domains, preds = align({"random": [base], "naive": [shuffled]})
    assert golds == domains
    assert preds["random"][0] == golds
    assert all(p != g for p, g in zip(preds["naive"][0], golds))


def test_a_run_on_other_test_rows_is_refused():
    other = run(GOLDS, ids=[f"x{i}" for i in range(len(GOLDS))])
    with pytest.raises(BaldistillError, match="run 1 of policy 'naive' scored other test rows"):
        align({"random": [run(GOLDS)], "naive": [other]})


def compared(policy_preds, baseline_preds, **kwargs):
    return compare(
        {"random": [run(p) for p in baseline_preds], "naive": [run(p) for p in policy_preds]},
        "random",
        task="classification",
        labels=LABELS,
        pool_counts=COUNTS,
        head_threshold=50,
        n_boot=200,
        **kwargs,
    )


def test_a_clearly_better_policy_is_called_significant():
    [record] = compared([GOLDS], [[wrong(g) for g in GOLDS]])
    assert record["policy"] == "naive" and record["runs"] == 1
    assert record["macro"].excludes_zero and record["macro"].estimate > 0.5
    text = comparison_markdown([record], "random", 1, len(GOLDS))
    assert "significantly better on macro, micro, balanced macro, head, tail than random" in text
    assert "] *" in text


def test_equal_policies_are_reported_as_not_significant():
    preds = [g if i % 3 else wrong(g) for i, g in enumerate(GOLDS)]
    [record] = compared([preds, preds], [preds])
    assert record["macro"].estimate == 0 and not record["macro"].excludes_zero
    text = comparison_markdown([record], "random", 1, len(GOLDS))
    assert "- naive: no difference from random is significant." in text
    assert "] *" not in text


def test_with_the_full_splits_counts_a_policy_that_gets_the_big_class_right_wins_on_micro():
    """earn is 90% of the full split but a quarter of the rows drawn: the policy right on earn
    alone beats the one right on everything else on (weighted) micro, and loses on balanced macro."""
    only_earn = [g if g == "earn" else "acq" for g in GOLDS]
    all_but_earn = [g if g != "earn" else "acq" for g in GOLDS]
    full_split = {"earn": 900, "acq": 50, "grain": 40, "tea": 10}
    [record] = compared([only_earn], [all_but_earn], test_counts=full_split)
    assert record["micro"].estimate > 0.5 and record["micro"].excludes_zero
    assert record["balanced_macro"].estimate < 0 and record["balanced_macro"].excludes_zero
    text = comparison_markdown([record], "random", 1, len(GOLDS))
    assert "| Δ macro | Δ micro | Δ balanced macro | Δ head | Δ tail |" in text


def test_missing_baseline_is_one_clear_error():
    with pytest.raises(BaldistillError, match="baseline policy 'zeroshot' is not among"):
        compare(
            {"random": [run(GOLDS)]},
            "zeroshot",
            task="classification",
            labels=LABELS,
            pool_counts=COUNTS,
            head_threshold=50,
        )


def test_chosen_pairs_each_compare_their_own_two_policies():
    """balance against naive and active against random, in one table: each pair's
    difference is that policy minus its own baseline, not minus one shared baseline."""
    half = [g if i % 2 else wrong(g) for i, g in enumerate(GOLDS)]
    runs = {
        "random": [run([wrong(g) for g in GOLDS])],
        "naive": [run(half)],
        "balance": [run(half), run(half)],
        "active": [run(GOLDS)],
    }
    options = {"task": "classification", "labels": LABELS, "pool_counts": COUNTS, "head_threshold": 50, "n_boot": 200}
    records = compare_pairs(runs, [("balance", "naive"), ("active", "random")], **options)
    assert [(r["policy"], r["baseline"], r["runs"], r["baseline_runs"]) for r in records] == [
        ("balance", "naive", 2, 1),
        ("active", "random", 1, 1),
    ]
    assert records[0]["macro"].estimate == 0 and not records[0]["macro"].excludes_zero
    assert records[1]["macro"].estimate > 0.5 and records[1]["macro"].excludes_zero
    text = pairs_markdown(records, len(GOLDS))
    assert "| balance | naive | 2 vs 1 |" in text
    assert "- balance: no difference from naive is significant." in text
    assert "- active: significantly better on macro, micro, balanced macro, head, tail than random." in text


def test_a_pair_naming_a_policy_not_run_is_one_clear_error():
    options = {"task": "classification", "labels": LABELS, "pool_counts": COUNTS, "head_threshold": 50}
    with pytest.raises(BaldistillError, match="pair feedback:adaptive: no 'feedback' run"):
        compare_pairs({"random": [run(GOLDS)], "adaptive": [run(GOLDS)]}, [("feedback", "adaptive")], **options)
