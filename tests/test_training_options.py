"""Training's speed options on the tiny student: bf16 autocast (train.precision) and
micro-batches grouped by length (train.group_by_length), each against the default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.rows import Row
from baldistill.student.device import resolve_precision
from baldistill.student.training import train
from baldistill.student.training_log import read_log

from support.tiny_training import tiny_params

LABELS = ["earn", "acq", "gold", "crude"]
INFO = DatasetInfo("tiny", "classification", LABELS)


def uneven_rows(n: int) -> list[Row]:
    """Rows whose lengths alternate short and long: shuffled pairs are mostly padding."""
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        story = " ".join(["shares"] * (1 if i % 2 else 40))
        rows.append(
            Row(id=str(i), domain=label, input=f"{story} {i}", label=label, rationale=f"The answer is {label}.")
        )
    return rows


def run(model_dir: str, tmp_path: Path, name: str, rows: list[Row], **train_settings) -> tuple[dict, list[dict]]:
    params = tiny_params(model_dir, student={"max_input_tokens": 64}, **train_settings)
    out = tmp_path / name
    summary = train(rows, params.train, params.student, INFO, str(out / "adapter"), str(out / "log"))
    return summary, read_log(out / "log")


def test_grouping_by_length_cuts_the_padding(tiny_student_dir, tmp_path):
    rows = uneven_rows(24)
    settings = {"batch_size": 2, "micro_batch_size": 2, "epochs": 1}
    shuffled, _ = run(tiny_student_dir, tmp_path, "shuffled", rows, **settings)
    grouped, log = run(tiny_student_dir, tmp_path, "grouped", rows, group_by_length=True, **settings)
    assert shuffled["group_by_length"] is False and grouped["group_by_length"] is True
    assert shuffled["padding_share"] > 0.05  # random pairs of a short and a long row (0.10 here)
    assert grouped["padding_share"] < shuffled["padding_share"] / 3
    assert grouped["tokens"] == shuffled["tokens"]  # every row once, whatever the order
    assert len(log) == 12


def test_bf16_autocast_trains_close_to_fp32_and_saves_fp32(tiny_student_dir, tmp_path):
    rows = uneven_rows(8)
    settings = {"batch_size": 4, "micro_batch_size": 4, "epochs": 2}
    fp32, fp32_log = run(tiny_student_dir, tmp_path, "fp32", rows, **settings)
    bf16, bf16_log = run(tiny_student_dir, tmp_path, "bf16", rows, precision="bf16", **settings)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    first = (fp32_log[0]["loss"], bf16_log[0]["loss"])
    assert first[0] != first[1]  # the products did run in bf16 ...
    assert first[1] == pytest.approx(first[0], rel=0.02)  # ... and the loss is fp32's within bf16's precision
    assert bf16_log[-1]["loss"] == pytest.approx(fp32_log[-1]["loss"], rel=0.05)
    weights = load_file(str(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors"))
    assert weights and {w.dtype for w in weights.values()} == {torch.float32}  # LoRA kept in fp32


@pytest.mark.parametrize(
    "setting, native, runs",
    [("auto", True, "bf16"), ("auto", False, "fp32"), ("fp32", True, "fp32"), ("bf16", False, "bf16")],
)
def test_auto_precision_takes_bf16_only_where_the_device_has_it(setting, native, runs):
    assert resolve_precision(setting, native) == runs
