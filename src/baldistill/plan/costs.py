"""Tokens and dollars of a plan's teacher calls, for `baldistill plan`.

Each request is built with its step's own builder (`annotation_requests`,
`synthesis_calls`) from the prepared pool and counted with the teacher's
tokenizer (teacher/tokens.py); the expected completion comes from what the
teacher cache has seen for this model and max_tokens, and a request whose key
the cache holds is free. The arithmetic is plan/spend.py; this module only
gathers its inputs.

It reads the params it needs as sections (`CostSettings`), and reaches the
student's selection only through `RowDraw`, a function its caller passes in
(cli.py: the select step's seeded draw), so the plan imports no student code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Teacher
from baldistill.core.policies import policy_spec
from baldistill.core.rows import Row, domain_counts, read_rows
from baldistill.plan.spend import (
    NO_COST,
    NO_TOKENS,
    NONE_CACHED,
    Price,
    StepCost,
    annotate_cached,
    annotate_tokens,
    annotated_before,
    exact_tokens,
    known_cached,
    mean_completion,
    step_cost,
    synthesis_tokens,
    total_cost,
    unknown_cached,
)
from baldistill.teacher.annotation import annotation_requests
from baldistill.teacher.cache import RequestCache, request_key
from baldistill.teacher.client import Request
from baldistill.teacher.synthesis import synthesis_calls
from baldistill.teacher.tokens import TokenCounter, counter_for

STEPS = ("synthesize", "annotate")
NEED_POOL = f"tokens and dollars need the prepared pool {layout.POOL}: run `dvc repro prepare`"


class CostSettings(NamedTuple):
    """The params a plan's costs read: the teacher section, data.max_input_chars and policy.seed."""

    teacher: Teacher
    max_input_chars: int
    seed: int


# The select step's rows for one stage (pool, allocation with its policy, ids taken
# by earlier stages, stage index, the data set), for a policy that draws them without IFD.
RowDraw = Callable[[list[Row], dict, set[str], int, DatasetInfo], list[Row]]


def unavailable(reason: str) -> dict:
    """The plan's teacher_cost block when tokens cannot be counted."""
    return {"available": False, "reason": reason}


def prepared_pool(counts: Mapping[str, int]) -> list[Row] | str:
    """The prepared pool the plan's tokens are counted on, or why there is none."""
    if not layout.POOL.exists():
        return NEED_POOL
    pool = read_rows(layout.POOL)
    if domain_counts(pool) != {d: n for d, n in counts.items() if n}:
        return f"tokens and dollars are counted on {layout.POOL}, whose rows per domain differ from --counts"
    return pool


def forecast(plan: dict, pool: list[Row], settings: CostSettings, draw: RowDraw) -> dict:
    """The teacher_cost block of `plan` on the prepared `pool`, with the
    teacher's tokenizer and the default teacher cache."""
    info = DatasetInfo.load(layout.INFO)
    return plan_costs(plan, pool, settings, info, counter_for(settings.teacher), RequestCache(), draw)


def plan_costs(
    plan: dict,
    pool: list[Row],
    settings: CostSettings,
    info: DatasetInfo,
    counter: TokenCounter,
    cache: RequestCache,
    draw: RowDraw,
) -> dict:
    """Per stage and step: calls, prompt and completion tokens, and dollars; and the run's total."""
    teacher = settings.teacher
    history, answered = cache_contents(cache)
    expected = {step: _expected(history, teacher.model, max_tokens_of(teacher, step)) for step in STEPS}
    means = {step: found[0] if found else None for step, found in expected.items()}
    measure = Measure(counter, lambda request: request_key(request.material(teacher.model)) in answered)
    stages, shown = stage_costs(plan, pool, settings, info, measure, means, draw)
    price = Price(teacher.price.input_per_1m, teacher.price.output_per_1m, teacher.price.batch_factor)
    return {
        "available": True,
        "counting": counter.description,
        "price": teacher.price.model_dump(),
        "expected_completion": {
            step: _source(expected[step], teacher.model, max_tokens_of(teacher, step)) for step in STEPS
        },
        "cache": str(cache.directory) if history is not None else None,
        "per_stage": [
            {"stage": k, "synthesize": synth.to_dict(price), "annotate": annotate.to_dict(price)}
            for k, synth, annotate in stages
        ],
        "total": total_cost(cost for _, synth, annotate in stages for cost in (synth, annotate)).to_dict(price),
        "notes": _open_notes(plan) + _notes(shown, teacher.max_tokens, history is not None, cache, expected),
    }


