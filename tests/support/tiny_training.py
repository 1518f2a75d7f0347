"""Params for training the tiny student in tests: one place for the settings the
training tests share, each caller naming only what its case changes."""

from __future__ import annotations

from baldistill.core.params import Params


def tiny_params(model: str, student: dict | None = None, **train) -> Params:
    """Params with lr 1e-2, batch 4 and seed 0, short rows (24 input, 16 rationale tokens)
    unless `student` says otherwise, and `train`'s keys over those. fp32 and shuffled rows
    unless asked, so the tests that compare two runs exactly compare like with like (the
    defaults' bf16 and length grouping: test_training_options.py)."""
    return Params.model_validate(
        {
            "budget": {"total": 8},
            "stages": {"s0": "start"},
            "student": {"model": model, "max_input_tokens": 24, "max_rationale_tokens": 16, **(student or {})},
            "train": {"lr": 1e-2, "batch_size": 4, "seed": 0, "precision": "fp32", "group_by_length": False, **train},
        }
    )
