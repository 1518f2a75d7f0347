"""Batched greedy generation for the student, with optional per-token NLL.

Rows are sorted by prompt length so a batch holds prompts of similar length
(little padding) and decoded with the KV cache by our own greedy loop
(`_decode_batch`). Results come back in the caller's order. Under a
launcher the batches are shared out between the processes
(parallel.Workers), unchanged, so the results are too.

What the loop does that `model.generate` did not (docs/benchmarks.md
measures each):
- Batches sized by tokens (`token_batches`): on a CPU a decode step's
  matrix products run several times faster per row at 64 rows than at 16,
  so short rows go in big batches, capped by padded tokens (memory).
- The prompts' shared beginning (chat header, instruction, a label list) is
  run once per call and its KV cache copied into every batch (prefix
  caching): rows are laid out [shared prefix][padding][own suffix], the
  padding masked out, positions counted as if it were not there.
- A row that has stopped is dropped from the batch (its cache rows too)
  once enough rows have stopped, instead of decoding padding to the end.

With `with_nll=True` the NLL of every generated token is taken from the raw
logits of the step that produced it (log-softmax, no processing), so it is
exactly the conditional NLL a separate forward pass over prompt+response
would give (ifd.py proves it in a test) at the cost of no extra forward
pass. Greedy = argmax of those logits (SmolLM2's generation config sets no
penalty or other processor). Tokens after a row's stop token are not made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from baldistill.student.encoding import encode_prompt
from baldistill.student.parallel import ONE_PROCESS, Workers
from baldistill.student.prefix_cache import Layers, broadcast_cache, prefix_layers, shared_prefix_length

# A batch drops its stopped rows once they are this share of it: copying the cache costs about a step.
COMPACT_SHARE = 0.125


@dataclass
class Generated:
    text: str  # decoded without special tokens
    token_ids: list[int]  # generated ids, up to and including the stop token if one came
    nll: list[float] | None  # per generated token, from the raw logits; None unless asked
    stopped: bool  # True if the row ended on a stop token, False if it hit max_new_tokens


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a row: the tokenizer's eos and the model's generation eos ids."""
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each row right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids, mask


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length, longest first
    (a memory problem shows up in the first batch, not the last)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def token_batches(lengths: list[int], max_rows: int, max_tokens: int | None, new_tokens: int = 0) -> list[list[int]]:
    """Row indices sorted longest first (ties by index) and cut into batches of at most
    `max_rows` rows whose padded size, rows x (longest row + new_tokens), stays within
    `max_tokens` (None: no token cap, i.e. `length_batches`). A row too long for the cap
    alone gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        fits = batch is not None and len(batch) < max_rows
        if fits and max_tokens is not None:
            fits = (len(batch) + 1) * (lengths[batch[0]] + new_tokens) <= max_tokens
        if fits:
            batch.append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class _Prefix:
    """The KV cache of the prompts' shared prefix, one row, per layer."""

    length: int
    layers: Layers

    def cache_for(self, rows: int, config) -> DynamicCache:
        """A fresh cache holding the prefix for `rows` rows (a copy: decoding appends to it)."""
        return broadcast_cache(self.layers, rows, config, copy=True)


@torch.no_grad()
def _prefix(model: PreTrainedModel, ids: list[int]) -> _Prefix:
    if not ids:
        return _Prefix(0, [])
    return _Prefix(len(ids), prefix_layers(model, torch.tensor(ids, device=model.device)))


def _step_nll(logits: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """NLL [rows] of `token` under one step's raw logits [rows, vocab]."""
    return -torch.log_softmax(logits, dim=-1).gather(1, token[:, None]).squeeze(1)


@torch.no_grad()
def _decode_batch(model, seqs, prefix: _Prefix, max_new_tokens, with_nll, stops, pad_id) -> list[list]:
    """Greedy decoding of one batch: per row, [token ids, nlls or None, stopped]."""
    device, rows = model.device, len(seqs)
    ids, own = left_pad([s[prefix.length :] for s in seqs], pad_id)
    mask = torch.cat([torch.ones(rows, prefix.length, dtype=torch.long), own], dim=1).to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix.length :]
    cache = prefix.cache_for(rows, model.config)
    logits = model(
        input_ids=ids.to(device), attention_mask=mask, position_ids=positions, past_key_values=cache, logits_to_keep=1
    ).logits[:, -1]
    stop_ids = torch.tensor(stops, dtype=torch.long, device=device)
    out = [[[], [] if with_nll else None, False] for _ in range(rows)]
    live = list(range(rows))  # batch position -> row
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    next_pos = positions[:, -1] + 1
    for step in range(max_new_tokens):
        logits = logits.float()
        token = logits.argmax(dim=-1)
        nll = _step_nll(logits, token).tolist() if with_nll else None
        stopped = torch.isin(token, stop_ids) & ~done
        for j, (t, row) in enumerate(zip(token.tolist(), live)):
            if done[j]:
                continue
            out[row][0].append(t)
            if nll is not None:
                out[row][1].append(nll[j])
        for j in stopped.nonzero().flatten().tolist():
            out[live[j]][2] = True
        done |= stopped
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        if int(done.sum()) >= max(1, COMPACT_SHARE * len(live)):
            keep = (~done).nonzero().flatten()
            cache.batch_select_indices(keep)
            live = [live[j] for j in keep.tolist()]
            mask, next_pos, token, done = mask[keep], next_pos[keep], token[keep], done[keep]
        token = torch.where(done, pad_id, token)
        mask = torch.cat([mask, torch.ones(len(live), 1, dtype=mask.dtype, device=device)], dim=1)
        logits = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None], past_key_values=cache
        ).logits[:, -1]
        next_pos = next_pos + 1
    return out


def _results(tokenizer, decoded: list[list]) -> list[Generated]:
    return [
        Generated(text=tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids, nll=nll, stopped=stopped)
        for ids, nll, stopped in decoded
    ]


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    *,
    batch_tokens: int | None = None,
    share_prefix: bool = True,
    with_nll: bool = False,
    progress: bool = True,
    desc: str = "generate",
    workers: Workers = ONE_PROCESS,
) -> list[Generated]:
    """Greedy continuations of `prompts` (build_prompt strings), in input order,
    the batches shared out between `workers` (every process gets every result).

    A batch holds at most `batch_size` rows and, with `batch_tokens`, at most that
    many padded tokens (prompt + max_new_tokens per row; `token_batches`). With
    `share_prefix` the prompts' common beginning is run once (module docstring)."""
    seqs = [encode_prompt(tokenizer, p) for p in prompts]
    if not seqs:
        return []
    stops, pad = stop_token_ids(model, tokenizer), pad_id_of(tokenizer)
    prefix = _prefix(model, seqs[0][: shared_prefix_length(seqs)] if share_prefix else [])

    def run(batch: list[int]) -> list[Generated]:
        decoded = _decode_batch(model, [seqs[i] for i in batch], prefix, max_new_tokens, with_nll, stops, pad)
        return _results(tokenizer, decoded)

    batches = token_batches([len(s) for s in seqs], batch_size, batch_tokens, max_new_tokens)
    return workers.map_batches(batches, run, progress=progress, desc=desc)


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    workers: Workers = ONE_PROCESS,
    *,
    batch_tokens: int | None = None,
) -> list[str]:
    """Just the generated texts (what evaluation parses), in input order."""
    out = generate(model, tokenizer, prompts, max_new_tokens, batch_size, batch_tokens=batch_tokens, workers=workers)
    return [g.text for g in out]
