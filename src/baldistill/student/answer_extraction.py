"""Read the student's own answer: its answer sentence, else ask it (zero-shot CoT's second pass).

A small student often reasons without ever writing "The answer is X.", and
the lenient extractor's fallback (the last label mentioned anywhere) then
mostly reads labels the input itself contains. Evaluation therefore reads a
generation strictly (answers.extract_answer(strict=True)) and, where that
finds nothing, runs the answer-extraction step of zero-shot CoT (Kojima et
al., 2022): the student's prompt and reasoning, then ANSWER_TRIGGER ("The
answer is"), and the answer is what the student says next:

- a closed answer set (classification labels, multiple-choice letters): the
  candidate whose continuation " <answer>." the student finds most likely,
  scored as the sum of its tokens' log-probs (the likelihood of the whole
  continuation; the period marks where the answer ends, so "copper" does not
  win over "copper-ore" by being a prefix of it);
- an open answer (math, abstractive QA): a short greedy continuation, read
  by the strict extractor from ANSWER_TRIGGER + continuation.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from baldistill.core.answers import ANSWER_TRIGGER, CHOICE_LETTERS, extract_answer
from baldistill.core.rows import Row
from baldistill.student.encoding import encode_prompt
from baldistill.student.generation import generate, length_batches
from baldistill.student.parallel import ONE_PROCESS, Workers

ROUTES = ("answer_sentence", "second_pass", "none")
SECOND_PASS_MAX_NEW_TOKENS = 24  # an open answer after the trigger: a number or a short phrase
# Memory bounds of one pass over a row's candidates: tokens packed in one row (tree attention), or
# positions of the prefix cache repeated once per candidate (when the attention takes no custom mask).
MAX_CANDIDATE_TOKENS = 1024
MAX_CACHED_POSITIONS = 1 << 15
_SENTENCE_END = re.compile(r"[.!?][\"')\]*`]*$")
# A generation cut right after its own trigger ("... The answer is" / "Answer:"): the trigger is appended anew.
_DANGLING_TRIGGER = re.compile(r"[*_]*(?:the\s+)?answer\s*[*_]*\s*(?:is|:)\s*[*_:]*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    pred: str | None  # what the student answered, None if nothing could be read
    route: str  # one of ROUTES: where pred came from


def answer_set(task: str, labels: Sequence[str], row: Row | None = None) -> list[str] | None:
    """The closed set the student's answer comes from, or None for an open task.

    classification: the dataset labels (None if there are none). multiple
    choice: the row's own choice letters when its meta lists them (a
    2-choice question is answered from A, B), else the labels if they are
    letters, else A-E. A row whose choices are texts gets the first
    len(choices) letters.
    """
    if task == "classification":
        return list(labels) or None
    if task != "multiple_choice":
        return None
    choices = (row.meta.get("choices") if row is not None else None) or []
    if isinstance(choices, list) and 0 < len(choices) <= len(CHOICE_LETTERS):
        letters = [str(c).strip().upper() for c in choices]
        return (
            letters
            if all(c in CHOICE_LETTERS and len(c) == 1 for c in letters)
            else list(CHOICE_LETTERS[: len(letters)])
        )
    if labels and all(len(label) == 1 and label.upper() in CHOICE_LETTERS for label in labels):
        return [label.upper() for label in labels]
    return list(CHOICE_LETTERS)


def from_answer_sentence(output: str, task: str, labels: Sequence[str]) -> str | None:
    """The answer the generation states in its own answer sentence (strict: no fallback), or None."""
    return extract_answer(output, task, labels if task == "classification" else None, strict=True)


def second_pass_prompt(prompt: str, output: str, eos_text: str | None = None) -> str:
    """The prompt of the second pass: the student's prompt, its reasoning, then the trigger.

    The reasoning is `output` cut at the first `eos_text` and stripped, with a
    trigger it was cut off right after removed; a reasoning cut mid-sentence is
    closed with a period. One space separates it from ANSWER_TRIGGER, as in the
    training targets ("... reasoning. The answer is X."); no trailing space,
    the continuation brings its own.
    """
    reasoning = output.split(eos_text, 1)[0] if eos_text else output
    reasoning = _DANGLING_TRIGGER.sub("", reasoning.strip()).rstrip()
    if not reasoning:
        return prompt + ANSWER_TRIGGER
    if not _SENTENCE_END.search(reasoning):
        reasoning += "."
    return f"{prompt}{reasoning} {ANSWER_TRIGGER}"


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
    progress: bool = True,
    workers: Workers = ONE_PROCESS,
) -> list[str]:
    """For each prefix, the candidate answer whose continuation the student finds most likely (first on ties)."""
    conts = [[continuation(c) for c in cands] for cands in candidates]
    scores = continuation_logprobs(model, tokenizer, prefixes, conts, progress=progress, workers=workers)
    return [cands[max(range(len(cands)), key=row.__getitem__)] for cands, row in zip(candidates, scores)]


def complete_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    task: str,
    batch_size: int,
    *,
    progress: bool = True,
    workers: Workers = ONE_PROCESS,
) -> list[str | None]:
    """For each prefix (ending in ANSWER_TRIGGER), the answer in a short greedy continuation, or None."""
    if not prefixes:
        return []
    new = SECOND_PASS_MAX_NEW_TOKENS
    outs = generate(
        model, tokenizer, list(prefixes), new, batch_size, progress=progress, desc="second pass", workers=workers
    )
    return [extract_answer(ANSWER_TRIGGER + out.text, task, strict=True) for out in outs]


def read_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    outputs: Sequence[str],
    task: str,
    labels: Sequence[str],
    answer_sets: Sequence[Sequence[str] | None],
    batch_size: int,
    *,
    progress: bool = True,
    workers: Workers = ONE_PROCESS,
) -> list[Answer]:
    """The student's answer to each prompt and where it came from (see ROUTES).

    `outputs` are its generations for `prompts`; `answer_sets` the closed set
    of each row (answer_set) or None for an open answer. A generation with a
    readable answer sentence is taken as is; every other row gets the second
    pass, which for a closed set always picks a candidate.
    """
    answers: list[Answer | None] = [None] * len(outputs)
    closed, open_ = [], []
    for i, output in enumerate(outputs):
        pred = from_answer_sentence(output, task, labels)
        if pred is not None:
            answers[i] = Answer(pred, "answer_sentence")
        else:
            (closed if answer_sets[i] else open_).append(i)
    eos = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else None
    prefix = {i: second_pass_prompt(prompts[i], outputs[i], eos) for i in closed + open_}
    closed_sets = [answer_sets[i] for i in closed]
    picked = pick_answers(
        model, tokenizer, [prefix[i] for i in closed], closed_sets, progress=progress, workers=workers
    )
    completed = complete_answers(
        model, tokenizer, [prefix[i] for i in open_], task, batch_size, progress=progress, workers=workers
    )
    for i, pred in [*zip(closed, picked), *zip(open_, completed)]:
        answers[i] = Answer(pred, "second_pass" if pred is not None else "none")
    return answers  # type: ignore[return-value]
