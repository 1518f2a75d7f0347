"""The hard cap on teacher calls: distinct request keys, reserved all or nothing.

A client made with budget N issues at most N distinct request keys. Cache
hits count too ("budgeted, not paid": the algorithm used them, the paper's
B), and a retry of a request is the same call. A batch that would go over is
refused whole, before any request of it is sent, so a step never half-spends
past its allowance.
"""

from __future__ import annotations

from collections.abc import Sequence

from baldistill.core.errors import BaldistillError


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
                f"teacher budget exceeded: {len(new)} new call(s) requested, {len(self._reserved)} of "
                f"{self.limit} already used; raise budget.total or lower the quota"
            )
        self._reserved.update(new)
        self.used_keys.extend(new)
        return len(new)
