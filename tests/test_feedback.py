"""Property tests of policy feedback's allocation (core/feedback.py): quotas
from the previous student's per-domain validation scores, shrunk, floored and
capped."""

from fractions import Fraction
from math import ceil, floor

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from baldistill.core.allocation import allocate, allocate_stage, largest_remainder, start_state
from baldistill.core.errors import BaldistillError
from baldistill.core.feedback import (
    DomainScore,
    FeedbackRule,
    feedback_targets,
    pooled_score,
    read_scores,
    shrunk_scores,
    water_fill,
)
from baldistill.core.params import Policy

DEFAULT = FeedbackRule(4.0, 0.5, 3.0)


@st.composite
def validated(draw, max_rows=6):
    """Pool counts, this stage's share, and every domain's validation result."""
    n_domains = draw(st.integers(1, 12))
    domains = [f"d{i}" for i in range(n_domains)]
    counts = {d: draw(st.integers(1, 300)) for d in domains}
    share = draw(st.integers(n_domains, n_domains * 40))
    scores = {}
    for d in domains:
        total = draw(st.integers(0, max_rows))
        scores[d] = DomainScore(draw(st.integers(0, total)), total)
    return counts, share, scores


rules = st.builds(
    FeedbackRule,
    st.sampled_from([0.0, 0.5, 1.0, 4.0, 10.0]),
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    st.sampled_from([1.0, 1.5, 3.0, 10.0]),
)


def quotas(counts, share, scores, rule, given=None):
    """Stage 1's quotas for policy feedback (stage 0 done, nothing used yet)."""
    shrunk = shrunk_scores(list(counts), scores, rule.prior_strength)
    alloc = allocate_stage("feedback", counts, {}, given or {}, share, 1, 2, scores=shrunk, rule=rule)
    return alloc.quota


@given(validated(), rules)
@settings(max_examples=200, deadline=None)
def test_quotas_sum_to_the_share_and_keep_floor_and_cap(case, rule):
    counts, share, scores = case
    quota = quotas(counts, share, scores, rule)
    assert sum(quota.values()) == share and all(q >= 0 for q in quota.values())
    equal = Fraction(share, len(counts))
    for q in quota.values():
        assert floor(Fraction(str(rule.floor)) * equal) <= q <= ceil(Fraction(str(rule.cap)) * equal)


@given(validated(), rules)
@settings(max_examples=200, deadline=None)
def test_a_lower_shrunk_score_never_gets_fewer_calls(case, rule):
    counts, share, scores = case
    quota = quotas(counts, share, scores, rule)
    shrunk = shrunk_scores(list(counts), scores, rule.prior_strength)
    for a in counts:
        for b in counts:
            if shrunk[a] < shrunk[b]:
                assert quota[a] >= quota[b], (a, b)


@given(validated(), rules, st.integers(0, 4), st.data())
@settings(max_examples=150, deadline=None)
def test_equal_scores_give_the_first_stages_naive_quotas(case, rule, correct, data):
    counts, share, _ = case
    # every domain at the same rate correct/4, on any number of rows (a multiple of 4)
    scores = {d: DomainScore(correct * m, 4 * m) for d in counts for m in [data.draw(st.integers(0, 3))]}
    given_before = {d: data.draw(st.integers(0, 5)) for d in counts}
    naive = allocate_stage("naive", counts, {}, given_before, share, 1, 2)
    assert quotas(counts, share, scores, rule, given_before) == naive.quota
    first = allocate_stage("feedback", counts, {}, {}, share, 0, 2)  # stage 0 is naive whatever the scores
    assert first.quota == allocate_stage("naive", counts, {}, {}, share, 0, 2).quota


@given(validated(max_rows=4), rules, st.data())
@settings(max_examples=200, deadline=None)
def test_one_noisy_row_moves_a_tail_domains_quota_by_a_bounded_amount(case, rule, data):
    """Flipping one validation row of a domain scored on 1-4 rows changes every
    need 1 - s_j by a factor within [1/r, r] (r measured here); the water-filling
    then moves that domain's target by at most (r^2 - 1) times itself, and the
    rounding adds less than 2."""
    counts, share, scores = case
    domain = data.draw(st.sampled_from(sorted(counts)))
    before = scores[domain]
    assume(before.total > 0)
    flipped = DomainScore(before.correct + (1 if before.correct < before.total else -1), before.total)
    after = {**scores, domain: flipped}
    needs = [
        {d: 1 - s for d, s in shrunk_scores(list(counts), case_scores, rule.prior_strength).items()}
        for case_scores in (scores, after)
    ]
    assume(all(n > 0 for need in needs for n in need.values()))  # a zero need sits at the floor either way
    r = max(max(needs[1][d] / needs[0][d], needs[0][d] / needs[1][d]) for d in counts)
    target = feedback_targets(list(counts), share, shrunk_scores(list(counts), scores, rule.prior_strength), rule)[
        domain
    ]
    moved = abs(quotas(counts, share, after, rule)[domain] - quotas(counts, share, scores, rule)[domain])
    assert moved < (r * r - 1) * target + 2
    # and, for the default prior, one row of a one-row domain moves its score by at most 1/(1 + a) plus
    # the pooled score's shift
    if before.total == 1 and rule.prior_strength == 4.0:
        shrunk = [shrunk_scores(list(counts), s, 4.0)[domain] for s in (scores, after)]
        n_rows = sum(s.total for s in scores.values())
        assert abs(shrunk[1] - shrunk[0]) <= Fraction(1, 5) * (1 + Fraction(4, n_rows))


