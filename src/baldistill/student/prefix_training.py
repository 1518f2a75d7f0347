"""Training with the prompts' shared beginning run once per micro-batch.

Every training row starts with the same tokens: the chat header, the
instruction and the label set (180 of about 300 tokens a row on R52 at the
defaults). A plain forward pass runs them once per row. Here one micro-batch
runs them once, with gradient, through the LoRA model. Each row's own tokens
then attend to that one copy of the prefix's keys and values, broadcast over
the rows. Backward sums the rows' gradients into the shared copy, so the loss
and the gradients are the plain pass's (tests/test_prefix_training.py checks
this with LoRA dropout 0).

What differs by construction: with lora.dropout > 0 the prefix tokens get one
dropout mask shared by the micro-batch's rows, not one mask per row. The
expected gradient stays the same; only its noise changes.

The prefix ends at least one token before the shortest prompt. So every
target token, the first one included, is predicted from the row's own part of
the pass, and every position that carries loss is in it.

The Trainer's token count and loss normalisation read the collated rows as
before (input_ids, attention_mask, labels), so steps, tokens/s and
num_items_in_batch keep their meaning. Only the model call changes.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, Trainer

from baldistill.student.prefix_cache import broadcast_cache, prefix_layers, shared_prefix_length
from baldistill.student.training_examples import IGNORE_INDEX, Example


def prompt_length(example: Example) -> int:
    """Tokens before the first one that carries loss (the prompt)."""
    return next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), len(example.labels))


def training_prefix_length(examples: list[Example]) -> int:
    """Tokens every example's prompt begins with. Each prompt keeps at least
    one token of its own (prefix_cache.shared_prefix_length), so the first
    target token is predicted inside the row's own pass."""
    return shared_prefix_length([e.input_ids[: prompt_length(e)] for e in examples])


def prefix_cache(model, prefix_ids: torch.Tensor, rows: int) -> DynamicCache:
    """The prefix's keys and values (one pass, with gradient) broadcast to `rows` rows."""
    return broadcast_cache(prefix_layers(model, prefix_ids), rows, model.config, copy=False)


def with_shared_prefix(model, inputs: dict[str, torch.Tensor], length: int) -> dict:
    """A collated micro-batch (right-padded) as the model call over each row's
    own tokens, with the prefix's cache in front of them."""
    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    rows, width = ids.shape
    positions = torch.arange(length, width, device=ids.device).expand(rows, -1)
    return {
        "input_ids": ids[:, length:],
        "attention_mask": mask,  # the prefix's columns are ones in every row
        "position_ids": positions,
        "labels": labels[:, length:],
        "past_key_values": prefix_cache(model, ids[0, :length], rows),
        "use_cache": True,
    }


class SharedPrefixTrainer(Trainer):
    """The Trainer with the rows' shared prompt prefix run once per micro-batch
    (`prefix_length` tokens; 0 is the plain Trainer)."""

    def __init__(self, *args, prefix_length: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix_length = prefix_length

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.prefix_length > 0 and model.training:
            inputs = with_shared_prefix(model, inputs, self.prefix_length)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
