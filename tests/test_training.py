"""LoRA training on the tiny student: masking, loss, fresh adapters, BASE, multi-process."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Params, Student
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.encoding import build_prompt, encode_prompt
from baldistill.student.model import BASE_MARKER, has_adapter, load_student, load_tokenizer
from baldistill.student.trainer_arguments import accumulation_steps
from baldistill.student.training import train
from baldistill.student.training_examples import IGNORE_INDEX, collate, encode_example
from baldistill.student.training_log import STEP_METRICS, read_log

from support.tiny_training import tiny_params

SCRIPTS = Path(__file__).parent / "support"  # holds the scripts these tests run as subprocesses
LABELS = ["earn", "acq", "gold", "crude"]
INFO = DatasetInfo("tiny", "classification", LABELS)


def make_params(model: str, **train) -> Params:
    return tiny_params(model, **{"micro_batch_size": 2, "epochs": 3, **train})


def make_rows(rationale: bool = True) -> list[Row]:
    return [
        Row(
            id=str(i),
            domain=label,
            input=f"news {i}: shares of the {label} group moved today",
            label=label,
            rationale=f"The story is about {label}. The answer is {label}." if rationale else None,
        )
        for i, label in enumerate(LABELS)
    ]


def adapter_weights(out_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(out_dir) / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(tiny_student_dir, tmp_path_factory):
    """One short run shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("train")
    params = make_params(tiny_student_dir)
    summary = train(
        make_rows(), params.train, params.student, INFO, str(out / "adapter"), str(out / "log"), {"note": 1}
    )
    return out, summary


def test_prompt_tokens_are_masked_and_target_is_trained(tiny_student_dir):
    tokenizer = load_tokenizer(tiny_student_dir)
    params = make_params(tiny_student_dir)
    prompts = load_prompts("classification", LABELS)
    row = make_rows()[0]
    example = encode_example(row, tokenizer, prompts, params.student)
    prompt_ids = encode_prompt(tokenizer, build_prompt(tokenizer, prompts, row.input, params.student.max_input_tokens))
    n = len(prompt_ids)
    assert example.input_ids[:n] == prompt_ids  # the exact ids the student sees at evaluation
    assert example.labels[:n] == [IGNORE_INDEX] * n
    assert example.labels[n:] == example.input_ids[n:]
    assert tokenizer.decode(example.labels[n:]) == f"{row.rationale}{tokenizer.eos_token}"


