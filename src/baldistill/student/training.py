"""LoRA fine-tuning of the student on one stage's training rows.

Section 3.6: at every stage the student is re-initialised and fine-tuned from
scratch on everything gathered so far. So `train` always loads the base
model from disk and wraps it in a fresh LoRA; it never sees the previous
stage's adapter. The sequence is the exact student prompt (build_prompt, the
text seen at selection and evaluation) followed by the target (rationale and
answer sentence, build_target); only target tokens carry loss.

The loop is plain PyTorch with `accelerate` (prepare / accumulate / backward),
so `accelerate launch --num_processes N` spreads it over processes or GPUs
with no code change; gradient accumulation keeps the effective batch at
train.batch_size whatever the process count.

Each optimiser step's loss, learning rate, tokens/s, epoch and tokens go to a
dvclive folder (student.training_log), with the run's summary in its
metrics.json: the train step's DVC metrics and plots.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from baldistill.core.params import Lora, Student, Train
from baldistill.core.rows import Row
from baldistill.prompts import Prompts, load_prompts
from baldistill.student.device import wants_cpu
from baldistill.student.encoding import build_prompt, build_target, encode_prompt, encode_target
from baldistill.student.model import BASE_MARKER, load_student
from baldistill.student.training_log import close_log, log_step, open_log

IGNORE_INDEX = -100  # label value cross-entropy skips: prompt and padding tokens
MAX_GRAD_NORM = 1.0  # transformers.Trainer's default clipping


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


# ----------------------------------------------------------------------------- data


def target_text(row: Row, prompts: Prompts) -> str:
    """The rationale, or for a label-only row (policy random_label) just the
    answer sentence, so both kinds teach the format evaluation parses."""
    if row.rationale and row.rationale.strip():
        return row.rationale
    return prompts.render("answer_format", label=row.label)


def encode_example(row: Row, tokenizer: PreTrainedTokenizerBase, prompts: Prompts, student: Student) -> Example:
    """Token ids of prompt + target, with the prompt masked out of the labels.

    Prompt and target are tokenised apart (student.encode_*), so the prompt
    ids are exactly those the student sees at generation time.
    """
    prompt = build_prompt(tokenizer, prompts, row.input, student.max_input_tokens)
    target = build_target(target_text(row, prompts), tokenizer, student.max_rationale_tokens)
    prompt_ids, target_ids = encode_prompt(tokenizer, prompt), encode_target(tokenizer, target)
    return Example(prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad one micro-batch to its own longest row (dynamic padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def accumulation_steps(batch_size: int, micro_batch_size: int, num_processes: int) -> int:
    """Micro-batches per optimiser step so that micro x steps x processes ~= batch_size."""
    return max(1, round(batch_size / (micro_batch_size * num_processes)))


# ----------------------------------------------------------------------------- model


def lora_config(lora: Lora) -> LoraConfig:
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,  # None: peft's defaults for the architecture
    )


def fresh_lora_student(student: Student, gradient_checkpointing: bool):
    """The base student from disk wrapped in a newly initialised LoRA, in train mode.

    With train.gradient_checkpointing, activations are recomputed in the
    backward pass: about half the peak memory (bench/train.py: 5.7 -> 2.9 GB
    at micro-batch 4 x 442 tokens) for roughly a third more compute.
    """
    model, tokenizer = load_student(student.model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config(student.lora))
    model.train()
    return model, tokenizer


# ----------------------------------------------------------------------------- outputs


def write_base_marker(out_dir: str | Path) -> None:
    """Mark `out_dir` as "no adapter: use the base model" (policy zeroshot)."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / BASE_MARKER).write_text("base model, no adapter\n")


def save_adapter(model, out_dir: str | Path) -> None:
    """Save only the LoRA weights, into a temp dir renamed over `out_dir`."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ----------------------------------------------------------------------------- loop


def train(
    rows: list[Row], cfg: Train, student: Student, task: str, out_dir: str, live_dir: str, notes: dict | None = None
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
    prompts = load_prompts(task)
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


def run_summary(steps: int, train_rows: int, tokens: int, seconds: float) -> dict:
    """The run's totals; `overall_tokens_per_s` over the whole loop, beside each step's `tokens_per_s`."""
    return {
        "steps": steps,
        "train_rows": train_rows,
        "tokens": tokens,
        "overall_tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0,
        "seconds": round(seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
