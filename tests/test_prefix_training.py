"""The rows' shared prompt beginning run once per micro-batch (student.prefix_training):
the same loss and gradients as the plain pass, a prefix that never reaches a target
token, and the Trainer's steps unchanged."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Params
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.prefix_training import prompt_length, training_prefix_length, with_shared_prefix
from baldistill.student.training import fresh_lora_student, train
from baldistill.student.training_examples import IGNORE_INDEX, Example, collate, encode_example
from baldistill.student.training_log import read_log

from support.tiny_training import tiny_params

LABELS = ["earn", "acq", "gold", "crude"]
INFO = DatasetInfo("tiny", "classification", LABELS)


def params_for(model: str, **train) -> Params:
    # LoRA dropout 0: one dropout mask per prefix is the only designed difference.
    student = {"max_input_tokens": 48, "max_rationale_tokens": 24, "lora": {"dropout": 0.0}}
    return tiny_params(model, student, **{"micro_batch_size": 4, "epochs": 2, **train})


def rows() -> list[Row]:
    stories = ["shares rose", "the group agreed to buy the company for cash", "gold fell two dlrs", "oil"]
    return [
        Row(
            id=str(i),
            domain=label,
            input=f"{story}, traders said on day {i}",
            label=label,
            rationale=f"The story says {story}. The answer is {label}.",
        )
        for i, (story, label) in enumerate(zip(stories, LABELS))
    ]


def loss_and_grads(model, inputs) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_shared_prefix_gives_the_plain_pass_s_loss_and_gradients(tiny_student_dir):
    params = params_for(tiny_student_dir)
    torch.manual_seed(0)
    model, tokenizer = fresh_lora_student(params.student, gradient_checkpointing=False)
    with torch.no_grad():  # B starts at zero, which would leave A without gradient
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.05)
    prompts = load_prompts("classification", LABELS)
    examples = [encode_example(r, tokenizer, prompts, params.student) for r in rows()]
    batch = collate(examples, tokenizer.pad_token_id)
    length = training_prefix_length(examples)
    assert length > 20  # chat header, instruction and the label set

    plain_loss, plain_grads = loss_and_grads(model, batch)
    shared_loss, shared_grads = loss_and_grads(model, with_shared_prefix(model, batch, length))

    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain_grads.keys() == shared_grads.keys() and any("lora_A" in n for n in plain_grads)
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=0, max_size=6),
    st.lists(st.tuples(st.lists(st.integers(0, 3), max_size=4), st.lists(st.integers(0, 3), min_size=1, max_size=4))),
)
def test_the_prefix_never_reaches_a_target_token(common, rows_):
    """Prompts that share `common`, targets that may even start alike: the prefix stays
    inside every prompt and leaves each at least one token of its own."""
    prompts = [(common + own, target) for own, target in rows_ if common + own]
    examples = [Example(prompt + target, [IGNORE_INDEX] * len(prompt) + target) for prompt, target in prompts]
    if not examples:
        return
    length = training_prefix_length(examples)
    assert all(length < prompt_length(e) for e in examples)
    assert all(e.input_ids[:length] == examples[0].input_ids[:length] for e in examples)
    if all(prompt_length(e) > len(common) for e in examples):
        assert length >= len(common)


def test_training_with_the_shared_prefix_makes_the_plain_steps(tiny_student_dir, tmp_path):
    """Two epochs through the Trainer, shared against plain: the same per-step losses."""
    logs, summaries = {}, {}
    for share in (True, False):
        params = params_for(tiny_student_dir, share_prefix=share)
        live = tmp_path / f"log-{share}"
        summaries[share] = train(rows(), params.train, params.student, INFO, str(tmp_path / f"a-{share}"), str(live))
        logs[share] = read_log(live)
    assert summaries[True]["shared_prefix_tokens"] > 20 and summaries[False]["shared_prefix_tokens"] == 0
    assert [s["step"] for s in logs[True]] == [s["step"] for s in logs[False]] == [1, 2]
    assert [s["tokens"] for s in logs[True]] == [s["tokens"] for s in logs[False]]  # rows' tokens, as before
    for shared, plain in zip(logs[True], logs[False]):
        assert shared["loss"] == pytest.approx(plain["loss"], abs=1e-4)
    assert logs[True][1]["loss"] != logs[True][0]["loss"]  # the first step changed the weights the second one used


def test_gradient_checkpointing_takes_the_plain_pass(tiny_student_dir, tmp_path):
    params = params_for(tiny_student_dir, gradient_checkpointing=True, epochs=1)
    summary = train(rows(), params.train, params.student, INFO, str(tmp_path / "a"), str(tmp_path / "log"))
    assert summary["shared_prefix_tokens"] == 0 and summary["steps"] == 1
