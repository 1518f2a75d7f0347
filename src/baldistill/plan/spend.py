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
  the upper bound and for the expected value;
* the calls the teacher cache already answers (paid before, never paid
  twice): exact where the requests are known, else a range and the mean of a
  uniform draw, like prompt tokens; and what is left to pay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Span:
    """A count over a set of requests: at least `low`, at most `high`, `expected` on average."""

    low: int
    high: int
    expected: float

    def __add__(self, other: Span) -> Span:
        return type(self)(self.low + other.low, self.high + other.high, self.expected + other.expected)

    def to_dict(self) -> dict:
        return {"min": self.low, "max": self.high, "expected": round(self.expected, 1)}


class Tokens(Span):
    """Prompt tokens of a set of requests."""

    @property
    def exact(self) -> bool:
        return self.low == self.high

    def to_dict(self) -> dict:
        return {**super().to_dict(), "exact": self.exact}


NO_TOKENS = Tokens(0, 0, 0.0)


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
    return _annotated(chosen_tokens, NO_TOKENS, real, open_rows, by_domain)


def _annotated(choose, nothing, real: Mapping[str, int], open_rows: int, by_domain: Mapping[str, Sequence]):
    """`choose(values, q)` summed over the domains' quotas, plus the open picks from anywhere."""
    per_domain = sum((choose(by_domain[d], q) for d, q in real.items() if q), nothing)
    if not open_rows:
        return per_domain
    anywhere = [value for values in by_domain.values() for value in values]
    return per_domain + choose(anywhere, open_rows)


class Cached(Span):
    """How many of a set of calls the teacher cache already answers, paid for before and free now."""


NONE_CACHED = Cached(0, 0, 0.0)


def known_cached(hits: Sequence[bool]) -> Cached:
    """Requests known now, `hits` telling which the cache holds: exact."""
    found = sum(hits)
    return Cached(found, found, float(found))


def unknown_cached(calls: int) -> Cached:
    """Requests not known now (a demonstration may show a rationale an earlier
    stage will write): any of them may be cached, and none is expected to be,
    so what is to pay is never understated."""
    return Cached(0, calls, 0.0)


def chosen_cached(hits: Sequence[bool], q: int) -> Cached:
    """q rows chosen at run time from rows whose requests the cache holds where
    `hits`: as few as the choice can avoid to as many as there are, and q x the
    cached share on average (the mean of a uniform draw, hypergeometric)."""
    if not 0 <= q <= len(hits):
        raise ValueError(f"cannot choose {q} of {len(hits)} rows")
    if q == 0:
        return NONE_CACHED
    found = sum(hits)
    return Cached(max(0, q - (len(hits) - found)), min(q, found), q * found / len(hits))


def annotate_cached(real: Mapping[str, int], open_rows: int, hits: Mapping[str, Sequence[bool]]) -> Cached:
    """One stage's annotate calls the cache answers, chosen as in annotate_tokens;
    `hits`: per domain, which of its pool rows' requests the cache holds."""
    return _annotated(chosen_cached, NONE_CACHED, real, open_rows, hits)


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
    cached: Cached = NONE_CACHED

    def __add__(self, other: StepCost) -> StepCost:
        mine, theirs = self.completion_expected, other.completion_expected
        expected = None if mine is None or theirs is None else mine + theirs
        return StepCost(
            self.calls + other.calls,
            self.prompt + other.prompt,
            self.completion_max + other.completion_max,
            expected,
            self.cached + other.cached,
        )

    @property
    def paid_share(self) -> float:
        """The expected share of the calls still to pay (1 without calls)."""
        return 1.0 - self.cached.expected / self.calls if self.calls else 1.0

    def to_dict(self, price: Price) -> dict:
        """Calls, tokens, and dollars synchronous and batch, at most and expected;
        and of them what is still to pay, the cache's answers taken off."""
        known = self.completion_expected is not None
        usd = {
            kind: {
                "max": charge(self.prompt.high, self.completion_max),
                "expected": charge(self.prompt.expected, self.completion_expected) if known else None,
            }
            for kind, charge in (("sync", price.sync), ("batch", price.batch))
        }
        share = self.paid_share
        return {
            "calls": self.calls,
            "cached_calls": self.cached.to_dict(),
            "to_pay": {
                "calls": {
                    "min": self.calls - self.cached.high,
                    "max": self.calls - self.cached.low,
                    "expected": round(self.calls - self.cached.expected, 1),
                },
                # The expected dollars of the calls not cached, a cached call taken
                # to cost what an average one does.
                "usd_expected": {kind: None if not known else d["expected"] * share for kind, d in usd.items()},
            },
            "prompt_tokens": self.prompt.to_dict(),
            "completion_tokens": {
                "max": self.completion_max,
                "expected": round(self.completion_expected, 1) if known else None,
            },
            "usd": usd,
        }


NO_COST = StepCost(0, NO_TOKENS, 0, 0.0)


def step_cost(
    calls: int, prompt: Tokens, max_tokens: int, mean_completion: float | None, cached: Cached = NONE_CACHED
) -> StepCost:
    """`calls` requests of at most max_tokens completion tokens each, mean_completion
    on average, `cached` of them answered by the cache already."""
    if not (0 <= cached.low <= cached.high <= calls and cached.low - 1e-9 <= cached.expected <= cached.high + 1e-9):
        raise ValueError(f"{cached} of {calls} calls")
    expected = 0.0 if calls == 0 else None if mean_completion is None else calls * mean_completion
    return StepCost(calls, prompt, calls * max_tokens, expected, cached)


def total_cost(steps: Iterable[StepCost]) -> StepCost:
    """The steps summed; an expected value only if every step has one."""
    return sum(steps, NO_COST)


def mean_completion(history: Iterable[tuple[str, int, int]], model: str, max_tokens: int) -> tuple[float, int] | None:
    """(mean completion tokens, responses) over `history`'s (model, max_tokens,
    completion_tokens) of the same model and max_tokens; None if there is none."""
    seen = [n for m, limit, n in history if m == model and limit == max_tokens]
    return (sum(seen) / len(seen), len(seen)) if seen else None