def test_label_only_rows_train_on_the_answer_sentence(tiny_student_dir):
    tokenizer = load_tokenizer(tiny_student_dir)
    params = make_params(tiny_student_dir)
    example = encode_example(
        make_rows(rationale=False)[1], tokenizer, load_prompts("classification", LABELS), params.student
    )
    target = [t for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(target) == f"The answer is acq.{tokenizer.eos_token}"


def test_collate_pads_right_and_masks_padding(tiny_student_dir):
    tokenizer = load_tokenizer(tiny_student_dir)
    params = make_params(tiny_student_dir)
    prompts = load_prompts("classification", LABELS)
    rows = make_rows()
    rows[0] = rows[0].with_(input="a much longer story " * 6)
    examples = [encode_example(row, tokenizer, prompts, params.student) for row in rows[:2]]
    batch = collate(examples, pad_id=tokenizer.pad_token_id)
    short = min(range(2), key=lambda i: len(examples[i].input_ids))
    n = len(examples[short].input_ids)
    assert batch["input_ids"].shape[1] == max(len(e.input_ids) for e in examples)
    assert batch["attention_mask"][short, n:].sum() == 0
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert batch["labels"][short, :n].tolist() == examples[short].labels


def test_accumulation_keeps_the_effective_batch():
    assert accumulation_steps(16, 4, 1) == 4
    assert accumulation_steps(16, 4, 2) == 2
    assert accumulation_steps(4, 8, 1) == 1


def first_step_loss(model_dir: str, tmp_path, micro_batch_size: int) -> float:
    """The logged loss of a one-step run whose single step holds all four rows."""
    params = make_params(model_dir, batch_size=4, micro_batch_size=micro_batch_size, epochs=1)
    live = tmp_path / f"log-micro{micro_batch_size}"
    train(make_rows(), params.train, params.student, INFO, str(tmp_path / "a"), str(live))
    [step] = read_log(live)
    return step["loss"]


def test_the_trainer_s_loss_is_on_the_rationale_only(tiny_student_dir, tmp_path):
    """A fresh LoRA starts as the base model (its B is 0), so the first step's loss is the
    base model's cross-entropy over the four rows' targets: prompt tokens carry none."""
    logged = first_step_loss(tiny_student_dir, tmp_path, micro_batch_size=4)
    params = make_params(tiny_student_dir)
    model, tokenizer = load_student(tiny_student_dir)
    examples = [
        encode_example(r, tokenizer, load_prompts("classification", LABELS), params.student) for r in make_rows()
    ]
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        on_targets = model(**batch).loss.item()
        everything = model(**{**batch, "labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)})
    assert logged == pytest.approx(on_targets, abs=1e-5)
    assert abs(everything.loss.item() - on_targets) > 1e-3  # so the test can tell the two apart


def test_accumulated_micro_batches_make_the_same_step(tiny_student_dir, tmp_path):
    """Batch 4 as 2 micro-batches of 2: the step sees the same rows and the same
    (token-weighted) loss as one micro-batch of 4."""
    assert first_step_loss(tiny_student_dir, tmp_path, 2) == pytest.approx(
        first_step_loss(tiny_student_dir, tmp_path, 4), abs=1e-5
    )


def test_training_writes_adapter_log_and_summary(trained):
    out, summary = trained
    assert has_adapter(out / "adapter")
    assert not (out / "adapter" / BASE_MARKER).exists()
    log = read_log(out / "log")
    assert [sorted(step) for step in log] == [sorted(("step", *STEP_METRICS))] * 3
    assert [step["step"] for step in log] == [1, 2, 3]  # optimiser steps, counted from 1
    assert len(log) == summary["steps"] == 3  # 4 rows / batch 4 = 1 step per epoch, 3 epochs
    assert summary["train_rows"] == 4 and summary["gradient_accumulation_steps"] == 2
    assert summary["tokens"] == log[-1]["tokens"] > log[0]["tokens"] > 0
    assert [step["epoch"] for step in log] == [1.0, 2.0, 3.0]
    assert all(step["tokens_per_s"] > 0 for step in log)
    assert summary["overall_tokens_per_s"] > 0 and summary["peak_rss_mb"] > 0
    assert log[0]["lr"] == pytest.approx(1e-2)  # linear decay from lr, no warmup
    assert log[1]["lr"] < log[0]["lr"]


def test_the_log_is_dvclive_s_and_only_the_throughput_depends_on_the_clock(trained):
    """metrics.json (what `dvc exp show` reads) holds the summary and the last step;
    the TSVs have no timestamp column, so re-running gives the same loss/lr files."""
    out, summary = trained
    metrics = json.loads((out / "log" / "metrics.json").read_text())
    assert metrics == summary and metrics["note"] == 1 and metrics["step"] == 3
    assert metrics["loss"] == read_log(out / "log")[-1]["loss"]
    headers = {name: (out / "log/plots/metrics" / f"{name}.tsv").read_text().splitlines()[0] for name in STEP_METRICS}
    assert headers == {name: f"step\t{name}" for name in STEP_METRICS}
    assert sorted(p.name for p in (out / "log").iterdir()) == ["metrics.json", "plots"]  # no dvc.yaml, no report


def test_loss_decreases_on_a_repeated_small_set(trained):
    out, summary = trained
    losses = [step["loss"] for step in read_log(out / "log")]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert summary["loss"] == pytest.approx(losses[-1])


def test_each_call_trains_a_fresh_lora(tiny_student_dir, trained, tmp_path):
    """Same rows and seed -> the same weights: nothing carries over from the earlier run."""
    first, _ = trained
    params = make_params(tiny_student_dir)
    train(make_rows(), params.train, params.student, INFO, str(tmp_path / "again"), str(tmp_path / "log"))
    a, b = adapter_weights(first / "adapter"), adapter_weights(tmp_path / "again")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("loss", "lr", "epoch", "tokens"):  # the step files DVC caches are the same on a re-run
        tsv = f"plots/metrics/{name}.tsv"
        assert (tmp_path / "log" / tsv).read_bytes() == (first / "log" / tsv).read_bytes()
    other = make_params(tiny_student_dir, seed=1)
    train(make_rows(), other.train, other.student, INFO, str(tmp_path / "seed1"), str(tmp_path / "log1"))
    c = adapter_weights(tmp_path / "seed1")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_trained_adapter_loads_and_changes_the_model(tiny_student_dir, trained):
    out, _ = trained
    base, tokenizer = load_student(tiny_student_dir)
    tuned, _ = load_student(tiny_student_dir, str(out / "adapter"))
    ids = tokenizer("The answer is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)


def test_zero_rows_write_a_base_marker(tiny_student_dir, tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    params = make_params(tiny_student_dir)
    (tmp_path / "log/plots/metrics").mkdir(parents=True)
    (tmp_path / "log/plots/metrics/loss.tsv").write_text("step\tloss\n1\t9.0\n")  # an earlier run's
    summary = train([], params.train, params.student, INFO, str(out), str(tmp_path / "log"))
    assert sorted(p.name for p in out.iterdir()) == [BASE_MARKER]
    assert has_adapter(out) is False
    assert summary["steps"] == 0 and summary["train_rows"] == 0 and "loss" not in summary
    assert read_log(tmp_path / "log") == []  # every step file there, header only
    assert json.loads((tmp_path / "log/metrics.json").read_text()) == summary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_train_runs_under_accelerate_launch_with_two_processes(tiny_student_dir, tmp_path):
    """`accelerate launch --cpu` alone starts one process (its multi-CPU path needs
    mpirun); torchrun-style `--multi_gpu` with ACCELERATE_USE_CPU=true starts two."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(SCRIPTS / "train_tiny.py"),
        tiny_student_dir, str(tmp_path / "adapter"), str(tmp_path / "log"), str(tmp_path / "summary.json"),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["gradient_accumulation_steps"] == 2  # batch 4 = micro 1 x 2 steps x 2 processes
    assert has_adapter(tmp_path / "adapter")
    log = read_log(tmp_path / "log")
    assert len(log) == summary["steps"] == 2
    assert all(math.isfinite(r["loss"]) for r in log)
    assert log[-1]["tokens"] == summary["tokens"] > 0


@pytest.mark.slow
def test_real_student_trains_two_steps(tmp_path):
    params = make_params("smollm2-135m-instruct", lr=2e-4, batch_size=2, micro_batch_size=2, epochs=1)
    try:
        summary = train(
            make_rows(),
            params.train,
            params.student,
            INFO,
            str(tmp_path / "adapter"),
            str(tmp_path / "log"),
        )
    except Exception as exc:  # not set up on this machine
        if "not set up" in str(exc):
            pytest.skip(str(exc))
        raise
    assert summary["steps"] == 2 and math.isfinite(summary["loss"])
    assert has_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 100_000


def test_gradient_checkpointing_when_params_ask_for_it(tiny_student_dir):
    """train.gradient_checkpointing is optional in params; when true, LoRA still gets gradients."""
    from baldistill.student.training import fresh_lora_student

    params = make_params(tiny_student_dir)
    model, tokenizer = fresh_lora_student(params.student, gradient_checkpointing=True)
    assert model.base_model.model.is_gradient_checkpointing
    ids = tokenizer("The answer is earn.", return_tensors="pt").input_ids
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # B starts at 0, A gets no grad yet
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    plain, _ = fresh_lora_student(params.student, gradient_checkpointing=False)
    assert not plain.base_model.model.is_gradient_checkpointing


def test_the_train_step_reads_every_student_key():
    """stages/train.py passes the student section on leaf by leaf (dvc.yaml lists those
    keys); a key added to the section must be read there too, or left out on purpose."""
    assert set(Student.model_fields) == {"model", "lora", "max_input_tokens", "max_rationale_tokens"}
