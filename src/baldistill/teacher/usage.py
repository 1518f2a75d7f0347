"""What teacher calls cost: one batch's usage counters, and the run's ledger.

Usage is what one `TeacherClient.run_batch` did (every step report carries
it as `teacher`). The ledger is the run's bill so far: calls budgeted (what
the algorithm used, the paper's B) and calls paid (cache misses), summed
over stages 0..k. Each stage adds its synthesize and annotate usage to the
previous stage's ledger, so the last stage's ledger is the whole run's bill.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# usd_paid: what this run's billed attempts cost, at teacher.price (estimated_cost_usd: its
# older name, kept for ledgers read by older reports); usd_budgeted: what every answer the
# run used cost whoever paid it (cache hits included), the dollar twin of calls_budgeted;
# usd_unknown: the worst case of attempts that may have been billed (no usage came back).
LEDGER_FIELDS = (
    "calls_budgeted",
    "calls_paid",
    "attempts_billed",
    "attempts_unknown",
    "prompt_tokens",
    "completion_tokens",
    "estimated_cost_usd",
    "usd_budgeted",
    "usd_paid",
    "usd_unknown",
)
USD_FIELDS = ("estimated_cost_usd", "usd_budgeted", "usd_paid", "usd_unknown")
# Summed from each step's `server` (the local llama.cpp server's log), so a run's
# teacher speed can be quoted beside its wall time; zero for a remote teacher.
SERVER_FIELDS = {
    "server_prompt_tokens": "prompt_tokens_evaluated",
    "server_prompt_seconds": "prompt_seconds",
    "server_generated_tokens": "generated_tokens",
    "server_generation_seconds": "generation_seconds",
}


@dataclass
class Usage:
    """Teacher calls of one batch; `estimated_cost_usd` uses teacher.price.

    calls_budgeted: distinct requests new to the budget (cache hits included);
    calls_paid: answers fetched from the teacher; cached: answers the cache
    had; http_attempts and retries: what the paid answers took on the wire;
    attempts_billed: attempts the server answered with its usage (each one
    billed, whatever its content; tokens and usd_paid are theirs);
    attempts_unknown and usd_unknown: attempts sent whose fate no usage told
    (a timeout, a dropped connection), at their worst case (journal.py);
    failed: requests whose last answer had no usable text, by why (messages.py);
    seconds: wall time spent fetching them; server: the local llama.cpp
    server's prompt and generation tokens/s from its log (server_log.py),
    None for a remote teacher or when nothing was fetched; batch_ids: the
    OpenAI Batch jobs that answered them (teacher.mode: batch, batch.py).
    """

    calls_budgeted: int = 0
    calls_paid: int = 0
    attempts_billed: int = 0
    attempts_unknown: int = 0
    cached: int = 0
    http_attempts: int = 0
    retries: int = 0
    rate_limited: int = 0  # attempts the server answered 429
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0
    seconds: float = 0.0
    server: dict | None = None
    usd_budgeted: float = 0.0
    usd_paid: float = 0.0
    usd_unknown: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)

    @property
    def estimated_cost_usd(self) -> float:
        return (self.prompt_tokens * self.input_per_1m + self.completion_tokens * self.output_per_1m) / 1e6

    def billed(self, prompt_tokens: int, completion_tokens: int, usd: float) -> None:
        """Count one attempt the server billed (`usd`: its usage at teacher.price)."""
        self.attempts_billed += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.usd_paid += usd
        self.usd_budgeted += usd

    def unknown(self, worst_usd: float, count: int = 1) -> None:
        """Count an attempt that may have been billed, at its worst case (count -1: its fate became known)."""
        self.attempts_unknown += count
        self.usd_unknown += count * worst_usd

    def answered(self, failure: str | None) -> None:
        """Count one request the teacher answered for this run (`failure`: why its answer has no text)."""
        self.calls_paid += 1
        if failure:
            self.failed[failure] = self.failed.get(failure, 0) + 1

    def used(self, usd: float) -> None:
        """Count one answer the cache had (paid by someone else): used, not paid."""
        self.usd_budgeted += usd

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        price = {"input_per_1m": data.pop("input_per_1m"), "output_per_1m": data.pop("output_per_1m")}
        data["seconds"] = round(self.seconds, 3)
        for name in ("usd_budgeted", "usd_paid", "usd_unknown"):
            data[name] = round(data[name], 6)
        return {**data, "estimated_cost_usd": round(self.estimated_cost_usd, 6), "price": price}


def empty_ledger() -> dict:
    """The start stage's ledger (older ledgers without the server and synthesis fields read as zero)."""
    return dict.fromkeys(LEDGER_FIELDS, 0)


def add_usage(ledger: dict, *usages: dict, rows_synthesized: int = 0) -> dict:
    """`ledger` plus the teacher usage dicts (`Usage.as_dict()`) of this stage's
    steps and the rows this stage synthesized: every stage so far, summed, with
    the local server's prompt and generation tokens/s over all of it."""
    total = {name: ledger.get(name, 0) for name in (*LEDGER_FIELDS, "rows_synthesized", *SERVER_FIELDS)}
    total["rows_synthesized"] += rows_synthesized
    for usage in usages:
        for name in LEDGER_FIELDS:
            total[name] += usage.get(name, 0)
        for name, key in SERVER_FIELDS.items():
            total[name] += (usage.get("server") or {}).get(key, 0)
    for name in USD_FIELDS:
        total[name] = round(total[name], 6)
    for name in ("server_prompt_seconds", "server_generation_seconds"):
        total[name] = round(total[name], 3)
    total["prompt_tokens_per_s"] = _rate(total["server_prompt_tokens"], total["server_prompt_seconds"])
    total["generation_tokens_per_s"] = _rate(total["server_generated_tokens"], total["server_generation_seconds"])
    return total


def usd_paid(usage_or_ledger: dict) -> float:
    """Dollars paid, from a Usage dict or a ledger (older ones only have estimated_cost_usd)."""
    return float(usage_or_ledger.get("usd_paid", usage_or_ledger.get("estimated_cost_usd", 0.0)))


def usd_spent(usage_or_ledger: dict) -> float:
    """What the dollar cap counts as spent: dollars paid, and the worst case of attempts
    that may have been billed (older ledgers have none)."""
    return usd_paid(usage_or_ledger) + float(usage_or_ledger.get("usd_unknown", 0.0))


def _rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 2) if seconds > 0 else None
