"""Balancing policies (Section 3.3 of the paper) as pure functions.

A run has a budget of B teacher calls spread over K stages. Stage k gets an
integer share of B (the shares sum exactly to B); a policy turns that share
into per-domain quotas (summing exactly to the share), and the split rule
turns quotas into rows taken from the pool and rows to synthesize:

* a domain whose quota exceeds its unused pool rows **needs synthesis**: all
  its unused rows are taken (and annotated by the teacher) and the rest is
  synthesized;
* otherwise its quota is **met from the pool**: selected from its unused rows.

(The paper calls these a stage's tail and head domains, and allocation.json
keeps those key names, `tail` and `head`; they are not the data set's head/tail
split by pool size that evaluation reports, rows.is_head.)

Nothing here touches a model, a file or the network, so every rule is
property-tested (tests/test_policy.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from baldistill.core.errors import BaldistillError
from baldistill.core.feedback import DomainScore, FeedbackRule, feedback_targets, shrunk_scores, weakest_first
from baldistill.core.policies import policy_spec
from baldistill.core.rows import head_to_tail


@dataclass
class StageAllocation:
    """What one stage asks for. `open` rows are picked at run time from the
    whole unused pool (policy `active`), so their domains are not known yet."""

    stage: int
    quota: dict[str, int]
    real: dict[str, int]
    synthetic: dict[str, int]
    duplicated: dict[str, int]
    head: list[str]
    tail: list[str]
    open: int
    teacher_calls: int
    used_after: dict[str, int] = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "quota": self.quota,
            "real": self.real,
            "synthetic": self.synthetic,
            "duplicated": self.duplicated,
            "head": self.head,
            "tail": self.tail,
            "open": self.open,
            "teacher_calls": self.teacher_calls,
        }


def stage_shares(budget: int, stages: int) -> list[int]:
    """B split over K stages as evenly as integers allow; earlier stages get
    the remainder first. Sums exactly to `budget`."""
    base, extra = divmod(budget, stages)
    return [base + (1 if k < extra else 0) for k in range(stages)]


def largest_remainder(targets: Mapping[str, Fraction], total: int, tie_order: list[str]) -> dict[str, int]:
    """StageAllocation non-negative `targets` (which sum to `total`) to integers summing
    exactly to `total` (Hamilton's method). Equal remainders are broken by
    position in `tie_order`, so results are deterministic."""
    floors = {d: int(t) for d, t in targets.items()}  # int() floors non-negative Fractions
    left = total - sum(floors.values())
    rank = {d: i for i, d in enumerate(tie_order)}
    by_remainder = sorted(targets, key=lambda d: (-(targets[d] - floors[d]), rank[d]))
    for d in by_remainder[:left]:
        floors[d] += 1
    return floors


def adaptive_weight(stage: int, stages: int, schedule: str) -> Fraction:
    """Weight i/K of the balanced term in the adaptive formula at stage k of K.

    The paper writes the weight as i/K and says the batch starts "akin to
    random selection" and is balanced "by the final stage". No integer range
    of i over K stages gives both ends, so:
      * "zero" (default): i = k in 0..K-1, as printed (Algorithm 1 runs
        k = 0..K-1) and as the authors' code does; never fully balanced.
      * "spread": i/K = k/(K-1), from 0 (proportional) at the first stage
        to 1 (naive balance) at the last; K=1 stays proportional.
      * "one":   i = k+1 in 1..K (fully balanced at the end, never proportional).
    """
    if schedule == "spread":
        return Fraction(stage, stages - 1) if stages > 1 else Fraction(0)
    if schedule == "zero":
        return Fraction(stage, stages)
    if schedule == "one":
        return Fraction(stage + 1, stages)
    raise BaldistillError(f"policy.adaptive_schedule: unknown schedule {schedule!r}")


def naive_targets(domains: list[str], share: int) -> dict[str, Fraction]:
    """B/(K*l) for every domain."""
    return {d: Fraction(share, len(domains)) for d in domains}


def adaptive_targets(counts: Mapping[str, int], share: int, weight: Fraction) -> dict[str, Fraction]:
    """(n_d/N * B/K) * (1 - w) + B/(K*l) * w, with the real n_d and N."""
    total, n_domains = sum(counts.values()), len(counts)
    return {
        d: Fraction(n, total) * share * (1 - weight) + Fraction(share, n_domains) * weight for d, n in counts.items()
    }


def split_by_pool(quota: Mapping[str, int], unused: Mapping[str, int]) -> tuple[dict, dict, list, list]:
    """Quota -> (real, missing, met from the pool, needs synthesis) by the rule in the module docstring."""
    real, missing, head, tail = {}, {}, [], []
    for d, q in quota.items():
        if q > unused[d]:
            tail.append(d)
            real[d], missing[d] = unused[d], q - unused[d]
        else:
            head.append(d)
            real[d], missing[d] = q, 0
    return real, missing, head, tail


def _tie_order(counts: Mapping[str, int], given: Mapping[str, int]) -> list[str]:
    """Domains that received least so far win ties; then head to tail (a stable sort)."""
    return sorted(head_to_tail(counts), key=lambda d: given.get(d, 0))


def _random_quota(unused: Mapping[str, int], share: int, seed: int, stage: int) -> dict[str, int]:
    """Per-domain counts of `share` rows drawn uniformly without replacement."""
    domains = list(unused)
    draw = min(share, sum(unused.values()))
    rng = np.random.default_rng([seed, stage])
    picked = rng.multivariate_hypergeometric([unused[d] for d in domains], draw)
    return {d: int(n) for d, n in zip(domains, picked)}


def allocate_stage(
    policy: str,
    counts: Mapping[str, int],
    used: Mapping[str, int],
    given: Mapping[str, int],
    share: int,
    stage: int,
    stages: int,
    *,
    seed: int = 0,
    schedule: str = "zero",
    scores: Mapping[str, Fraction] | None = None,
    rule: FeedbackRule | None = None,
) -> StageAllocation:
    """One stage's allocation for `policy` (its row of the policy table).

    counts: pool rows per domain (n_d); used: rows taken by earlier stages;
    given: quotas granted by earlier stages (only for tie-breaking fairness);
    scores, rule: the previous student's per-domain validation scores (shrunk,
    core/feedback.py) and the feedback rule, for policy feedback at stage >= 1
    (without scores, as in a plan made before the run, its share is left
    `open`: the domains are decided at run time).
    """
    spec = policy_spec(policy)
    counts = {d: counts[d] for d in head_to_tail(counts)}
    unused = {d: counts[d] - used.get(d, 0) for d in counts}
    zeros = dict.fromkeys(counts, 0)
    later_feedback = spec.quotas == "feedback" and stage > 0
    if spec.quotas in ("none", "open") or (later_feedback and scores is None):
        open_rows = 0 if spec.quotas == "none" else min(share, sum(unused.values()))
        head = [d for d in counts if unused[d] > 0] if open_rows and spec.quotas == "open" else []
        calls = share if later_feedback else open_rows if spec.annotates else 0
        return StageAllocation(
            stage, dict(zeros), dict(zeros), dict(zeros), dict(zeros), head, [], open_rows, calls, dict(used)
        )
    if spec.quotas == "random":
        quota = _random_quota(unused, share, seed, stage)
        real, missing = dict(quota), dict(zeros)
        head, tail = [d for d in counts if quota[d] > 0], []
    else:
        tie_order = _tie_order(counts, given)
        if spec.quotas == "adaptive":
            targets = adaptive_targets(counts, share, adaptive_weight(stage, stages, schedule))
        elif later_feedback:
            targets = feedback_targets(list(counts), share, scores, rule)
            tie_order = weakest_first(tie_order, scores)
        else:
            targets = naive_targets(list(counts), share)
        quota = largest_remainder(targets, share, tie_order)
        real, missing, head, tail = split_by_pool(quota, unused)
    synthetic = missing if spec.synthesizes else dict(zeros)
    # Duplicates reuse the rationale of the row they copy: no new call.
    duplicated = missing if spec.duplicates else dict(zeros)
    calls = (sum(real.values()) if spec.annotates else 0) + sum(synthetic.values())
    used_after = {d: used.get(d, 0) + real[d] for d in counts}
    return StageAllocation(stage, quota, real, synthetic, duplicated, head, tail, 0, calls, used_after)


def make_plan(
    counts: Mapping[str, int],
    budget: int,
    stages: int,
    policy: str,
    *,
    seed: int = 0,
    schedule: str = "zero",
    scores: Mapping[str, Fraction] | None = None,
    rule: FeedbackRule | None = None,
) -> dict:
    """Every stage's allocation, computed without calling anything. Policy
    feedback's stages k >= 1 use `scores` as every earlier student's (the plan
    cannot know them), or are left open without them.

    Raises BaldistillError for impossible requests (empty pool, K < 1,
    a budget smaller than the number of domains, an unknown policy).
    """
    check_request(counts, budget, stages, policy)
    used: dict[str, int] = {}
    given: dict[str, int] = {}
    per_stage = []
    for k, share in enumerate(stage_shares(budget, stages)):
        alloc = allocate_stage(
            policy, counts, used, given, share, k, stages, seed=seed, schedule=schedule, scores=scores, rule=rule
        )
        used = alloc.used_after
        given = {d: given.get(d, 0) + alloc.quota[d] for d in counts}
        per_stage.append(alloc.to_dict())
    return {
        "budget": budget,
        "stages": stages,
        "policy": policy,
        "teacher_calls": sum(r["teacher_calls"] for r in per_stage),
        "per_stage": per_stage,
    }


def check_request(counts: Mapping[str, int], budget: int, stages: int, policy: str) -> None:
    policy_spec(policy)
    if stages < 1:
        raise BaldistillError(f"the stage count must be at least 1, got {stages}")
    if not counts or sum(counts.values()) == 0:
        raise BaldistillError("the pool is empty: no domain has any row")
    bad = [d for d, n in counts.items() if not isinstance(n, int) or isinstance(n, bool) or n < 0]
    if bad:
        raise BaldistillError(f"domain {bad[0]!r}: row count must be a non-negative integer")
    if budget < len(counts):
        raise BaldistillError(f"budget {budget} is smaller than the number of domains ({len(counts)})")


def start_state(counts: Mapping[str, int]) -> dict:
    """The state before stage 0: nothing used, nothing granted."""
    zeros = dict.fromkeys(counts, 0)
    return {"stage": -1, "used_after": dict(zeros), "given_after": dict(zeros)}


def allocate(
    budget: int,
    policy,
    stage_count: int,
    counts: Mapping[str, int],
    previous: dict,
    stage: int,
    scores: Mapping[str, DomainScore] | None = None,
) -> dict:
    """Stage `stage`'s allocation (the allocate step) given the previous stage's
    state; `policy` is the params.policy section; `scores` the previous
    student's validation results (policy feedback, stage >= 1), shrunk here by
    policy.feedback.prior_strength. Chaining from the previous state makes
    stage k depend on stage k-1, so changing K or B re-plans."""
    check_request(counts, budget, stage_count, policy.name)
    if previous["stage"] != stage - 1:
        raise BaldistillError(
            f"stage s{stage} must follow stage {stage - 1}, got the state of stage {previous['stage']}"
        )
    if policy_spec(policy.name).scores_validation and stage > 0 and scores is None:
        raise BaldistillError(f"policy {policy.name}: stage s{stage} needs stage s{stage - 1}'s validation scores")
    rule = FeedbackRule(policy.feedback.prior_strength, policy.feedback.floor, policy.feedback.cap)
    shrunk = None if scores is None else shrunk_scores(list(counts), scores, rule.prior_strength)
    share = stage_shares(budget, stage_count)[stage]
    alloc = allocate_stage(
        policy.name,
        counts,
        previous["used_after"],
        previous["given_after"],
        share,
        stage,
        stage_count,
        seed=policy.seed,
        schedule=policy.adaptive_schedule,
        scores=shrunk,
        rule=rule,
    )
    given_after = {d: previous["given_after"].get(d, 0) + alloc.quota[d] for d in counts}
    return {
        "policy": policy.name,
        "share": share,
        **alloc.to_dict(),
        "used_after": alloc.used_after,
        "given_after": given_after,
    }
