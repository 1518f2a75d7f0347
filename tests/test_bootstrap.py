"""Paired (and two-level) bootstrap of policy minus baseline: concrete cases and properties.

n_boot stays small: every replicate runs metrics.score on every run.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldistill.core.bootstrap import ALL_KEYS, KEYS, Interval, paired_bootstrap
from baldistill.core.errors import BaldistillError
from baldistill.core.metrics import score

LABELS = ["earn", "acq", "crude", "trade", "gold"]
# Classification domains are the gold labels (R52): earn and acq are head (> 50 pool rows).
CLS_POOLS = {"earn": 900, "acq": 400, "crude": 40, "trade": 12, "gold": 3}
MC_POOLS = {"p": 100, "q": 60, "r": 5}  # threshold 50: p, q head; r tail
LETTERS = list("ABCD")


def _cls_data(n: int = 40):
    golds = [LABELS[i % len(LABELS)] for i in range(n)]
    return golds, golds  # golds, domains


def _mc_data(n: int = 60):
    golds = [LETTERS[(i * 7) % 4] for i in range(n)]
    domains = ["p", "q", "r"] * (n // 3) + ["p"] * (n % 3)
    return golds, domains


def _cls(policy_runs, baseline_runs, golds, domains, **kwargs):
    kwargs = {"n_boot": 60, "seed": 0, **kwargs}
    return paired_bootstrap(
        policy_runs,
        baseline_runs,
        golds,
        domains,
        task="classification",
        labels=LABELS,
        pool_counts=CLS_POOLS,
        head_threshold=50,
        **kwargs,
    )


def _mc(policy_runs, baseline_runs, golds, domains, pools=MC_POOLS, **kwargs):
    kwargs = {"n_boot": 200, "seed": 0, **kwargs}
    return paired_bootstrap(
        policy_runs,
        baseline_runs,
        golds,
        domains,
        task="multiple_choice",
        labels=LETTERS,
        pool_counts=pools,
        head_threshold=50,
        **kwargs,
    )


def _wrong(gold: str, choices: list[str]) -> str:
    return choices[(choices.index(gold) + 1) % len(choices)]


# ---- concrete cases -----------------------------------------------------------


def test_identical_runs_give_zero_and_an_interval_containing_zero():
    golds, domains = _cls_data()
    run = [g if i % 3 else _wrong(g, LABELS) for i, g in enumerate(golds)]
    result = _cls([run], [list(run)], golds, domains)
    assert set(result) == set(KEYS)
    for interval in result.values():
        assert interval.estimate == 0.0
        assert interval.low <= 0.0 <= interval.high
        assert not interval.excludes_zero
        assert interval.n_boot == 60


def test_policy_right_where_baseline_is_wrong_excludes_zero_multiple_choice():
    golds, domains = _mc_data()
    # The policy writes its letters as models do, "(C)"; answers_match still reads them.
    policy = [f"({g})" for g in golds]
    baseline = [g if i % 2 else _wrong(g, LETTERS) for i, g in enumerate(golds)]
    result = _mc([policy], [baseline], golds, domains)
    assert result["micro"].estimate == pytest.approx(0.5)
    for key in KEYS:
        interval = result[key]
        assert interval.low > 0 and interval.excludes_zero, key
        assert interval.low <= interval.estimate <= interval.high


def test_policy_right_where_baseline_is_wrong_excludes_zero_classification():
    golds, domains = _cls_data()
    policy = list(golds)
    baseline = [g if i % 2 else None for i, g in enumerate(golds)]  # missing answers are wrong
    result = _cls([policy], [baseline], golds, domains)
    for key in ("macro", "micro"):
        assert result[key].low > 0 and result[key].excludes_zero, key


def test_estimate_is_the_metrics_score_difference_on_the_full_test_set():
    golds, domains = _cls_data()
    policy = [g if i % 4 else "nonsense" for i, g in enumerate(golds)]
    baseline = [g if i % 3 else _wrong(g, LABELS) for i, g in enumerate(golds)]
    result = _cls([policy], [baseline], golds, domains, n_boot=5)
    a = score("classification", golds, policy, domains, LABELS, CLS_POOLS, 50)
    b = score("classification", golds, baseline, domains, LABELS, CLS_POOLS, 50)
    for key in KEYS:
        assert result[key].estimate == pytest.approx(a[key] - b[key])


def test_swapping_policy_and_baseline_mirrors_a_classification_interval():
    golds, domains = _cls_data()
    a = [g if i % 4 else None for i, g in enumerate(golds)]
    b = [g if i % 3 else _wrong(g, LABELS) for i, g in enumerate(golds)]
    forward, backward = _cls([a], [b], golds, domains, n_boot=30), _cls([b], [a], golds, domains, n_boot=30)
    for key in KEYS:
        assert backward[key].estimate == pytest.approx(-forward[key].estimate)
        assert backward[key].low == pytest.approx(-forward[key].high)
        assert backward[key].high == pytest.approx(-forward[key].low)


def test_same_seed_same_result_other_seed_other_replicates():
    golds, domains = _mc_data()
    policy = [g if i % 3 else None for i, g in enumerate(golds)]
    baseline = [g if i % 2 else None for i, g in enumerate(golds)]
    first = _mc([policy], [baseline], golds, domains, seed=7)
    assert _mc([policy], [baseline], golds, domains, seed=7) == first
    other = _mc([policy], [baseline], golds, domains, seed=8)
    assert other["micro"].estimate == first["micro"].estimate
    assert (other["micro"].low, other["micro"].high) != (first["micro"].low, first["micro"].high)


def test_higher_confidence_gives_a_wider_interval_around_the_same_replicates():
    golds, domains = _mc_data()
    policy = [g if i % 3 else None for i, g in enumerate(golds)]
    baseline = [g if i % 2 else None for i, g in enumerate(golds)]
    narrow = _mc([policy], [baseline], golds, domains, confidence=0.5)["micro"]
    wide = _mc([policy], [baseline], golds, domains, confidence=0.99)["micro"]
    assert wide.low <= narrow.low <= narrow.high <= wide.high
    assert wide.high - wide.low > narrow.high - narrow.low


def test_copies_of_one_run_reduce_to_the_plain_paired_bootstrap():
    # Rows and runs come from separate random streams, so the row draws are the same
    # and the mean of identical runs is that run's score exactly.
    golds, domains = _mc_data()
    policy = [g if i % 3 else None for i, g in enumerate(golds)]
    baseline = [g if i % 2 else None for i, g in enumerate(golds)]
    plain = _mc([policy], [baseline], golds, domains, n_boot=50)
    assert _mc([policy, list(policy), list(policy)], [baseline, list(baseline)], golds, domains, n_boot=50) == plain


def test_two_level_bootstrap_averages_seeds_and_carries_their_spread():
    golds, domains = _mc_data()
    perfect = list(golds)
    hopeless = [_wrong(g, LETTERS) for g in golds]
    half = [g if i % 2 else None for i, g in enumerate(golds)]
    result = _mc([perfect, hopeless], [half], golds, domains)
    # Mean over the policy's seeds: (1 + 0) / 2 on every row set, the same as the baseline on the full set.
    assert result["micro"].estimate == pytest.approx(0.0)
    # Replicates that draw the perfect seed twice gain +0.5, the hopeless one twice -0.5:
    # the seed-to-seed spread makes the interval wide, unlike a row-only bootstrap.
    assert result["micro"].low < -0.3 and result["micro"].high > 0.3
    assert not result["micro"].excludes_zero


def test_no_tail_domain_gives_none_for_tail():
    golds, domains = _mc_data()
    pools = {"p": 100, "q": 60, "r": 51}  # every domain is head
    policy = list(golds)
    baseline = [g if i % 2 else None for i, g in enumerate(golds)]
    result = _mc([policy], [baseline], golds, domains, pools=pools, n_boot=20)
    assert result["tail"] == Interval(estimate=None, low=None, high=None, n_boot=0)
    assert result["head"].estimate == pytest.approx(0.5) and result["head"].excludes_zero


def test_rows_are_resampled_within_domains_so_a_one_row_domain_is_in_every_replicate():
    # One tail row among 30: a row-level bootstrap would miss it in about a third of the
    # replicates; resampled within its domain it is drawn every time.
    golds = [LETTERS[i % 4] for i in range(30)]
    domains = ["p"] * 29 + ["r"]
    policy, baseline = list(golds), [None] * 30
    for seed in range(10):
        tail = _mc([policy], [baseline], golds, domains, n_boot=4, seed=seed, keys=("tail",))["tail"]
        assert tail == Interval(estimate=1.0, low=1.0, high=1.0, n_boot=4)


def test_one_row_per_domain_leaves_the_interval_undefined_not_zero_wide():
    # The smoke preset's test set: one row per domain. Resampled within their
    # domains the rows never vary; a zero-width interval would call any
    # difference significant, so there is none.
    golds = domains = list(LABELS)
    policy, baseline = ["earn", "acq", "crude", None, None], [None, None, None, "trade", "gold"]
    result = _cls([policy], [baseline], golds, domains, n_boot=50)
    assert result["micro"].estimate > 0
    assert all(r.low is None and r.high is None and not r.excludes_zero for r in result.values())
    # A second row in one domain gives the replicates something to vary.
    wider = _cls([[*policy, None]], [[*baseline, "earn"]], [*golds, "earn"], [*domains, "earn"], n_boot=50)
    assert wider["micro"].low is not None and wider["micro"].low < wider["micro"].high


def test_with_the_full_splits_counts_the_estimate_is_the_weighted_difference():
    golds, domains = _mc_data()
    counts = {"p": 200, "q": 20, "r": 20}  # 20 rows of each domain drawn
    policy = [g if d == "p" else None for g, d in zip(golds, domains)]  # right on the big domain only
    baseline = [g if d != "p" else None for g, d in zip(golds, domains)]
    result = _mc([policy], [baseline], golds, domains, n_boot=50, test_counts=counts, keys=ALL_KEYS)
    # Weighted micro: policy 200/240, baseline 40/240; balanced micro 1/3 and 2/3.
    assert result["micro"].estimate == pytest.approx(160 / 240) and result["micro"].excludes_zero
    assert result["balanced_micro"].estimate == pytest.approx(-1 / 3) and result["balanced_micro"].excludes_zero
    assert result["macro"].estimate == pytest.approx(-1 / 3)  # macro: one vote per domain either way


def test_only_requested_keys_are_returned():
    golds, domains = _mc_data()
    result = _mc([list(golds)], [list(golds)], golds, domains, n_boot=5, keys=("micro", "tail"))
    assert list(result) == ["micro", "tail"]


def test_excludes_zero():
    assert Interval(0.1, 0.02, 0.2, 10).excludes_zero
    assert Interval(-0.1, -0.2, -0.01, 10).excludes_zero
    assert not Interval(0.1, 0.0, 0.2, 10).excludes_zero
    assert not Interval(0.1, -0.1, 0.2, 10).excludes_zero
    assert not Interval(None, None, None, 0).excludes_zero


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(domains=["p"]), "golds but 1 domains"),
        (dict(golds=[], domains=[]), "no test rows"),
        (dict(policy_runs=[]), "policy has no runs"),
        (dict(baseline_runs=[]), "baseline has no runs"),
        (dict(policy_runs=[["A"]]), "policy run 0 has 1 predictions, expected 3"),
        (dict(baseline_runs=[["A", "B", "C"], ["A"]]), "baseline run 1 has 1 predictions"),
        (dict(policy_runs=["ABC"]), "policy run 0 is a string"),
        (dict(n_boot=0), "n_boot"),
        (dict(n_boot=2.5), "n_boot"),
        (dict(seed=-1), "seed"),
        (dict(confidence=0.0), "confidence"),
        (dict(confidence=1.0), "confidence"),
        (dict(confidence=95), "confidence"),
        (dict(task="regression"), "task"),
        (dict(keys=("macro", "median")), "keys"),
        (dict(keys=()), "keys"),
    ],
)
def test_bad_input_is_a_one_line_error(change, needle):
    args = dict(
        policy_runs=[["A", "B", "C"]],
        baseline_runs=[["A", "B", None]],
        golds=["A", "B", "C"],
        domains=["p", "q", "r"],
        task="multiple_choice",
        labels=LETTERS,
        pool_counts=MC_POOLS,
        head_threshold=50,
        n_boot=5,
    )
    args.update(change)
    with pytest.raises(BaldistillError, match=needle) as info:
        paired_bootstrap(**args)
    assert "\n" not in str(info.value)


# ---- properties -----------------------------------------------------------------


@st.composite
def mc_cases(draw):
    n = draw(st.integers(1, 12))
    answers = st.lists(st.one_of(st.none(), st.sampled_from(LETTERS)), min_size=n, max_size=n)
    golds = draw(st.lists(st.sampled_from(LETTERS), min_size=n, max_size=n))
    domains = draw(st.lists(st.sampled_from(["p", "q", "r"]), min_size=n, max_size=n))
    return golds, domains, draw(answers), draw(answers)


@settings(max_examples=40, deadline=None)
@given(mc_cases(), st.integers(0, 2**32 - 1))
def test_swapping_policy_and_baseline_negates_and_mirrors(case, seed):
    golds, domains, a, b = case
    forward = _mc([a], [b], golds, domains, n_boot=20, seed=seed)
    backward = _mc([b], [a], golds, domains, n_boot=20, seed=seed)
    for key in KEYS:
        f, r = forward[key], backward[key]
        assert r.n_boot == f.n_boot
        assert (f.estimate is None) == (r.estimate is None)
        if f.estimate is not None:
            assert r.estimate == -f.estimate
        assert (f.low is None) == (r.low is None)
        if f.low is not None:
            assert r.low == pytest.approx(-f.high, abs=1e-12) and r.high == pytest.approx(-f.low, abs=1e-12)
            assert -1.0 <= f.low <= f.high <= 1.0
            assert r.excludes_zero == f.excludes_zero


@settings(max_examples=25, deadline=None)
@given(mc_cases(), st.integers(1, 3), st.integers(1, 3))
def test_two_level_estimate_is_the_difference_of_seed_means(case, n_policy, n_baseline):
    golds, domains, a, b = case
    # Seed k of a side gets the answers rotated by k rows, so seeds differ.
    policy = [a[k:] + a[:k] for k in range(n_policy)]
    baseline = [b[k:] + b[:k] for k in range(n_baseline)]
    result = _mc(policy, baseline, golds, domains, n_boot=10, keys=("micro", "macro"))

    def mean(runs, key):
        return sum(score("multiple_choice", golds, r, domains, [], MC_POOLS, 50)[key] for r in runs) / len(runs)

    for key in ("micro", "macro"):
        assert result[key].estimate == pytest.approx(mean(policy, key) - mean(baseline, key))
        # micro and macro are always defined; with one row per domain nothing is resampled
        assert result[key].n_boot == (0 if len(set(domains)) == len(domains) else 10)
