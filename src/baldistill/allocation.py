"""The allocate step: one stage's quotas, chained from the previous stage's
state so that stage k depends on stage k-1 (and changing K or B re-plans)."""

from __future__ import annotations

from typing import Mapping

from .params import Params, stage_index
from .policy import allocate_round, check_request, stage_shares


def start_state(counts: Mapping[str, int]) -> dict:
    """The state before stage 0: nothing used, nothing granted."""
    zeros = {d: 0 for d in counts}
    return {"stage": -1, "used_after": dict(zeros), "given_after": dict(zeros)}


def allocate(params: Params, counts: Mapping[str, int], previous: dict, stage_name: str) -> dict:
    """Stage `stage_name`'s allocation given the previous stage's state."""
    k = stage_index(stage_name)
    check_request(counts, params.budget.total, params.K, params.policy.name)
    if previous["stage"] != k - 1:
        raise ValueError(f"{stage_name} must follow stage {k - 1}, got state of stage {previous['stage']}")
    share = stage_shares(params.budget.total, params.K)[k]
    rnd = allocate_round(
        params.policy.name, counts, previous["used_after"], previous["given_after"], share, k, params.K,
        seed=params.policy.seed, schedule=params.policy.adaptive_schedule,
    )
    given_after = {d: previous["given_after"].get(d, 0) + rnd.quota[d] for d in counts}
    return {"policy": params.policy.name, "share": share, **rnd.to_dict(),
            "used_after": rnd.used_after, "given_after": given_after}
