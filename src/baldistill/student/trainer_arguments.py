"""train.* as transformers' Trainer arguments: the optimiser steps a run takes, the
precision the products run in (auto: by what the device has), and the rows' order.
student.training builds its Trainer from them; bench/hand_training.py shares the step counts."""

from __future__ import annotations

import math

from accelerate import PartialState
from transformers import TrainingArguments

from baldistill.core.params import Train
from baldistill.student.device import has_native_bf16, resolve_precision

MAX_GRAD_NORM = 1.0  # gradient clipping (the Trainer's default, written out)


def accumulation_steps(batch_size: int, micro_batch_size: int, num_processes: int) -> int:
    """Micro-batches per optimiser step so that micro x steps x processes ~= batch_size."""
    return max(1, round(batch_size / (micro_batch_size * num_processes)))


def steps_per_epoch(rows: int, micro_batch_size: int, num_processes: int, accumulation: int) -> int:
    """Optimiser steps in one pass over `rows`; the last step of an epoch may hold fewer micro-batches."""
    batches_per_process = math.ceil(math.ceil(rows / micro_batch_size) / num_processes)
    return math.ceil(batches_per_process / accumulation)


def training_arguments(
    cfg: Train, accumulation: int, per_epoch: int, scratch: str, state: PartialState
) -> TrainingArguments:
    """train.* as the Trainer's arguments; the Trainer saves nothing and reports to no one (StepRecords logs)."""
    total_steps = max(1, math.ceil(cfg.epochs * per_epoch))  # what the Trainer computes from num_train_epochs
    return TrainingArguments(
        output_dir=scratch,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        lr_scheduler_type="linear",
        warmup_steps=round(cfg.warmup_ratio * total_steps),  # a whole number of steps, rounded
        max_grad_norm=MAX_GRAD_NORM,
        seed=cfg.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # the rows are model inputs already
        label_names=["labels"],
        # The process's device (the CPU when asked, BALDISTILL_DEVICE / --cpu, or for want of an
        # accelerator): bf16 on the CPU needs it said.
        use_cpu=state.device.type == "cpu",
        bf16=precision(cfg, state) == "bf16",  # autocast: the weights, LoRA and optimiser stay fp32
        **sampling(cfg.group_by_length),
        ddp_find_unused_parameters=False,  # every LoRA weight is used in every step
        disable_tqdm=not state.is_local_main_process,
    )


def precision(cfg: Train, state: PartialState) -> str:
    """train.precision as this process runs it (auto: by what its device has)."""
    return resolve_precision(cfg.precision, has_native_bf16(state.device.type))


def sampling(group_by_length: bool) -> dict:
    """The Trainer's row order: shuffled, or grouped by length (named group_by_length before 5.x)."""
    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}