class Measure(NamedTuple):
    """What the plan learns of one request: its prompt tokens, and whether the cache answers it."""

    counter: TokenCounter
    is_cached: Callable[[Request], bool]


def stage_costs(
    plan: dict,
    pool: list[Row],
    settings: CostSettings,
    info: DatasetInfo,
    measure: Measure,
    means: Mapping[str, float | None],
    draw: RowDraw,
) -> tuple[list[tuple[int, StepCost, StepCost]], dict[int, int]]:
    """(stage, synthesize, annotate) per stage, and per stage how many synthesis
    demonstrations may show an earlier stage's rationale. `means`: the mean
    completion per step (None: unknown)."""
    spec = policy_spec(plan["policy"])
    drawn = seeded_rows(plan, pool, info, draw) if spec.annotates and not spec.by_ifd else None
    requests = annotate_requests(plan, pool, settings, info) if spec.annotates and drawn is None else {}
    by_domain = {d: [measure.counter.count(r.messages) for r in rs] for d, rs in requests.items()}
    hits = {d: [measure.is_cached(r) for r in rs] for d, rs in requests.items()}
    stages, shown = [], {}
    for k, alloc in enumerate(plan["per_stage"]):
        synth, shown[k] = synthesis_cost(plan, k, pool, settings, info, measure, means)
        # Duplicated rows copy an earlier rationale: no call, so they are not counted.
        calls = sum(alloc["real"].values()) + alloc["open"] if spec.annotates else 0
        if drawn is not None:  # the rows are known: exact
            known = annotate_requests_of(drawn[k], settings, info)
            tokens = exact_tokens([measure.counter.count(r.messages) for r in known])
            cached = known_cached([measure.is_cached(r) for r in known])
        else:
            tokens = annotate_tokens(alloc["real"], alloc["open"], by_domain) if calls else NO_TOKENS
            cached = annotate_cached(alloc["real"], alloc["open"], hits) if calls else NONE_CACHED
        stages.append((k, synth, step_cost(calls, tokens, settings.teacher.max_tokens, means["annotate"], cached)))
    return stages, shown


def seeded_rows(plan: dict, pool: list[Row], info: DatasetInfo, draw: RowDraw) -> list[list[Row]]:
    """Per stage, the pool rows the select step takes for a policy that draws
    them without IFD: the step itself replayed by `draw`, seeded by policy.seed
    as in a run (it never loads the student then), each stage after the rows
    the earlier ones took."""
    taken: set[str] = set()
    per_stage = []
    for k, alloc in enumerate(plan["per_stage"]):
        rows = draw(pool, {**alloc, "policy": plan["policy"]}, taken, k, info)
        chosen = [r for r in rows if r.source != "duplicate"]  # a copy is not sent to the teacher
        taken |= {r.id for r in chosen}
        per_stage.append(chosen)
    return per_stage


def max_tokens_of(teacher: Teacher, step: str) -> int:
    """The max_tokens a step's requests carry."""
    return teacher.synth_max_tokens if step == "synthesize" else teacher.max_tokens


def cache_contents(cache: RequestCache) -> tuple[list[tuple[str, int, int]] | None, set[str]]:
    """From one read of the cache: (model, max_tokens, completion_tokens) of every
    cached response that reports its completion tokens, and the keys of every
    cached answer; (None, no key) when the cache file does not exist (it is not created)."""
    if not cache.path.exists():
        return None, set()
    try:
        entries = cache.entries(cache.keys())
    finally:
        cache.close()
    history = [
        (e["request"].get("model"), e["request"].get("max_tokens"), int(e["response"]["completion_tokens"]))
        for e in entries
        if e["response"].get("completion_tokens") is not None
    ]
    return history, {e["key"] for e in entries}


def _expected(history, model: str, max_tokens: int) -> tuple[float, int] | None:
    return mean_completion(history, model, max_tokens) if history is not None else None


def _source(found: tuple[float, int] | None, model: str, max_tokens: int) -> dict:
    """Where a step's expected completion comes from (mean None: no expected value)."""
    mean, responses = found if found else (None, 0)
    return {"model": model, "max_tokens": max_tokens, "mean": mean, "responses": responses}


