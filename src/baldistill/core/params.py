"""The one typed schema for params.yaml.

Every knob of the pipeline lives in params.yaml; every stage script loads it
through `load_params`, which validates it and turns mistakes into one-line
errors naming the key (`params.yaml: budget.total: ...`). Each default here
equals params.yaml's value (tests/test_params.py checks it), so a key left out
of params.yaml means what the shipped file says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from baldistill.core.dataset_info import TASKS
from baldistill.core.errors import BaldistillError
from baldistill.core.policies import POLICY_NAMES

START = "start"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonlFields(_Section):
    id: str | None = None
    input: str = "input"
    label: str = "label"
    domain: str = "domain"


class JsonlData(_Section):
    train: str | None = None
    test: str | None = None
    task: Literal[TASKS] = "classification"
    name: str = "custom"
    fields: JsonlFields = JsonlFields()


class Data(_Section):
    dataset: Literal["r52", "math", "mcqa", "jsonl"] = "r52"
    # Draws the pool (Zipf down-sampling, the math/mcqa train split's pool rows).
    seed: int = 0
    # Draws the test rows, and only them: every experiment, whatever its other seeds,
    # scores the same rows, so policies are compared row by row (paired).
    test_seed: int = 0
    # Caps test rows per domain so CPU evaluation stays affordable; null = full test set.
    test_per_domain: int | None = Field(default=20, ge=1)
    # Held out of the pool for tuning training settings (evaluate.split: validation):
    # up to this many rows per domain, never more than a fifth of the domain's rows,
    # so the tail keeps its rows; 0 = no validation split.
    validation_per_domain: int = Field(default=4, ge=0)
    # Evaluation reports head vs tail: a domain with more pool rows than this is head.
    # null = the data set's own split (Appendix A): more than 50 rows for R52 (and your
    # JSONL), the named head domains for MATH and multiple-choice QA.
    head_threshold: int | None = Field(default=None, ge=0)
    # Long inputs are cut to this many characters (teacher and student prompts alike).
    max_input_chars: int = Field(default=600, ge=16)
    # Zipf exponent used to down-sample the pool of math/mcqa; null = the dataset's default.
    zipf_alpha: float | None = Field(default=None, gt=0)
    test_fraction: float = Field(default=0.3, gt=0, lt=1)
    jsonl: JsonlData = JsonlData()

    @model_validator(mode="after")
    def _jsonl_files(self) -> Data:
        if self.dataset == "jsonl" and not (self.jsonl.train and self.jsonl.test):
            raise ValueError("data.jsonl.train and data.jsonl.test are required when data.dataset is jsonl")
        return self


class Budget(_Section):
    total: int = Field(ge=1, description="B: the most teacher calls the whole run may make")
    # A hard cap in dollars on what the whole run pays the teacher (None: none).
    # Each request reserves its worst case before it is sent (teacher/spending.py).
    max_usd: float | None = Field(default=None, ge=0)


class Feedback(_Section):
    """Policy feedback's rule (core/feedback.py, docs/policies.md)."""

    # a: pseudo-rows at the pooled validation score added to each domain; a tail
    # domain's 1-4 rows then move its score by at most 1/(n + a) each.
    prior_strength: float = Field(default=4.0, ge=0)
    # The least and the most a domain gets, in units of the equal share B/(K l).
    floor: float = Field(default=0.5, ge=0, le=1)
    cap: float = Field(default=3.0, ge=1)


class Policy(_Section):
    name: Literal[POLICY_NAMES] = "adaptive"
    seed: int = 0
    # Which stage index i the adaptive formula sees at stage k of K (see docs/policies.md).
    adaptive_schedule: Literal["zero", "spread", "one"] = "zero"
    feedback: Feedback = Feedback()


class Price(_Section):
    input_per_1m: float = Field(default=0.0, ge=0)
    output_per_1m: float = Field(default=0.0, ge=0)
    # The Batch API's price as a share of the synchronous one (OpenAI: half).
    batch_factor: float = Field(default=0.5, gt=0, le=1)


class LocalServer(_Section):
    model_file: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"] = "qwen2.5-coder-1.5b"
    threads: int = Field(default=2, ge=1)
    ctx: int = Field(default=4096, ge=512)
    startup_timeout: float = Field(default=180.0, gt=0)


class Teacher(_Section):
    base_url: str = "local"
    model: str = "qwen2.5-coder-1.5b-instruct"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(default=1, ge=1)
    timeout: float = Field(default=180.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # Room for a whole rationale: the default teacher's brief R52 rationales run to
    # 68 tokens (p50) and 104 (p95), at most 119 of 30 (docs/prompts.md); a cap it
    # reaches cuts the rationale before its answer sentence.
    max_tokens: int = Field(default=160, ge=1)
    synth_max_tokens: int = Field(default=256, ge=1)
    synth_temperature: float = Field(default=0.9, ge=0)
    demonstrations: int = Field(default=3, ge=0)
    # What to do with an annotated row whose rationale's answer disagrees with the gold label.
    on_mismatch: Literal["keep", "drop"] = "keep"
    # Annotation prompt: true gives the teacher the gold answer (Section 3.6, prompts' `annotate`);
    # false is Table 9 as printed for classification and MCQA, where the teacher picks the answer
    # itself (`annotate_blind`; math and abstractive QA get the answer either way). docs/prompts.md.
    gold_in_prompt: bool = True
    price: Price = Price()
    local: LocalServer = LocalServer()
    # sync: one chat completion per request; batch: a step's cache misses as one
    # OpenAI Batch job (/v1/files + /v1/batches) at price x price.batch_factor.
    mode: Literal["sync", "batch"] = "sync"
    batch_poll_seconds: float = Field(default=30.0, gt=0)
    # Client-side rate limits, requests and tokens per minute (None: none).
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class Lora(_Section):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] | None = None


