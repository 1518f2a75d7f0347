"""LoRA fine-tuning of the student on one stage's training rows, by transformers' Trainer.

Section 3.6: at every stage the student is re-initialised and fine-tuned from
scratch on everything gathered so far. So `train` always loads the base
model from disk and wraps it in a fresh LoRA (peft); it never sees the
previous stage's adapter. Rows become prompt + target token ids with the loss
on the target only (student.training_examples).

transformers' Trainer owns the loop (AdamW, linear schedule, clipping at 1.0,
gradient accumulation); it runs on accelerate, so `accelerate launch
--num_processes N` spreads it over processes or GPUs with no code change, and
the accumulation keeps the effective batch at train.batch_size whatever the
process count. It replaced a hand-written accelerate loop after
bench/train.py --compare measured both side by side (docs/benchmarks.md,
"Trainer or our loop"). A step's loss is the Trainer's: the token-weighted
mean over the step's micro-batches and processes.

The rows' shared prompt beginning (chat header, instruction, label set) runs
once per micro-batch rather than once per row (train.share_prefix,
student.prefix_training): the same loss and gradients for fewer tokens.

Each optimiser step's loss, learning rate, tokens/s, epoch and tokens go to a
dvclive folder (student.training_log), with the run's summary in its
metrics.json: the train step's DVC metrics and plots.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed
from peft import LoraConfig, get_peft_model
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Lora, Student, Train
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.device import wants_cpu
from baldistill.student.model import BASE_MARKER, load_student
from baldistill.student.prefix_training import SharedPrefixTrainer, training_prefix_length
from baldistill.student.trainer_arguments import accumulation_steps, steps_per_epoch, training_arguments
from baldistill.student.training_examples import Example, PaddingCount, encode_example
from baldistill.student.training_log import close_log, log_step, open_log

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


# ----------------------------------------------------------------------------- the Trainer


class StepRecords(TrainerCallback):
    """Each optimiser step's record from the Trainer's log (every step), timed
    from the end of the step before it; the main process (`live` not None)
    logs it to dvclive as it comes."""

    def __init__(self, live, steps_per_epoch: int):
        self.live, self.steps_per_epoch = live, steps_per_epoch
        self.records: list[dict] = []
        self.tokens = 0
        self.mark = self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.mark = self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # the end-of-training summary has train_loss instead
            return
        step_tokens = state.num_input_tokens_seen - self.tokens  # non-padding, all processes
        self.tokens = state.num_input_tokens_seen
        record = {
            "step": state.global_step,
            "loss": round(logs["loss"], 6),
            "lr": logs["learning_rate"],  # the rate this step used (logged before the scheduler steps)
            "tokens_per_s": round(step_tokens / (time.perf_counter() - self.mark), 2),
            "epoch": round(state.global_step / self.steps_per_epoch, 4),
            "tokens": self.tokens,
        }
        self.records.append(record)
        if self.live is not None:
            log_step(self.live, record)
        self.mark = time.perf_counter()  # the log's own writes count to no step


class LossOnBar(ProgressCallback):
    """The Trainer's progress bar with the step's loss on it, in place of a printed
    dict per step (dvclive keeps every step's record; the terminal needs one line)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)


def quiet_progress(trainer: Trainer) -> None:
    """Swap the Trainer's log printers for LossOnBar (no bar where tqdm is off)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if not trainer.args.disable_tqdm:
        trainer.add_callback(LossOnBar)


def shared_prefix_tokens(examples: list[Example], cfg: Train, num_processes: int) -> int:
    """Prompt tokens run once per micro-batch (student.prefix_training), or 0 for the plain
    pass: train.share_prefix off, or a layout it is not built for. Gradient checkpointing
    turns the model's cache off in training, and under several processes the prefix pass
    would be a second forward call of the DDP module in one step."""
    if not cfg.share_prefix or cfg.gradient_checkpointing or num_processes > 1:
        return 0
    return training_prefix_length(examples)


def train(
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
    # The process layout first: PartialState reads the launcher's environment
    # (ACCELERATE_USE_CPU...); BALDISTILL_DEVICE=cpu keeps training on the CPU, as
    # it does the other steps (student.device).
    state = PartialState(cpu=wants_cpu())
    live = open_log(live_dir) if state.is_main_process else None
    if not rows:
        summary = {**run_summary(0, 0, 0, 0.0), **(notes or {})}
        if live is not None:
            write_base_marker(out_dir)
            close_log(live, summary)
        state.wait_for_everyone()
        return summary
    accumulation = accumulation_steps(cfg.batch_size, cfg.micro_batch_size, state.num_processes)
    set_seed(cfg.seed)  # the LoRA's initial weights
    model, tokenizer = fresh_lora_student(student, cfg.gradient_checkpointing)
    prompts = load_prompts(info.task, info.labels)  # the student prompt lists the label set
    examples = [encode_example(row, tokenizer, prompts, student) for row in rows]
    per_epoch = steps_per_epoch(len(examples), cfg.micro_batch_size, state.num_processes, accumulation)
    steps = StepRecords(live, per_epoch)
    prefix = shared_prefix_tokens(examples, cfg, state.num_processes)
    collator = PaddingCount(tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer wants an output_dir; nothing lands there
        trainer = SharedPrefixTrainer(
            model=model,
            args=training_arguments(cfg, accumulation, per_epoch, scratch, state),
            train_dataset=[{"input_ids": e.input_ids, "labels": e.labels} for e in examples],
            data_collator=collator,
            callbacks=[steps],
            prefix_length=prefix,
        )
        quiet_progress(trainer)
        trainer.train()
    seconds, log = time.perf_counter() - steps.started, steps.records
    summary = {
        **log[-1],
        **run_summary(len(log), len(rows), log[-1]["tokens"], seconds),
        "micro_batch_size": cfg.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "num_processes": state.num_processes,
        "shared_prefix_tokens": prefix,
        "precision": "bf16" if trainer.args.bf16 else "fp32",  # what the Trainer ran (train.precision resolved)
        "group_by_length": cfg.group_by_length,
        "padding_share": collator.padding_share(),
        **(notes or {}),
    }
    if live is not None:
        save_adapter(trainer.accelerator.unwrap_model(trainer.model), out_dir)
        close_log(live, summary)
    state.wait_for_everyone()
    return summary
