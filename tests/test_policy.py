"""Property tests of the balancing policies over random long-tailed pools."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldistill.core.allocation import (
    adaptive_targets,
    adaptive_weight,
    largest_remainder,
    make_plan,
    stage_shares,
)
from baldistill.core.errors import BaldistillError

ALL = ("naive", "adaptive", "feedback", "random", "random_label", "duplicate", "balance", "active", "zeroshot")


@st.composite
def long_tailed(draw):
    """A pool whose domain sizes fall off like a power law, plus B and K."""
    n_domains = draw(st.integers(min_value=1, max_value=12))
    head = draw(st.integers(min_value=1, max_value=400))
    alpha = draw(st.floats(min_value=0.0, max_value=2.5))
    counts = {f"d{i}": max(1, int(head * (i + 1) ** -alpha)) for i in range(n_domains)}
    stages = draw(st.integers(min_value=1, max_value=5))
    budget = draw(st.integers(min_value=n_domains, max_value=n_domains * 40))
    return counts, budget, stages


@given(long_tailed(), st.sampled_from(ALL))
@settings(max_examples=150, deadline=None)
def test_quotas_are_exact_non_negative_and_consistent(case, policy):
    counts, budget, stages = case
    plan = make_plan(counts, budget, stages, policy)
    shares = stage_shares(budget, stages)
    assert sum(shares) == budget and max(shares) - min(shares) <= 1
    used = dict.fromkeys(counts, 0)
    for k, alloc in enumerate(plan["per_stage"]):
        for key in ("quota", "real", "synthetic", "duplicated"):
            assert all(v >= 0 for v in alloc[key].values()), key
        if policy in ("naive", "adaptive", "balance", "duplicate"):
            assert sum(alloc["quota"].values()) == shares[k]
        for d in counts:
            unused = counts[d] - used[d]
            assert alloc["real"][d] <= unused
            # head/tail is decided against the rows earlier stages left unused
            if d in alloc["tail"]:
                assert alloc["quota"][d] > unused and alloc["real"][d] == unused
                assert alloc["synthetic"][d] + alloc["duplicated"][d] == alloc["quota"][d] - unused
            elif policy in ("naive", "adaptive", "balance", "duplicate"):
                assert d in alloc["head"] and alloc["real"][d] == alloc["quota"][d]
            used[d] += alloc["real"][d]
        assert set(alloc["head"]).isdisjoint(alloc["tail"])
    assert plan["teacher_calls"] == sum(r["teacher_calls"] for r in plan["per_stage"])
    assert plan["teacher_calls"] <= budget


@given(long_tailed(), st.sampled_from(("naive", "adaptive", "feedback", "balance", "active", "random")))
@settings(max_examples=100, deadline=None)
def test_spending_policies_use_the_whole_budget_when_the_pool_allows(case, policy):
    counts, budget, stages = case
    plan = make_plan(counts, budget, stages, policy)
    if policy in ("naive", "adaptive", "feedback", "balance") or sum(counts.values()) >= budget:
        assert plan["teacher_calls"] == budget


@given(long_tailed())
@settings(max_examples=100, deadline=None)
def test_adaptive_stage_zero_is_proportional_to_pool_counts(case):
    counts, budget, stages = case
    share = stage_shares(budget, stages)[0]
    quota = make_plan(counts, budget, stages, "adaptive")["per_stage"][0]["quota"]
    total = sum(counts.values())
    for d, n in counts.items():
        exact = Fraction(n * share, total)
        assert abs(quota[d] - exact) < 1  # largest remainder stays within one row


@given(long_tailed())
@settings(max_examples=100, deadline=None)
def test_adaptive_moves_toward_equal_and_ends_balanced(case):
    counts, _budget, stages = case
    n_domains = len(counts)
    total = sum(counts.values())
    previous = None
    for k in range(stages):
        w = adaptive_weight(k, stages, "spread")
        targets = adaptive_targets(counts, 100, w)
        spread = max(targets.values()) - min(targets.values())
        if previous is not None:
            assert spread <= previous
        previous = spread
    if stages > 1:
        final = adaptive_targets(counts, 100, adaptive_weight(stages - 1, stages, "spread"))
        assert set(final.values()) == {Fraction(100, n_domains)}
    assert sum(adaptive_targets(counts, 100, Fraction(1, 3)).values()) == 100
    assert total > 0


def test_adaptive_schedules_follow_their_definition():
    assert [adaptive_weight(k, 4, "zero") for k in range(4)] == [Fraction(k, 4) for k in range(4)]
    assert [adaptive_weight(k, 4, "one") for k in range(4)] == [Fraction(k + 1, 4) for k in range(4)]
    assert [adaptive_weight(k, 4, "spread") for k in range(4)] == [Fraction(k, 3) for k in range(4)]
    assert adaptive_weight(0, 1, "spread") == 0


def test_naive_matches_the_papers_b_over_kl():
    counts = {"a": 100, "b": 50, "c": 40, "d": 30}
    plan = make_plan(counts, 80, 2, "naive")
    assert [r["quota"] for r in plan["per_stage"]] == [{"a": 10, "b": 10, "c": 10, "d": 10}] * 2


def test_tail_domain_takes_all_unused_rows_and_synthesizes_the_rest():
    plan = make_plan({"big": 100, "small": 3}, 20, 2, "naive")
    s0, s1 = plan["per_stage"]
    assert s0["tail"] == ["small"] and s0["real"]["small"] == 3 and s0["synthetic"]["small"] == 2
    # nothing of `small` is left for stage 1: all 5 are synthesized
    assert s1["real"]["small"] == 0 and s1["synthetic"]["small"] == 5
    assert s0["teacher_calls"] == s1["teacher_calls"] == 10


def test_duplicate_fills_tail_by_repetition_without_calls():
    plan = make_plan({"big": 100, "small": 3}, 20, 2, "duplicate")
    s0 = plan["per_stage"][0]
    assert s0["duplicated"]["small"] == 2 and s0["synthetic"]["small"] == 0
    assert s0["teacher_calls"] == 8  # 5 big + 3 small annotated; copies reuse rationales


def test_baselines_without_teacher_calls():
    counts = {"a": 30, "b": 5}
    assert make_plan(counts, 10, 2, "zeroshot")["teacher_calls"] == 0
    plan = make_plan(counts, 10, 2, "random_label")
    assert plan["teacher_calls"] == 0
    assert sum(sum(r["real"].values()) for r in plan["per_stage"]) == 10


def test_random_is_seeded_and_uniform_over_rows():
    counts = {"a": 900, "b": 100}
    plans = [make_plan(counts, 1000, 10, "random", seed=s) for s in range(3)]
    assert plans[0] == make_plan(counts, 1000, 10, "random", seed=0)
    taken_a = sum(r["real"]["a"] for r in make_plan(counts, 500, 1, "random", seed=1)["per_stage"])
    assert 400 < taken_a < 500  # ~90% of a uniform draw comes from `a`


def test_active_leaves_domains_to_run_time():
    plan = make_plan({"a": 30, "b": 5}, 10, 2, "active")
    assert [r["open"] for r in plan["per_stage"]] == [5, 5]
    assert all(sum(r["quota"].values()) == 0 for r in plan["per_stage"])


def test_feedback_plans_stage_zero_as_naive_and_leaves_later_stages_to_run_time():
    counts = {"a": 30, "b": 5}
    plan = make_plan(counts, 20, 2, "feedback")
    naive = make_plan(counts, 20, 2, "naive")
    assert plan["per_stage"][0] == naive["per_stage"][0]
    later = plan["per_stage"][1]
    assert later["teacher_calls"] == 10 and later["open"] == 10 and sum(later["quota"].values()) == 0


def test_largest_remainder_breaks_ties_by_order():
    targets = {d: Fraction(1, 2) for d in "abcd"}
    assert largest_remainder(targets, 2, ["c", "a", "b", "d"]) == {"a": 1, "b": 0, "c": 1, "d": 0}


@pytest.mark.parametrize(
    "counts,budget,stages,policy,message",
    [
        ({"a": 5, "b": 5}, 1, 2, "naive", "smaller than the number of domains"),
        ({"a": 5}, 4, 0, "naive", "at least 1"),
        ({}, 4, 1, "naive", "empty"),
        ({"a": 0}, 4, 1, "naive", "empty"),
        ({"a": 5}, 4, 1, "bogus", "unknown policy"),
    ],
)
def test_impossible_requests_fail_clearly(counts, budget, stages, policy, message):
    with pytest.raises(BaldistillError, match=message):
        make_plan(counts, budget, stages, policy)
