"""Instruction-Following Difficulty (IFD), Section 3.5 of the paper.

    IFD(x, y) = PPL(y | x) / PPL(y),   PPL = exp(mean NLL over y's tokens)

x is the student prompt (student.build_prompt), y the student's own greedy
rationale. A high IFD means the prompt helps the student little: the row is
hard for it, hence worth a teacher annotation.

Token conventions (one convention for all three scorers, so they agree):
- y is a list of token ids (the generated ids, stop token included), never
  re-tokenised text, so the conditional pass sees exactly what was generated.
- Conditional pass: prompt ids + y, every token of y scored.
- Direct pass: y alone, prefixed only by what the tokenizer's encode adds by
  default (`direct_prefix`). This matches Superfiltering, which scores
  `tokenizer.encode(response)`. For SmolLM2 (and GPT-2) that is nothing, so
  y's first token has no context and is not scored: PPL(y) averages over
  y[1:]. A one-token y (the student stopped at once) has no direct PPL and
  gets IFD = NaN, which ranks it last.

Scorers:
- `score_reference`: one row at a time, two forward passes each, the loss
  the model computes itself (what the reference code does). Slow, obviously
  right; the test oracle.
- `score_two_pass`: the same two passes, batched (left padding, per-row
  masks, cross-entropy with reduction='none'; logits only for scored tokens).
- `score_by_generation`: PPL(y | x) from the greedy generation's own raw
  logits (generation.py) plus ONE batched forward pass over y alone.
  This is what selection uses: the generation has to happen anyway.

Ranking (`rank`): see its docstring for IFD >= 1 and NaN handling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from baldistill.student.generation import Generated, generate, left_pad, pad_id_of, token_batches
from baldistill.student.parallel import ONE_PROCESS, Workers

# The direct pass keeps logits for every scored token (tokens x vocab x 4 bytes, about three
# copies in the loss): 1,024 tokens a batch is ~600 MB for SmolLM2, and the matrix products are
# already big at that size, so larger batches would only cost memory.
DIRECT_PASS_TOKENS = 1024

# ----------------------------------------------------------------------------- pure maths


@dataclass(frozen=True)
class IfdScore:
    ifd: float
    ppl_cond: float
    ppl_direct: float

    def as_meta(self) -> dict[str, float | None]:
        """JSON-safe: NaN/inf become None."""
        return {k: (v if math.isfinite(v) else None) for k, v in vars(self).items()}


def mean_nll(nll: Sequence[float]) -> float:
    """Mean NLL; NaN for no tokens or any NaN token."""
    if len(nll) == 0 or any(math.isnan(v) for v in nll):
        return math.nan
    return math.fsum(nll) / len(nll)


def perplexity(nll: Sequence[float]) -> float:
    """exp(mean NLL): NaN for no tokens, inf when the mean overflows exp."""
    mean = mean_nll(nll)
    if math.isnan(mean):
        return math.nan
    return math.exp(mean) if mean < 709.0 else math.inf


def ifd_from_nll(cond_nll: Sequence[float], direct_nll: Sequence[float]) -> float:
    """PPL(y|x) / PPL(y), computed as exp(mean_cond - mean_direct) so it never
    divides and stays finite when both perplexities would overflow.
    NaN if either side has no tokens, holds a NaN, or both means are infinite."""
    diff = mean_nll(cond_nll) - mean_nll(direct_nll)
    if math.isnan(diff):
        return math.nan
    return math.exp(diff) if diff < 709.0 else math.inf


def score_from_nll(cond_nll: Sequence[float], direct_nll: Sequence[float]) -> IfdScore:
    return IfdScore(ifd_from_nll(cond_nll, direct_nll), perplexity(cond_nll), perplexity(direct_nll))


def is_preferred(ifd: float, drop_ifd_ge_1: bool = True) -> bool:
    """A row the ranking takes first: finite IFD, and below 1 unless drop_ifd_ge_1 is off."""
    return math.isfinite(ifd) and (ifd < 1.0 or not drop_ifd_ge_1)


def rank(ifds: Sequence[float], k: int, drop_ifd_ge_1: bool = True) -> list[int]:
    """Indices of the k rows to select, in pick order.

    1. Preferred rows (`is_preferred`) by IFD, highest first.
    2. If they are fewer than k (a domain must still meet its quota), the
       remaining rows fill up: finite IFD >= 1 lowest first (closest to the
       references' cut-off, least misaligned), then +inf, then NaN (unscorable).
    With drop_ifd_ge_1=False, step 1 ranks every finite IFD. Ties keep input order.
    """
    idx = range(len(ifds))
    preferred = sorted((i for i in idx if is_preferred(ifds[i], drop_ifd_ge_1)), key=lambda i: -ifds[i])
    rest = [i for i in idx if not is_preferred(ifds[i], drop_ifd_ge_1)]
    rest.sort(key=lambda i: (math.isnan(ifds[i]), ifds[i] if not math.isnan(ifds[i]) else 0.0))
    return (preferred + rest)[: max(k, 0)]


def pick_percentiles(ifds: Sequence[float], k: int) -> list[float]:
    """The expected percentile, within the population the candidates were drawn
    from, of each of the k rows `rank` picks (in pick order): r/(n+1), where r
    is the row's place counted from the bottom of the n candidates' preference
    order. It depends only on the places, not on the values. For a uniform
    random sample of candidates this is unbiased (E[F(X_(r:n))] = r/(n+1)):
    the top row of c candidates sits at c/(c+1) on average, a random pick at 1/2."""
    n = len(ifds)
    return [(n - place) / (n + 1) for place in range(min(max(k, 0), n))]


# ----------------------------------------------------------------------------- model passes


def direct_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer's default encode puts before a text (e.g. BOS), [] if none."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a", add_special_tokens=True).input_ids
    cut = len(full) - len(plain)
    return full[:cut] if cut > 0 and full[cut:] == plain else []


def _scored_from(start: int) -> int:
    return max(start, 1)  # position 0 has no context to predict it from


@torch.no_grad()
def _batch_nll(model: PreTrainedModel, seqs: list[list[int]], starts: list[int], pad_id: int) -> list[list[float]]:
    """Per-row NLL of tokens seqs[i][max(starts[i], 1):] in one left-padded forward pass.

    Left padding puts every row's scored tokens at the end, so only the last
    max(n)+1 positions need logits (`logits_to_keep`): memory stays
    batch x scored x vocab, not batch x length x vocab.
    """
    counts = [max(len(s) - _scored_from(b), 0) for s, b in zip(seqs, starts)]
    keep = max(counts) + 1
    if keep == 1:
        return [[] for _ in seqs]
    ids, mask = left_pad(seqs, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = model.device
    logits = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), logits_to_keep=keep
    ).logits
    targets = ids[:, -keep + 1 :].to(device)
    # Flattened [N, vocab]: CPU cross-entropy over a [B, vocab, T] layout is ~1e-4 less accurate.
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    nll = F.cross_entropy(flat, targets.reshape(-1), reduction="none").view(len(seqs), keep - 1).cpu()
    return [nll[i, nll.shape[1] - n :].tolist() if n else [] for i, n in enumerate(counts)]


def sequence_nll(
    model: PreTrainedModel,
    seqs: list[list[int]],
    starts: list[int],
    batch_size: int,
    pad_id: int,
    workers: Workers = ONE_PROCESS,
    batch_tokens: int | None = None,
) -> list[list[float]]:
    """NLL of seqs[i][starts[i]:] for every row, batched by similar length (at most
    batch_size rows and batch_tokens padded tokens), in input order (the batches
    shared out between `workers`)."""

    def run(batch: list[int]) -> list[list[float]]:
        return _batch_nll(model, [seqs[i] for i in batch], [starts[i] for i in batch], pad_id)

    batches = token_batches([len(s) for s in seqs], batch_size, batch_tokens)
    return workers.map_batches(batches, run, progress=False)


def direct_rows(tokenizer, responses: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The direct-pass sequences (prefix + y) and where scoring starts in each."""
    prefix = direct_prefix(tokenizer)
    return [prefix + list(y) for y in responses], [len(prefix)] * len(responses)


def score_two_pass(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    batch_size: int,
) -> list[IfdScore]:
    """Batched IFD: a conditional pass over prompt+response (prompt unscored)
    and a direct pass over the response alone."""
    pad = pad_id_of(tokenizer)
    joined = [p + y for p, y in zip(prompt_ids, response_ids)]
    cond = sequence_nll(model, joined, [len(p) for p in prompt_ids], batch_size, pad)
    direct_seqs, direct_starts = direct_rows(tokenizer, response_ids)
    direct = sequence_nll(model, direct_seqs, direct_starts, batch_size, pad)
    return [score_from_nll(c, d) for c, d in zip(cond, direct)]


@torch.no_grad()
def _reference_ppl(model: PreTrainedModel, seq: list[int], start: int) -> float:
    """PPL of seq[start:] the reference way: labels masked with -100, the model's own mean loss."""
    if len(seq) - _scored_from(start) <= 0:
        return math.nan
    ids = torch.tensor([seq], device=model.device)
    labels = ids.clone()
    labels[0, :start] = -100
    loss = float(model(input_ids=ids, labels=labels).loss)
    return perplexity([loss])


def score_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
) -> list[IfdScore]:
    """One row at a time, two forward passes each, as the IFD reference code does."""
    direct_seqs, direct_starts = direct_rows(tokenizer, response_ids)
    scores = []
    for p, y, d, s in zip(prompt_ids, response_ids, direct_seqs, direct_starts):
        cond, direct = _reference_ppl(model, p + y, len(p)), _reference_ppl(model, d, s)
        ratio = cond / direct if math.isfinite(cond) and math.isfinite(direct) and direct > 0 else math.nan
        scores.append(IfdScore(ratio, cond, direct))
    return scores


def score_by_generation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    *,
    batch_tokens: int | None = None,
    progress: bool = True,
    workers: Workers = ONE_PROCESS,
) -> tuple[list[Generated], list[IfdScore]]:
    """Generate the student's rationale for each prompt and score it:
    PPL(y|x) from the generation's raw logits, PPL(y) from one batched pass.

    Under several `workers` the two phases are shared out one after the other:
    the direct pass's batches group rows by response length, which is known
    only once every process's generations are gathered; batching it as one
    process does keeps the scores bit for bit."""
    generated = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens,
        batch_size,
        batch_tokens=batch_tokens,
        with_nll=True,
        progress=progress,
        desc="select: generate",
        workers=workers,
    )
    direct_seqs, direct_starts = direct_rows(tokenizer, [g.token_ids for g in generated])
    pad = pad_id_of(tokenizer)
    direct = sequence_nll(model, direct_seqs, direct_starts, batch_size, pad, workers, DIRECT_PASS_TOKENS)
    return generated, [score_from_nll(g.nll or [], d) for g, d in zip(generated, direct)]
