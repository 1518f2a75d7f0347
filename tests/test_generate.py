from __future__ import annotations

import torch

from baldistill.student.generation import generate, generate_texts, left_pad, length_batches, stop_token_ids


def test_left_pad_right_aligns_rows():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_length_batches_group_similar_lengths_longest_first():
    assert length_batches([3, 9, 1, 7, 5], 2) == [[1, 3], [4, 0], [2]]


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
