"""The likelihood scorer: how likely the student finds each candidate answer after a prefix.

The second pass (evaluate.second_pass, off by default) reads an answer for a
row whose generation stated none: for a closed answer set (classification
labels, multiple-choice letters), the candidate whose continuation
" <answer>." the student finds most likely after its own reasoning and the
trigger ("The answer is"). Its log-probability is length-normalised (the mean
over the continuation's tokens), so a short label does not win by having fewer
tokens to pay for; the period marks where the answer ends, so "copper" does not
win over "copper-ore" by being a prefix of it. The pick is always one of the
candidates, which is why it is a side reading, never the headline: the paper
scores what the student generated (docs/evaluation.md).

Scoring is exact and batched: the prefix runs once and its last logits score
every candidate's first token; the candidates' other tokens then run in one
more pass on its KV cache, packed into a single row whose attention mask
lets each token see the prefix and its own candidate only (a tree of
continuations: no padding, no copies of the cache). Where the attention
takes no custom mask (flash attention), the cache is instead repeated along
the batch, one right-padded row per candidate.
Prefix and continuation are tokenised separately and their ids concatenated,
so every candidate is scored against the same prefix tokens (a leading space
belongs to the continuation: SmolLM2 splits " earn." into " earn" + ".").
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from baldistill.student.encoding import encode_prompt
from baldistill.student.generation import length_batches
from baldistill.student.parallel import ONE_PROCESS, Workers

# Memory bounds of one pass over a row's candidates: tokens packed in one row (tree attention), or
# positions of the prefix cache repeated once per candidate (when the attention takes no custom mask).
MAX_CANDIDATE_TOKENS = 1024
MAX_CACHED_POSITIONS = 1 << 15


def continuation(answer: str) -> str:
    """What the student would write after the trigger to give `answer`: " <answer>."."""
    return f" {answer.strip()}."


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def _cache_keyword(model: PreTrainedModel) -> str:
    """The forward argument that takes a KV cache: "cache" in newer transformers, "past_key_values" before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _last_logits_only(model: PreTrainedModel) -> dict:
    """The forward argument that computes the logits of the last position only, where there is one."""
    names = inspect.signature(model.forward).parameters
    return next(({name: 1} for name in ("logits_to_keep", "num_logits_to_keep") if name in names), {})


def _takes_custom_masks(model: PreTrainedModel) -> bool:
    """Whether the attention applies a 4D mask as given (sdpa, eager); flash attention does not."""
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