def test_one_noisy_row_on_an_r52_like_stage():
    """52 domains, B/K = 200, the student at 40% on 4 validation rows per head
    domain and 1 per tail domain: one tail row read right instead of wrong
    moves that domain's quota by 1 call (of the 3.8 equal share), as the doc says."""
    counts = {f"h{i}": 100 for i in range(20)} | {f"t{i}": 5 for i in range(32)}
    scores = {f"h{i}": DomainScore([2, 1, 2, 1, 2][i % 5], 4) for i in range(20)}
    scores |= {f"t{i}": DomainScore(i % 2, 1) for i in range(32)}
    wrong = quotas(counts, 200, scores, DEFAULT)
    right = quotas(counts, 200, {**scores, "t0": DomainScore(1, 1)}, DEFAULT)
    assert abs(wrong["t0"] - right["t0"]) == 1 and wrong["t0"] == 4 and right["t0"] == 3


@given(validated())
@settings(max_examples=100, deadline=None)
def test_shrunk_scores_lie_between_the_domains_rate_and_the_pooled_score(case):
    counts, _, scores = case
    pooled = pooled_score(scores)
    assume(pooled is not None)
    for strength in (0.0, 1.0, 4.0, 1000.0):
        shrunk = shrunk_scores(list(counts), scores, strength)
        for d, s in scores.items():
            rate = Fraction(int(s.correct), s.total) if s.total else pooled
            assert min(rate, pooled) <= shrunk[d] <= max(rate, pooled)
            if strength == 0.0:
                assert shrunk[d] == rate


@given(
    st.lists(st.fractions(min_value=0, max_value=5), min_size=1, max_size=10),
    st.integers(0, 200),
    st.fractions(min_value=0, max_value=1),
    st.fractions(min_value=1, max_value=4),
)
@settings(max_examples=200, deadline=None)
def test_water_fill_is_exact_clipped_and_monotone(weights, total, low_share, high_share):
    size = len(weights)
    low, high = low_share * Fraction(total, size), high_share * Fraction(total, size)
    filled = water_fill({f"d{i}": w for i, w in enumerate(weights)}, total, low, high)
    assert sum(filled.values()) == total
    assert all(low <= t <= high for t in filled.values())
    for i, wi in enumerate(weights):
        for j, wj in enumerate(weights):
            if wi > wj:
                assert filled[f"d{i}"] >= filled[f"d{j}"]


def test_water_fill_is_proportional_where_nothing_binds():
    assert water_fill({"a": Fraction(1), "b": Fraction(3)}, 8, Fraction(0), Fraction(8)) == {"a": 2, "b": 6}
    assert water_fill({"a": Fraction(1), "b": Fraction(3)}, 8, Fraction(3), Fraction(8)) == {"a": 3, "b": 5}
    assert water_fill({"a": Fraction(0), "b": Fraction(3)}, 8, Fraction(1), Fraction(4)) == {"a": 4, "b": 4}


def test_no_validation_rows_and_a_perfect_student_give_naive_balance():
    counts = {"a": 50, "b": 5, "c": 1}
    naive = largest_remainder({d: Fraction(10, 3) for d in counts}, 10, ["a", "b", "c"])
    assert quotas(counts, 10, {}, DEFAULT) == naive
    perfect = {d: DomainScore(3, 3) for d in counts}
    assert quotas(counts, 10, perfect, FeedbackRule(0.0, 0.5, 3.0)) == naive


def test_the_allocate_step_needs_the_scores_after_stage_zero():
    counts = {"a": 50, "b": 5}
    state = allocate(20, Policy(name="feedback"), 2, counts, start_state(counts), 0)
    assert state["quota"] == {"a": 5, "b": 5}
    with pytest.raises(BaldistillError, match="needs stage s0's validation scores"):
        allocate(20, Policy(name="feedback"), 2, counts, state, 1)
    weak_b = {"a": DomainScore(4, 4), "b": DomainScore(0, 4)}
    later = allocate(20, Policy(name="feedback"), 2, counts, state, 1, weak_b)
    assert later["quota"]["b"] > later["quota"]["a"] and sum(later["quota"].values()) == 10
    assert later["tail"] == ["b"] and later["synthetic"]["b"] == later["quota"]["b"]  # b's 5 rows went in s0


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"a": {"correct": 3}}, "domain 'a': expected {correct, total}"),
        ({"a": {"correct": 5, "total": 4}}, "domain 'a': a validation score needs 0 <= correct <= total"),
        ({"a": 0.5}, "domain 'a': expected {correct, total}"),
    ],
)
def test_bad_scores_name_the_file_and_domain(raw, message):
    with pytest.raises(BaldistillError, match=f"scores.json: {message}"):
        read_scores(raw, "scores.json")
