"""The policy table: what each balancing policy (BalDistill and the paper's
baselines) does at every step. Allocation, selection and the stage scripts
ask a policy's spec instead of testing its name, so adding a baseline is one
row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from baldistill.core.errors import BaldistillError

Quotas = Literal["adaptive", "naive", "feedback", "random", "open", "none"]


@dataclass(frozen=True)
class PolicySpec:
    """How one policy spends a stage's share of the budget.

    quotas: how the share becomes per-domain quotas. "adaptive" and "naive"
    are Section 3.3's formulas (then split into head rows and tail rows);
    "feedback" is naive at stage 0, then follows the previous student's
    validation scores (core/feedback.py), split the same way;
    "random" draws rows uniformly from the unused pool; "open" leaves the
    domains to selection (pool-wide IFD picks); "none" takes nothing.
    """

    name: str
    paper_name: str
    quotas: Quotas
    by_ifd: bool  # head rows picked by the previous stage's student (IFD), else at random
    annotates: bool  # the teacher writes a rationale for each selected pool row, else gold label only
    synthesizes: bool  # a tail domain's missing rows are written by the teacher
    duplicates: bool  # a tail domain's missing rows are copies of its earlier rows (no call)
    trains: bool  # a LoRA is fine-tuned on the gathered rows, else the base student is scored

    @property
    def scores_validation(self) -> bool:
        """Whether stage k >= 1 needs the previous student's validation scores."""
        return self.quotas == "feedback"


_TABLE = (
    PolicySpec("adaptive", "BalDistill (A)", "adaptive", True, True, True, False, True),
    PolicySpec("naive", "BalDistill (N)", "naive", True, True, True, False, True),
    PolicySpec("feedback", "Feedback (ours)", "feedback", True, True, True, False, True),
    PolicySpec("balance", "Balance Finetune-CoT", "naive", False, True, True, False, True),
    PolicySpec("duplicate", "Duplicate Finetune-CoT", "naive", False, True, False, True, True),
    PolicySpec("random", "Random Finetune-CoT", "random", False, True, False, False, True),
    PolicySpec("random_label", "Random Finetune", "random", False, False, False, False, True),
    PolicySpec("active", "Active Finetune-CoT", "open", True, True, False, False, True),
    PolicySpec("zeroshot", "Zero-shot student", "none", False, False, False, False, False),
)
POLICIES: dict[str, PolicySpec] = {spec.name: spec for spec in _TABLE}
POLICY_NAMES = tuple(POLICIES)


def policy_spec(name: str) -> PolicySpec:
    """The spec of policy `name`; one line naming the valid ones otherwise."""
    if name not in POLICIES:
        raise BaldistillError(f"unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
    return POLICIES[name]