def _chunks(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive indices grouped so that a group's sizes sum to at most `limit` (one may exceed it alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if groups[-1] and total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return [g for g in groups if g]


def _tree_inputs(n_prefix: int, cands: list[list[int]], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """(input ids, targets, positions, 4D additive mask, candidate of each token) of candidates
    packed into one row after a prefix.

    Each candidate feeds its ids but the last and is scored on its ids but the
    first; every packed token sees the whole prefix and the earlier tokens of
    its own candidate, at the position it would have right after the prefix.
    """
    inputs = [t for ids in cands for t in ids[:-1]]
    targets = [t for ids in cands for t in ids[1:]]
    owner = torch.tensor([k for k, ids in enumerate(cands) for _ in ids[:-1]])
    offset = torch.tensor([j for ids in cands for j in range(len(ids) - 1)])
    n = len(inputs)
    inner = (owner[:, None] == owner[None, :]) & (torch.arange(n)[None, :] <= torch.arange(n)[:, None])
    allowed = torch.cat([torch.ones((n, n_prefix), dtype=torch.bool), inner], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return torch.tensor([inputs]), torch.tensor(targets), (n_prefix + offset)[None], mask[None, None], owner


def _tree_scores(model, prefix_cache, n_prefix, cands, cache_kw) -> torch.Tensor:
    """Log-prob of each candidate's tokens but the first, all candidates in one row (tree attention)."""
    device = model.device
    inputs, targets, positions, mask, owner = _tree_inputs(n_prefix, cands, model.dtype)
    logits = model(
        input_ids=inputs.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **{cache_kw: prefix_cache},
    ).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets.to(device)[:, None]).squeeze(1)
    return torch.zeros(len(cands), device=device).index_add_(0, owner.to(device), logp)


def _repeat_scores(model, prefix_cache, n_prefix, cands, cache_kw) -> torch.Tensor:
    """Log-prob of each candidate's tokens but the first, one candidate per batch row on a repeated
    copy of the prefix cache, right-padded (pads come after every real token: causal attention
    keeps them out, and the attention mask says so too)."""
    device = model.device
    n, width = len(cands), max(len(ids) for ids in cands) - 1
    inputs = torch.zeros((n, width), dtype=torch.long)
    targets = torch.zeros((n, width), dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    for j, ids in enumerate(cands):
        inputs[j, : len(ids) - 1] = torch.tensor(ids[:-1])
        targets[j, : len(ids) - 1] = torch.tensor(ids[1:])
        valid[j, : len(ids) - 1] = True
    inputs, targets, valid = inputs.to(device), targets.to(device), valid.to(device)
    prefix_cache.batch_repeat_interleave(n)
    mask = torch.cat([torch.ones((n, n_prefix), dtype=torch.long, device=device), valid.long()], dim=1)
    positions = torch.arange(n_prefix, n_prefix + width, device=device).expand(n, width)
    logits = model(
        input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_kw: prefix_cache}
    ).logits
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, targets[:, :, None]).squeeze(2)
    return torch.where(valid, logp, 0.0).sum(dim=1)


@torch.inference_mode()
def _row_logprobs(
    model: PreTrainedModel, prefix_ids: list[int], cands: list[list[int]], tree: bool, limit: int | None = None
) -> list[float]:
    """Sum of log-probs of each candidate's ids after `prefix_ids`: one pass over the prefix, whose
    last logits score every first token, then the other tokens of all candidates together on its
    KV cache, in chunks (each on its own copy of the cache) of at most `limit` tokens fed
    (default MAX_CANDIDATE_TOKENS) or, repeating the cache, `limit` cached positions
    (default MAX_CACHED_POSITIONS)."""
    device = model.device
    cache_kw = _cache_keyword(model)
    prefix_cache = DynamicCache()  # filled in place by the forward pass
    out = model(
        input_ids=torch.tensor([prefix_ids], device=device),
        use_cache=True,
        **_last_logits_only(model),
        **{cache_kw: prefix_cache},
    )
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    scores = first[torch.tensor([ids[0] for ids in cands], device=device)]
    rest = [i for i, ids in enumerate(cands) if len(ids) > 1]
    # Tokens a chunk feeds: packed in one row (tree), or a padded row per candidate over a repeated prefix.
    sizes = [len(cands[i]) - 1 if tree else len(prefix_ids) + max(len(c) for c in cands) for i in rest]
    chunks = _chunks(sizes, limit or (MAX_CANDIDATE_TOKENS if tree else MAX_CACHED_POSITIONS))
    score_rest = _tree_scores if tree else _repeat_scores
    for chunk in chunks:
        ids = [rest[k] for k in chunk]
        cache = copy.deepcopy(prefix_cache) if len(chunks) > 1 else prefix_cache
        scores[torch.tensor(ids, device=device)] += score_rest(
            model, cache, len(prefix_ids), [cands[i] for i in ids], cache_kw
        )
    return scores.tolist()


def continuation_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    continuations: Sequence[Sequence[str]],
    *,
    progress: bool = True,
    tree: bool | None = None,
    workers: Workers = ONE_PROCESS,
) -> list[list[float]]:
    """log P(continuation | prefix), summed over its tokens, for each prefix and each of its continuations.

    Prefixes are `build_prompt`-style strings (encoded as encode_prompt does);
    continuations are tokenised on their own and appended, so " earn." is
    scored as the tokens " earn", "." whatever the prefix ends with. tree
    (default: when the model's attention takes a custom 4D mask) packs all
    candidates of a prefix into one row with a tree attention mask; otherwise
    they run as a batch over a repeated copy of the prefix's KV cache. Both
    give the log-probs of a full forward pass over prefix + continuation.
    Each row is one pass of its own, so `workers` share out single rows,
    longest prefix first.
    """
    tree = _takes_custom_masks(model) if tree is None else tree
    cands = [[_encode(tokenizer, c) for c in conts] for conts in continuations]
    for conts, ids in zip(continuations, cands):
        if any(not c for c in ids):
            raise ValueError(f"an empty continuation cannot be scored: {list(conts)!r}")
    prefix_ids = [encode_prompt(tokenizer, prefix) for prefix in prefixes]

    def run(batch: list[int]) -> list[list[float]]:
        return [_row_logprobs(model, prefix_ids[i], cands[i], tree) if cands[i] else [] for i in batch]

    batches = length_batches([len(ids) for ids in prefix_ids], 1)
    return workers.map_batches(batches, run, progress=progress, desc="second pass")


def pick_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    normalise: bool = True,
    progress: bool = True,
    workers: Workers = ONE_PROCESS,
) -> list[str]:
    """For each prefix, the candidate answer whose continuation the student finds most likely
    (first on ties): by mean log-prob per token (`normalise`, the default), else by the sum."""
    conts = [[continuation(c) for c in cands] for cands in candidates]
    scores = continuation_logprobs(model, tokenizer, prefixes, conts, progress=progress, workers=workers)
    if normalise:
        sizes = [[len(_encode(tokenizer, c)) for c in row] for row in conts]
        scores = [[s / n for s, n in zip(row, lengths)] for row, lengths in zip(scores, sizes)]
    return [cands[max(range(len(cands)), key=row.__getitem__)] for cands, row in zip(candidates, scores)]
