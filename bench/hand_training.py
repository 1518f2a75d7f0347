"""The hand-written training loop that transformers' Trainer replaced in
baldistill.student.training (plain PyTorch on accelerate: prepare /
accumulate / backward), kept here so `bench/train.py --compare` can still run
both side by side. Same contract as `training.train`: outputs, summary, BASE
for no rows. Its step loss is the mean of the micro-batch means (the
Trainer's: token-weighted over the whole step; the same at one micro-batch a
step, the default).
"""

from __future__ import annotations

import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Student, Train
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.device import wants_cpu
from baldistill.student.trainer_arguments import MAX_GRAD_NORM, accumulation_steps
from baldistill.student.training import (
    fresh_lora_student,
    run_summary,
    save_adapter,
    write_base_marker,
)
from baldistill.student.training_examples import collate, encode_example
from baldistill.student.training_log import close_log, log_step, open_log


def hand_loop_train(
    rows: list[Row],
    cfg: Train,
    student: Student,
    info: DatasetInfo,
    out_dir: str,
    live_dir: str,
    notes: dict | None = None,
) -> dict:
    """Fine-tune a fresh LoRA on `rows`; save the adapter to `out_dir`, log every
    optimiser step to the dvclive folder `live_dir` and return the run's summary
    (what metrics.json holds: the last step's values, the run's totals and `notes`).

    With no rows (policy zeroshot) `out_dir` gets only a BASE marker.
    Works unchanged under `accelerate launch` with any number of processes.
    """
    # Accelerator first: it reads the launcher's environment (ACCELERATE_USE_CPU...)
    # before anything else fixes the process layout. It places the model (prepare);
    # BALDISTILL_DEVICE=cpu keeps it on the CPU, as it does the other steps (student.device).
    accelerator = Accelerator(cpu=wants_cpu())
    live = open_log(live_dir) if accelerator.is_main_process else None
    if not rows:
        summary = {**run_summary(0, 0, 0, 0.0), **(notes or {})}
        if live is not None:
            write_base_marker(out_dir)
            close_log(live, summary)
        accelerator.wait_for_everyone()
        return summary
    accum = accumulation_steps(cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accum
    set_seed(cfg.seed)
    model, tokenizer = fresh_lora_student(student, cfg.gradient_checkpointing)
    prompts = load_prompts(info.task, info.labels)
    examples = [encode_example(row, tokenizer, prompts, student) for row in rows]
    loader = DataLoader(
        examples,
        batch_size=cfg.micro_batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=lambda batch: collate(batch, tokenizer.pad_token_id),
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / accum)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    log, seconds = _loop(accelerator, model, optimizer, scheduler, loader, total_steps, steps_per_epoch, live)
    accelerator.wait_for_everyone()
    summary = {
        **log[-1],
        **run_summary(len(log), len(rows), log[-1]["tokens"], seconds),
        "micro_batch_size": cfg.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "num_processes": accelerator.num_processes,
        **(notes or {}),
    }
    if live is not None:
        save_adapter(accelerator.unwrap_model(model), out_dir)
        close_log(live, summary)
    accelerator.wait_for_everyone()
    return summary


def _loop(accelerator, model, optimizer, scheduler, loader, total_steps: int, steps_per_epoch: int, live):
    """The optimisation loop; returns (per-step records, seconds). The main
    process (`live` not None) logs each step as it ends."""
    log: list[dict] = []
    step, tokens, micro_losses, micro_tokens = 0, 0, [], 0
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not accelerator.is_local_main_process)
    start = step_start = time.perf_counter()
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                optimizer.zero_grad()
            micro_losses.append(loss.detach())
            micro_tokens += int(batch["attention_mask"].sum())
            if not accelerator.sync_gradients:
                continue
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
            counted = torch.tensor(micro_tokens, device=accelerator.device)
            step_tokens = int(accelerator.reduce(counted, reduction="sum"))
            tokens += step_tokens
            micro_losses, micro_tokens = [], 0
            now = time.perf_counter()
            record = {
                "step": step,
                "loss": round(step_loss, 6),
                "lr": lr,
                "tokens_per_s": round(step_tokens / (now - step_start), 2),
                "epoch": round(step / steps_per_epoch, 4),
                "tokens": tokens,
            }
            log.append(record)
            if live is not None:
                log_step(live, record)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch)
            step_start = time.perf_counter()  # the log's own writes count to no step
            if step >= total_steps:
                break
        if step >= total_steps:
            break
    bar.close()
    return log, time.perf_counter() - start