class Student(_Section):
    model: str = "smollm2-135m-instruct"
    max_input_tokens: int = Field(default=128, ge=8)
    # Rationales longer than this lose their middle (keeping the answer sentence); the
    # default teacher's R52 training targets: p95 108-137 student tokens (docs/prompts.md).
    max_rationale_tokens: int = Field(default=144, ge=4)
    lora: Lora = Lora()


class Train(_Section):
    # The command that runs stages/train.py; e.g. "accelerate launch --multi_gpu --num_processes 4".
    launch: str = "python"
    # Chosen on the validation rows (docs/evaluation.md): 2e-4 at batch 16 left the loss flat.
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.03, ge=0)
    batch_size: int = Field(default=4, ge=1)
    micro_batch_size: int = Field(default=4, ge=1)
    epochs: float = Field(default=2, gt=0)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    # Recompute activations in backward: about half the peak memory for about a third more compute.
    gradient_checkpointing: bool = False
    # Run the rows' shared prompt beginning (chat header, instruction, label set) once per
    # micro-batch instead of once per row: same loss and gradients (student/prefix_training.py).
    # Used with one process and no gradient checkpointing; otherwise the plain pass.
    share_prefix: bool = True
    # The matrix products' number format in training: fp32, or bf16 autocast (the LoRA and
    # optimiser stay fp32). bf16 pays on CPUs with AVX-512 BF16 or AMX and on most GPUs;
    # elsewhere it is emulated and slower, so "auto" takes it only where the device has it
    # (the train step's metrics say which ran). Its loss against fp32: docs/benchmarks.md.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Micro-batches of rows of about one length (transformers' LengthGroupedSampler: random
    # groups of 50 batches, each sorted by length), so less of each batch is padding.
    group_by_length: bool = True
    seed: int = 0


class Select(_Section):
    # The command that runs stages/select_rows.py; like train.launch, e.g.
    # "accelerate launch --multi_gpu --num_processes 4" shares the scoring between 4 GPUs.
    launch: str = "python"
    # Candidates scored per selected row (null = every unused row of the domain).
    # c candidates put the top pick at the c/(c+1) IFD percentile on average: 6 -> 86%.
    candidates_per_row: int | None = Field(default=6, ge=1)
    # A generation batch: at most batch_size rows and batch_tokens padded tokens (rows x (longest
    # prompt + max_new_tokens); null = rows only). Big batches of short rows: docs/benchmarks.md.
    batch_size: int = Field(default=64, ge=1)
    batch_tokens: int | None = Field(default=16384, ge=1)
    max_new_tokens: int = Field(default=48, ge=1)
    drop_ifd_ge_1: bool = True


class Evaluate(_Section):
    # What the student is scored on: the fixed test set, or the validation rows
    # held out of the pool (for tuning training settings without seeing the test set).
    split: Literal["test", "validation"] = "test"
    # The command that runs stages/evaluate.py and stages/evaluate_zeroshot.py (see select.launch).
    launch: str = "python"
    batch_size: int = Field(default=64, ge=1)  # rows and padded tokens per batch, as select's
    batch_tokens: int | None = Field(default=16384, ge=1)
    # More than student.max_rationale_tokens, so a trained student reaches its answer sentence.
    max_new_tokens: int = Field(default=160, ge=1)
    # A side reading for rows whose generation names no answer: the label or choice the
    # student finds most likely after its reasoning and "The answer is" (length-normalised),
    # reported beside the headline as second_pass_*, never as it (docs/evaluation.md).
    second_pass: bool = False


class Params(_Section):
    data: Data = Data()
    budget: Budget
    # The K stages, each naming its predecessor: {s0: start, s1: s0, ...}.
    stages: dict[str, str]
    policy: Policy = Policy()
    teacher: Teacher = Teacher()
    student: Student = Student()
    train: Train = Train()
    select: Select = Select()
    evaluate: Evaluate = Evaluate()

    @field_validator("stages")
    @classmethod
    def _stage_chain(cls, stages: dict[str, str]) -> dict[str, str]:
        stage_names(stages)
        return stages

    @property
    def stage_names(self) -> list[str]:
        return stage_names(self.stages)

    @property
    def K(self) -> int:
        return len(self.stages)


def stage_names(stages: dict[str, str]) -> list[str]:
    """The stage names in order, checking that `stages` is the chain
    s0 <- start, s1 <- s0, ..., s{K-1} <- s{K-2}.

    DVC's `foreach` cannot compute "the previous stage", so every stage
    names its predecessor and this check keeps the chain honest.
    """
    if not stages:
        raise ValueError("at least one stage is required (stages: {s0: start})")
    names = [f"s{k}" for k in range(len(stages))]
    if sorted(stages, key=_stage_index) != names:
        raise ValueError(f"stage names must be s0..s{len(stages) - 1}, got {', '.join(stages)}")
    for k, name in enumerate(names):
        expected = START if k == 0 else names[k - 1]
        if stages[name] != expected:
            raise ValueError(f"{name} must follow {expected}, not {stages[name]!r}")
    return names


def _stage_index(name: str) -> int:
    match = re.fullmatch(r"s(\d+)", name)
    return int(match.group(1)) if match else 10**9


def stage_index(name: str) -> int:
    """'s3' -> 3; 'start' -> -1."""
    if name == START:
        return -1
    index = _stage_index(name)
    if index == 10**9:
        raise BaldistillError(f"unknown stage name {name!r} (expected start or s<k>)")
    return index


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise BaldistillError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BaldistillError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise BaldistillError(f"{path}: {key}: {message}") from None
