"""The run's teacher ledger: calls budgeted (what the algorithm used, the
paper's B) and calls paid (cache misses), summed over stages 0..k.

Each stage adds its synthesize and annotate usage to the previous stage's
ledger, so the last stage's ledger is the whole run's bill.
"""

from __future__ import annotations

FIELDS = ("calls_budgeted", "calls_paid", "prompt_tokens", "completion_tokens", "estimated_cost_usd")


def empty_ledger() -> dict:
    return {name: 0 for name in FIELDS}


def add_usage(ledger: dict, *usages: dict) -> dict:
    """`ledger` plus the teacher usage dicts of this stage's steps."""
    total = {name: ledger.get(name, 0) for name in FIELDS}
    for usage in usages:
        for name in FIELDS:
            total[name] += usage.get(name, 0)
    total["estimated_cost_usd"] = round(total["estimated_cost_usd"], 6)
    return total
