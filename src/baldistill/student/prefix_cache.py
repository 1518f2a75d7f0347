"""The prompts' shared prefix: how long it is, and its keys and values run once
and broadcast to a batch's rows. Generation (no gradient, a copy per batch that
decoding appends to) and training (with gradient, a broadcast view whose
gradients sum into the one pass) both build their caches here."""

from __future__ import annotations

import torch
from transformers import DynamicCache

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of one row


def shared_prefix_length(seqs: list[list[int]]) -> int:
    """Tokens every row begins with, leaving each row at least one token of its own
    (its last prompt token's logits give the first generated token)."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for seq in seqs[1:]:
        n = min(n, next((j for j in range(n) if seq[j] != first[j]), n))
    return max(n, 0)


def prefix_layers(model, ids: torch.Tensor) -> Layers:
    """The keys and values of `ids` (one row, 1-D) per layer; with gradient when grad mode is on."""
    cache = DynamicCache(config=model.config)
    model(input_ids=ids[None], past_key_values=cache, use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in cache.layers]


def broadcast_cache(layers: Layers, rows: int, config, copy: bool) -> DynamicCache:
    """A cache holding the prefix for `rows` rows: copies (`copy`) or broadcast views."""

    def spread(tensor: torch.Tensor) -> torch.Tensor:
        view = tensor.expand(rows, -1, -1, -1)
        return view.contiguous() if copy else view

    data = [(spread(keys), spread(values)) for keys, values in layers]
    return DynamicCache(ddp_cache_data=data, config=config) if data else DynamicCache(config=config)
