"""Batched greedy generation for the student, with optional per-token NLL.

Rows are sorted by prompt length so a batch holds prompts of similar length
(little padding), left-padded (new tokens are appended on the right, where
every row ends) and decoded with the KV cache. Results come back in the
caller's order. Under a launcher the batches are shared out between the
processes (parallel.Workers), unchanged, so the results are too.

With `with_nll=True` the NLL of every generated token is taken from the RAW
logits the model produced during generation (`output_logits`), not from the
processed scores, so it is exactly the conditional NLL a separate forward
pass over prompt+response would give (ifd.py proves it in a test) at the
cost of no extra forward pass. Tokens after a row's stop token are padding
and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from baldistill.student.encoding import encode_prompt
from baldistill.student.parallel import ONE_PROCESS, Workers


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


def _first_stop(row: torch.Tensor, stops: torch.Tensor) -> int | None:
    hits = torch.isin(row, stops).nonzero()
    return int(hits[0]) if len(hits) else None


def _raw_nll(logits: tuple[torch.Tensor, ...], new: torch.Tensor) -> torch.Tensor:
    """NLL [batch, steps] of the generated tokens under the raw per-step logits."""
    columns = []
    for step, step_logits in enumerate(logits):
        logp = torch.log_softmax(step_logits.float(), dim=-1)
        columns.append(-logp.gather(1, new[:, step : step + 1]).squeeze(1))
    return torch.stack(columns, dim=1)


@torch.no_grad()
def _generate_batch(model, tokenizer, seqs, max_new_tokens, with_nll, stops) -> list[Generated]:
    input_ids, attention_mask = left_pad(seqs, pad_id_of(tokenizer))
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=stops,
        pad_token_id=pad_id_of(tokenizer),
        output_logits=with_nll,
        return_dict_in_generate=True,
    )
    device = model.device
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
    )
    new = out.sequences[:, input_ids.shape[1] :].cpu()
    nll = _raw_nll(tuple(t.cpu() for t in out.logits), new) if with_nll else None
    stop_tensor = torch.tensor(stops, dtype=torch.long)
    results = []
    for i in range(len(seqs)):
        stop = _first_stop(new[i], stop_tensor)
        length = new.shape[1] if stop is None else stop + 1
        ids = new[i, :length].tolist()
        results.append(
            Generated(
                text=tokenizer.decode(ids, skip_special_tokens=True),
                token_ids=ids,
                nll=nll[i, :length].tolist() if nll is not None else None,
                stopped=stop is not None,
            )
        )
    return results


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    *,
    with_nll: bool = False,
    progress: bool = True,
    desc: str = "generate",
    workers: Workers = ONE_PROCESS,
) -> list[Generated]:
    """Greedy continuations of `prompts` (build_prompt strings), in input order,
    the batches shared out between `workers` (every process gets every result)."""
    seqs = [encode_prompt(tokenizer, p) for p in prompts]
    stops = stop_token_ids(model, tokenizer)

    def run(batch: list[int]) -> list[Generated]:
        return _generate_batch(model, tokenizer, [seqs[i] for i in batch], max_new_tokens, with_nll, stops)

    batches = length_batches([len(s) for s in seqs], batch_size)
    return workers.map_batches(batches, run, progress=progress, desc=desc)


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    workers: Workers = ONE_PROCESS,
) -> list[str]:
    """Just the generated texts (what evaluation parses), in input order."""
    return [g.text for g in generate(model, tokenizer, prompts, max_new_tokens, batch_size, workers=workers)]
