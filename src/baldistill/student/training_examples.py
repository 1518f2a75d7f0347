"""One training row as token ids: the student prompt, then the target, with
only the target carrying loss.

The sequence is the exact student prompt (build_prompt, the text seen at
selection and evaluation) followed by the target (rationale and answer
sentence, build_target); prompt and padding labels are IGNORE_INDEX, so the
loss is on the rationale only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from baldistill.core.params import Student
from baldistill.core.rows import Row
from baldistill.prompts import Prompts
from baldistill.student.encoding import build_prompt, build_target, encode_prompt, encode_target

IGNORE_INDEX = -100  # label value cross-entropy skips: prompt and padding tokens


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


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


class PaddingCount:
    """`collate` as the Trainer's data collator, counting the tokens its micro-batches hold
    (rows x longest row) beside the rows' own: the padding train.group_by_length removes."""

    def __init__(self, pad_id: int):
        self.pad_id, self.padded, self.real = pad_id, 0, 0

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate([Example(**item) for item in items], self.pad_id)
        self.padded += batch["input_ids"].numel()
        self.real += int(batch["attention_mask"].sum())
        return batch

    def padding_share(self) -> float:
        """The share of the batches' tokens that were padding (this process's batches)."""
        return round(1 - self.real / self.padded, 4) if self.padded else 0.0