def annotate_requests(
    plan: dict, pool: Sequence[Row], settings: CostSettings, info: DatasetInfo
) -> dict[str, list[Request]]:
    """The annotate request of every pool row the plan may annotate, per domain."""
    stages = plan["per_stage"]
    anywhere = any(alloc["open"] for alloc in stages)
    wanted = {d for alloc in stages for d, q in alloc["real"].items() if q}
    rows = [row for row in pool if anywhere or row.domain in wanted]
    by_domain: dict[str, list[Request]] = {}
    for row, request in zip(rows, annotate_requests_of(rows, settings, info)):
        by_domain.setdefault(row.domain, []).append(request)
    return by_domain


def annotate_requests_of(rows: Sequence[Row], settings: CostSettings, info: DatasetInfo) -> list[Request]:
    """The requests the annotate step sends for `rows`."""
    return annotation_requests(list(rows), settings.teacher, settings.max_input_chars, info)


def synthesis_cost(
    plan: dict,
    stage: int,
    pool: list[Row],
    settings: CostSettings,
    info: DatasetInfo,
    measure: Measure,
    means: Mapping[str, float | None],
) -> tuple[StepCost, int]:
    """Stage `stage`'s synthesize step, and how many of its demonstrations may
    show a rationale an earlier stage wrote (unknown now: counted without it,
    then bounded by teacher.max_tokens each)."""
    quota = {d: n for d, n in plan["per_stage"][stage]["synthetic"].items() if n > 0}
    if not quota:
        return NO_COST, 0
    teacher = settings.teacher
    # The pool as the plan knows it: no rationale yet, so each demonstration shows the answer sentence.
    calls = synthesis_calls(pool, quota, stage, teacher, settings.seed, settings.max_input_chars, info)
    before = annotated_before(plan["per_stage"], stage, policy_spec(plan["policy"]).annotates)
    shown = [min(len(c.demonstrations), before.get(c.domain, 0)) for c in calls]
    drawn = [measure.counter.count(c.request.messages) for c in calls]
    # Without a mean annotate completion, expect the worst: every rationale as long as allowed.
    rationale = teacher.max_tokens if means["annotate"] is None else means["annotate"]
    tokens = synthesis_tokens(drawn, shown, teacher.max_tokens, rationale)
    # A request none of whose demonstrations can show a later-written rationale is known now.
    known = [measure.is_cached(c.request) for c, n in zip(calls, shown) if n == 0]
    cached = known_cached(known) + unknown_cached(len(calls) - len(known))
    return step_cost(len(calls), tokens, teacher.synth_max_tokens, means["synthesize"], cached), sum(shown)


def _open_notes(plan: dict) -> list[str]:
    """Policy feedback's later stages planned without --scores: what their range leaves out."""
    if not policy_spec(plan["policy"]).scores_validation:
        return []
    return [
        f"stage {alloc['stage']}: its {alloc['teacher_calls']} calls go where stage {alloc['stage'] - 1}'s student "
        "scores lowest on the validation rows, known only at run time: counted as annotations of rows from "
        "anywhere in the pool (a tail domain's calls are syntheses instead, whose prompts, with demonstrations, "
        "are longer); give --scores to plan their domains"
        for alloc in plan["per_stage"]
        if alloc["open"]
    ]


def _notes(shown: Mapping[int, int], max_tokens: int, has_cache: bool, cache: RequestCache, expected) -> list[str]:
    notes = [
        "prompt tokens min-max: rows IFD chooses at run time range from the shortest to the longest prompts of "
        "their domain; expected = rows x the domain's mean prompt (rows drawn without IFD are drawn here as the "
        "select step draws them, with policy.seed: exact)"
    ]
    for k, n in shown.items():
        if n:
            notes.append(
                f"stage {k} synthesize: up to {n} demonstration(s) show a rationale written by an earlier stage, "
                f"unknown now: counted as the answer sentence; the upper end adds teacher.max_tokens ({max_tokens}) "
                "each, the expected value the mean annotate completion (rows with a rationale are drawn first, "
                "so other rows may be shown)"
            )
    if has_cache:
        notes.append(
            f"cached: calls the teacher cache at {cache.path} answers already (paid before, free now); rows chosen at "
            "run time give a range, and a synthesis request that may show a rationale not yet written counts as to "
            "pay; each stage's range stands alone (the total's upper end may count a cached row in two stages); "
            "to pay = calls - cached, its dollars taking a cached call to cost an average one"
        )
    else:
        notes.append(f"no teacher cache at {cache.path}: no expected completion tokens, so no expected value")
    for step, found in expected.items():
        if has_cache and not found:
            notes.append(f"{step}: the teacher cache has no response of this model and max_tokens: no expected value")
    return notes
