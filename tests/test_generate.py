from __future__ import annotations

import copy
import itertools

import torch
from hypothesis import given
from hypothesis import strategies as st

from baldistill.student.generation import (
    generate,
    generate_texts,
    left_pad,
    length_batches,
    stop_token_ids,
    token_batches,
)
from baldistill.student.model import pack_linears
from baldistill.student.prefix_cache import shared_prefix_length


def test_left_pad_right_aligns_rows():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_length_batches_group_similar_lengths_longest_first():
    assert length_batches([3, 9, 1, 7, 5], 2) == [[1, 3], [4, 0], [2]]


@given(
    st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    st.integers(min_value=1, max_value=20),
    st.one_of(st.none(), st.integers(min_value=1, max_value=4000)),
    st.integers(min_value=0, max_value=100),
)
def test_token_batches_hold_every_row_once_within_both_caps(lengths, max_rows, max_tokens, new):
    batches = token_batches(lengths, max_rows, max_tokens, new)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [i for b in batches for i in b]
    assert flat == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # longest first, stable
    for batch in batches:
        assert 1 <= len(batch) <= max_rows
        if max_tokens is not None and len(batch) > 1:  # a row over the cap alone still gets a batch
            assert len(batch) * (lengths[batch[0]] + new) <= max_tokens
    if max_tokens is None:
        assert batches == length_batches(lengths, max_rows)
    else:  # greedy: a batch closes only when the next row would break a cap
        for batch, following in itertools.pairwise(batches):
            grown = (len(batch) + 1) * (lengths[batch[0]] + new)
            assert len(batch) == max_rows or grown > max_tokens, (batch, following)


def test_token_batches_put_more_short_rows_in_a_batch():
    assert token_batches([100, 100, 20, 20, 20, 20], 8, 250, 0) == [[0, 1], [2, 3, 4, 5]]
    assert token_batches([100, 100, 20, 20, 20, 20], 3, 250, 0) == [[0, 1], [2, 3, 4], [5]]


@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=6))
def test_shared_prefix_is_the_longest_common_start_leaving_every_row_a_token(seqs):
    n = shared_prefix_length(seqs)
    assert all(s[:n] == seqs[0][:n] for s in seqs)
    assert all(len(s) > n for s in seqs)
    longer = n + 1
    assert any(len(s) <= longer or s[:longer] != seqs[0][:longer] for s in seqs)


def test_shared_prefix_length_examples():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # the last token stays the row's own
    assert shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([]) == 0


def test_shared_prefix_and_token_batches_change_no_output(eos_student):
    """The prefix run once and copied, stopped rows dropped, big or small batches: the same
    tokens and NLLs as plain left-padded batches of 3 (prompts share the chat header)."""
    model, tokenizer, prompts, max_new, lengths = eos_student
    plain = generate(model, tokenizer, prompts, max_new, 3, share_prefix=False, with_nll=True, progress=False)
    for rows, tokens in ((3, None), (8, None), (8, 300), (2, 10_000)):
        got = generate(model, tokenizer, prompts, max_new, rows, batch_tokens=tokens, with_nll=True, progress=False)
        assert [g.token_ids for g in got] == [g.token_ids for g in plain]
        assert [g.stopped for g in got] == [g.stopped for g in plain]
        for a, b in zip(got, plain):
            assert torch.allclose(torch.tensor(a.nll), torch.tensor(b.nll), rtol=1e-4, atol=1e-5)
    assert [len(g.token_ids) if g.stopped else None for g in plain] == lengths


def test_batched_equals_one_at_a_time_and_keeps_order(eos_student):
    model, tokenizer, prompts, max_new, lengths = eos_student
    batched = generate(model, tokenizer, prompts, max_new, batch_size=len(prompts), with_nll=True, progress=False)
    single = [generate(model, tokenizer, [p], max_new, batch_size=1, with_nll=True, progress=False)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    for b, s in zip(batched, single):
        assert torch.allclose(torch.tensor(b.nll), torch.tensor(s.nll), rtol=1e-4, atol=1e-5)
    assert [len(g.token_ids) if g.stopped else None for g in batched] == lengths


def test_rows_end_at_their_stop_token(eos_student):
    model, tokenizer, prompts, max_new, _ = eos_student
    stops = set(stop_token_ids(model, tokenizer))
    for g in generate(model, tokenizer, prompts, max_new, batch_size=3, with_nll=True, progress=False):
        assert len(g.nll) == len(g.token_ids) <= max_new
        assert all(t not in stops for t in g.token_ids[:-1])
        assert (g.token_ids[-1] in stops) == g.stopped
        assert not g.stopped or len(g.token_ids) < max_new or g.token_ids[-1] in stops
        assert tokenizer.eos_token not in g.text
        assert all(v >= 0 for v in g.nll)


def test_generate_texts_is_the_text_of_generate(eos_student):
    model, tokenizer, prompts, max_new, _ = eos_student
    texts = generate_texts(model, tokenizer, prompts[:3], max_new, batch_size=2)
    assert texts == [g.text for g in generate(model, tokenizer, prompts[:3], max_new, 2, progress=False)]
    assert generate(model, tokenizer, prompts[:2], max_new, 2, progress=False)[0].nll is None


def test_prepacked_linears_generate_the_same(eos_student):
    """The CPU inference model (linear layers prepacked for oneDNN) decodes the same tokens
    with the same NLLs as plain nn.Linear."""
    model, tokenizer, prompts, max_new, _ = eos_student
    plain = generate(model, tokenizer, prompts, max_new, 4, with_nll=True, progress=False)
    packed = copy.deepcopy(model)
    assert pack_linears(packed) == 2 * 7 + 1  # q k v o gate up down per layer, and the lm_head
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    got = generate(packed, tokenizer, prompts, max_new, 4, with_nll=True, progress=False)
    assert [g.token_ids for g in got] == [g.token_ids for g in plain]
    for a, b in zip(got, plain):
        assert torch.allclose(torch.tensor(a.nll), torch.tensor(b.nll), rtol=1e-4, atol=1e-5)
