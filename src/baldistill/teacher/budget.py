"""The hard cap on teacher calls (the paper's B, `budget.total`), checked where it is spent.

A run's B is split over its stages and steps by the allocation (core/allocation.py);
each step's allowance is read from its stage's allocation, never from the list of
requests it is about to send (`step_allowance`): synthesis may make its synthetic
quotas' calls, annotation the stage's teacher calls less those. Before a step pays,
the calls the run has budgeted so far plus this step's allowance must not pass
budget.total (`check_run_budget`): a tampered allocation, or one from another
budget, is refused with one line, before anything is sent or written.

Within a step, a client made with allowance N issues at most N distinct request
keys (`CallBudget`). Cache hits count too ("budgeted, not paid": the algorithm
used them), and a retry of a request is the same call. A batch that would go over
(a tampered selection) is refused whole, before any request of it is sent, so a
step never half-spends past its allowance.
"""

from __future__ import annotations

from collections.abc import Sequence

from baldistill.core.errors import BaldistillError

STEPS = ("synthesize", "annotate")


def step_allowance(allocation: dict, step: str, where: str = "allocation.json") -> int:
    """Teacher calls `step` may make, from its stage's allocation (`where`: the file it was read from)."""
    if step not in STEPS:
        raise ValueError(f"no teacher step {step!r}; one of {STEPS}")
    field = "synthetic"
    try:
        synthetic = sum(max(0, int(n)) for n in allocation[field].values())
        field = "teacher_calls"
        return synthetic if step == "synthesize" else int(allocation[field]) - synthetic
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BaldistillError(
            f"{where}: field '{field}' missing or not a count (written by the allocate step?)"
        ) from None


def check_run_budget(total: int, so_far: int, allowance: int, where: str) -> None:
    """Refuse a step whose allowance would take the run's budgeted calls past budget.total."""
    if allowance < 0 or so_far + allowance > total:
        raise BaldistillError(
            f"budget.total: {where} may make {allowance} teacher call(s) by its stage's allocation and the run "
            f"has budgeted {so_far}; {so_far + allowance} would pass budget.total={total} (an allocation from "
            "another budget, or edited? run the allocate step again)"
        )


class CallBudget:
    """The keys reserved so far, in first-use order (the order a step's answers are exported in)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used_keys: list[str] = []
        self._reserved: set[str] = set()

    def reserve(self, keys: Sequence[str]) -> int:
        """Count `keys` against the budget, all or nothing; returns how many were new."""
        new = [key for key in dict.fromkeys(keys) if key not in self._reserved]
        if len(self._reserved) + len(new) > self.limit:
            raise BaldistillError(
                f"budget.total: teacher budget exceeded: {len(new)} new call(s) requested, {len(self._reserved)} "
                f"of this step's {self.limit} (its share of budget.total in the stage's allocation) already used; "
                "nothing was sent (a selection or quota larger than the allocation?)"
            )
        self._reserved.update(new)
        self.used_keys.extend(new)
        return len(new)
