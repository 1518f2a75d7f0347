"""What a plan's teacher calls send and cost: the arithmetic, without any I/O.

For each stage and step (synthesize, annotate) the plan has a number of calls;
this module turns per-request prompt token counts (counted elsewhere, with
the teacher's tokenizer) into

* prompt tokens: exact where the rows are known, else the range over the rows
  selection may choose ([sum of the q smallest, sum of the q largest]) and the
  expected value of a uniform draw (q x the mean);
* completion tokens: the upper bound calls x max_tokens, and calls x the mean
  completion the cache has seen (None when it has seen none);
* dollars at teacher.price, synchronous and batch (batch_factor x sync), for
  the upper bound and for the expected value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Tokens:
    """Prompt tokens of a set of requests: at least `low`, at most `high`, `expected` on average."""

    low: int
    high: int
    expected: float

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.low + other.low, self.high + other.high, self.expected + other.expected)

    @property
    def exact(self) -> bool:
        return self.low == self.high

    def to_dict(self) -> dict:
        return {"min": self.low, "max": self.high, "expected": round(self.expected, 1), "exact": self.exact}


NO_TOKENS = Tokens(0, 0, 0.0)


def total_tokens(parts: Iterable[Tokens]) -> Tokens:
    return sum(parts, NO_TOKENS)


def exact_tokens(counts: Sequence[int]) -> Tokens:
    """Requests that are known: their counts summed."""
    return Tokens(sum(counts), sum(counts), float(sum(counts)))


def chosen_tokens(counts: Sequence[int], q: int) -> Tokens:
    """q requests, one per row chosen from rows whose prompts have `counts` tokens.

    Which q rows is decided at run time (IFD or a seeded draw), so: the q
    smallest to the q largest, and q x the mean (the expectation of a uniform
    draw). q = len(counts) is exact."""
    if not 0 <= q <= len(counts):
        raise ValueError(f"cannot choose {q} of {len(counts)} rows")
    if q == 0:
        return NO_TOKENS
    ordered = sorted(counts)
    return Tokens(sum(ordered[:q]), sum(ordered[-q:]), q * sum(ordered) / len(ordered))


def annotate_tokens(real: Mapping[str, int], open_rows: int, by_domain: Mapping[str, Sequence[int]]) -> Tokens:
    """One stage's annotate prompts: real[d] rows of each domain d, plus `open_rows`
    rows from anywhere in the pool (policy active). `by_domain`: the prompt
    tokens of each of the domain's pool rows."""
    per_domain = total_tokens(chosen_tokens(by_domain[d], q) for d, q in real.items() if q)
    if not open_rows:
        return per_domain
    anywhere = [n for counts in by_domain.values() for n in counts]
    return per_domain + chosen_tokens(anywhere, open_rows)


def annotated_before(per_stage: Sequence[Mapping], stage: int, annotates: bool) -> dict[str, int]:
    """The most pool rows of each domain that stages before `stage` annotated
    (an open pick may be of any domain, so it counts for every domain)."""
    if not annotates:
        return {}
    earlier = per_stage[:stage]
    anywhere = sum(alloc["open"] for alloc in earlier)
    domains = {d for alloc in earlier for d in alloc["real"]}
    return {d: sum(alloc["real"].get(d, 0) for alloc in earlier) + anywhere for d in domains}


def synthesis_tokens(drawn: Sequence[int], rationales: Sequence[int], max_tokens: int, mean_rationale: float) -> Tokens:
    """One stage's synthesis prompts. `drawn`: each request's tokens with its seeded
    demonstrations shown with the answer sentence only (what a row carries when no
    earlier stage annotated it); `rationales`: how many of each request's
    demonstrations may instead show a rationale an earlier stage's annotation
    wrote, unknown now: each adds at most max_tokens (teacher.max_tokens), and
    `mean_rationale` on average."""
    shown = sum(rationales)
    low = sum(drawn)
    return Tokens(low, low + shown * max_tokens, low + shown * mean_rationale)


def usd(prompt_tokens: float, completion_tokens: float, input_per_1m: float, output_per_1m: float) -> float:
    return (prompt_tokens * input_per_1m + completion_tokens * output_per_1m) / PER_MILLION


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float
    batch_factor: float

    def sync(self, prompt_tokens: float, completion_tokens: float) -> float:
        return usd(prompt_tokens, completion_tokens, self.input_per_1m, self.output_per_1m)

    def batch(self, prompt_tokens: float, completion_tokens: float) -> float:
        return self.batch_factor * self.sync(prompt_tokens, completion_tokens)


@dataclass(frozen=True)
class StepCost:
    """One step's (or several steps') calls and tokens; `completion_expected` is
    None when the mean completion is unknown."""

    calls: int
    prompt: Tokens
    completion_max: int
    completion_expected: float | None

    def __add__(self, other: StepCost) -> StepCost:
        mine, theirs = self.completion_expected, other.completion_expected
        expected = None if mine is None or theirs is None else mine + theirs
        return StepCost(
            self.calls + other.calls, self.prompt + other.prompt, self.completion_max + other.completion_max, expected
        )

    def to_dict(self, price: Price) -> dict:
        """Calls, tokens, and dollars synchronous and batch, at most and expected."""
        known = self.completion_expected is not None

        def dollars(charge) -> dict:
            most = charge(self.prompt.high, self.completion_max)
            return {"max": most, "expected": charge(self.prompt.expected, self.completion_expected) if known else None}

        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt.to_dict(),
            "completion_tokens": {
                "max": self.completion_max,
                "expected": round(self.completion_expected, 1) if known else None,
            },
            "usd": {"sync": dollars(price.sync), "batch": dollars(price.batch)},
        }


NO_COST = StepCost(0, NO_TOKENS, 0, 0.0)


def step_cost(calls: int, prompt: Tokens, max_tokens: int, mean_completion: float | None) -> StepCost:
    """`calls` requests of at most max_tokens completion tokens each, mean_completion on average."""
    expected = 0.0 if calls == 0 else None if mean_completion is None else calls * mean_completion
    return StepCost(calls, prompt, calls * max_tokens, expected)


def total_cost(steps: Iterable[StepCost]) -> StepCost:
    """The steps summed; an expected value only if every step has one."""
    return sum(steps, NO_COST)


def mean_completion(history: Iterable[tuple[str, int, int]], model: str, max_tokens: int) -> tuple[float, int] | None:
    """(mean completion tokens, responses) over `history`'s (model, max_tokens,
    completion_tokens) of the same model and max_tokens; None if there is none."""
    seen = [n for m, limit, n in history if m == model and limit == max_tokens]
    return (sum(seen) / len(seen), len(seen)) if seen else None
