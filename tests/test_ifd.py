from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baldistill.student import ifd
from baldistill.student.encoding import encode_prompt

nll_lists = st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=40)
ifd_values = st.one_of(st.floats(min_value=0.0, max_value=5.0), st.just(math.nan), st.just(math.inf), st.just(1.0))


def rel_close(a: float, b: float, rel: float = 1e-4) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


# ----------------------------------------------------------------------------- pure maths


@given(nll_lists)
def test_perplexity_is_exp_of_mean(nll):
    assert math.isclose(ifd.perplexity(nll), math.exp(sum(nll) / len(nll)), rel_tol=1e-9)
    assert ifd.perplexity(nll) >= 1.0


@given(nll_lists, nll_lists)
def test_ifd_is_the_ratio_of_perplexities(cond, direct):
    score = ifd.score_from_nll(cond, direct)
    assert math.isclose(score.ifd, score.ppl_cond / score.ppl_direct, rel_tol=1e-9)
    assert score.ifd > 0


@given(nll_lists, st.floats(min_value=0.0, max_value=10.0))
def test_ifd_below_one_iff_prompt_helps(direct, gain):
    cond = [max(v - gain, 0.0) for v in direct]
    assert ifd.ifd_from_nll(cond, direct) <= 1.0
    assert ifd.ifd_from_nll(direct, direct) == 1.0


@given(st.floats(min_value=710.0, max_value=1e6))
def test_huge_nll_never_overflows(big):
    assert ifd.perplexity([big]) == math.inf
    assert ifd.ifd_from_nll([big], [big]) == 1.0  # both perplexities overflow, their ratio does not
    assert ifd.ifd_from_nll([big], [0.0]) == math.inf
    assert 0.0 <= ifd.ifd_from_nll([0.0], [big]) < 1e-300


@pytest.mark.parametrize(
    "cond, direct",
    [([], [1.0]), ([1.0], []), ([math.nan], [1.0]), ([1.0], [math.nan]), ([math.inf], [math.inf])],
)
def test_undefined_ifd_is_nan_and_json_safe(cond, direct):
    score = ifd.score_from_nll(cond, direct)
    assert math.isnan(score.ifd)
    assert score.as_meta()["ifd"] is None


@given(st.lists(ifd_values, max_size=30), st.integers(min_value=0, max_value=35), st.booleans())
@settings(max_examples=300)
def test_rank_properties(values, k, drop):
    picks = ifd.rank(values, k, drop)
    assert len(picks) == min(k, len(values)) == len(set(picks))
    preferred = [i for i in range(len(values)) if ifd.is_preferred(values[i], drop)]
    head = picks[: len(preferred)]
    # Preferred rows come first, highest IFD first, and they are the k best of them.
    assert all(ifd.is_preferred(values[i], drop) for i in head)
    assert [values[i] for i in head] == sorted((values[i] for i in head), reverse=True)
    if len(preferred) >= k:
        best = sorted((values[i] for i in preferred), reverse=True)[:k]
        assert sorted((values[i] for i in picks), reverse=True) == best
    # Fill-up: finite >= 1 lowest first, then inf, then NaN.
    tail = [values[i] for i in picks[len(preferred) :]]
    keys = [(math.isnan(v), v if not math.isnan(v) else 0.0) for v in tail]
    assert keys == sorted(keys)


def test_rank_drops_ifd_ge_1_only_while_others_remain():
    values = [0.5, 1.2, 0.9, math.nan, 1.0, 3.0]
    assert ifd.rank(values, 2) == [2, 0]
    assert ifd.rank(values, 5) == [2, 0, 4, 1, 5]
    assert ifd.rank(values, 6)[-1] == 3
    assert ifd.rank(values, 3, drop_ifd_ge_1=False) == [5, 1, 4]


@given(st.lists(st.floats(min_value=0.0, max_value=0.99), min_size=1, max_size=30, unique=True), st.data())
def test_pick_percentiles_are_order_statistic_expectations(values, data):
    n = len(values)
    k = data.draw(st.integers(min_value=0, max_value=n))
    got = ifd.pick_percentiles(values, k)
    assert got == [(n - j) / (n + 1) for j in range(k)]
    # The top pick of n candidates sits at n/(n+1); every row picked averages 1/2, as random would.
    assert ifd.pick_percentiles(values, 1) == [n / (n + 1)]
    assert math.isclose(sum(ifd.pick_percentiles(values, n)) / n, 0.5)


def test_pick_percentiles_of_six_candidates_reach_the_85th():
    rng = __import__("random").Random(0)
    population = [rng.random() * 0.99 for _ in range(5000)]
    sorted_pop = sorted(population)
    seen = []
    for _ in range(2000):
        cands = rng.sample(population, 6)
        top = cands[ifd.rank(cands, 1)[0]]
        seen.append(sum(v < top for v in sorted_pop) / len(sorted_pop))
        assert ifd.pick_percentiles(cands, 1) == [6 / 7]
    # The estimator's 6/7 matches the percentile actually reached in the population.
    assert abs(sum(seen) / len(seen) - 6 / 7) < 0.01


# ----------------------------------------------------------------------------- model scorers


def test_smollm2_direct_pass_has_no_start_token(tiny_student_dir):
    from baldistill.student.model import load_tokenizer

    assert ifd.direct_prefix(load_tokenizer(tiny_student_dir)) == []  # as tokenizer.encode in Superfiltering


def _close_scores(a: list[ifd.IfdScore], b: list[ifd.IfdScore]) -> None:
    for x, y in zip(a, b, strict=True):
        for field in ("ifd", "ppl_cond", "ppl_direct"):
            assert rel_close(getattr(x, field), getattr(y, field)), (field, x, y)


def test_batched_two_pass_equals_one_row_reference(eos_student):
    model, tokenizer, prompts, _, _ = eos_student
    gen = torch.Generator().manual_seed(0)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    lengths = [1, 2, 5, 40, 3, 17, 9, 64]  # a one-token response has no direct PPL: NaN on both sides
    responses = [torch.randint(3, len(tokenizer), (n,), generator=gen).tolist() for n in lengths]
    reference = ifd.score_reference(model, tokenizer, prompt_ids, responses)
    for batch_size in (3, 8):
        _close_scores(ifd.score_two_pass(model, tokenizer, prompt_ids, responses, batch_size), reference)
    assert math.isnan(reference[0].ifd) and all(math.isfinite(s.ifd) for s in reference[1:])


def test_generation_route_equals_two_pass(eos_student):
    model, tokenizer, prompts, max_new, lengths = eos_student
    assert None in lengths and any(n is not None and n < max_new for n in lengths)
    generated, by_generation = ifd.score_by_generation(model, tokenizer, prompts, max_new, len(prompts), progress=False)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    responses = [g.token_ids for g in generated]
    assert [len(r) if g.stopped else None for r, g in zip(responses, generated)] == lengths
    assert max(map(len, prompt_ids)) > 1.5 * min(map(len, prompt_ids))  # very different lengths, one batch
    _close_scores(by_generation, ifd.score_two_pass(model, tokenizer, prompt_ids, responses, batch_size=4))
    _close_scores(by_generation, ifd.score_reference(model, tokenizer, prompt_ids, responses))
