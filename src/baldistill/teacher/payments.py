"""One client's money: every attempt reserved and journalled before it is sent, settled after.

The one store-and-pay path of the sync client (client.py) and the Batch API
(batch.py). For each attempt, in this order:

1. `open`: its worst case is reserved under the dollar cap (the caller waits
   or refuses when it does not fit) and it is journalled as unknown, fsynced,
   before it is sent (journal.py), so a kill -9 at any later instant leaves it
   counted at its worst case;
2. then one of: `keep` (the answer to keep: stored in the transaction that
   settles its bill), `billed` (a billed answer not kept, e.g. an empty one
   asked again), `unbilled` (the server refused: nothing billed), or
   `unknown` (no usage came back: it keeps its worst case, for good).

`resume` counts, once per client, what a killed run of the same step left
open in the journal as this run's own (billed at its cost, unknown at its
worst case), in its usage and against the cap, so nothing is counted twice or
forgotten. A resumed unknown attempt whose answer later arrives (a Batch job
that outlived the killed run) is settled like a fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from baldistill.teacher.cache import RequestCache
from baldistill.teacher.journal import BILLED
from baldistill.teacher.spending import DollarCap, Price
from baldistill.teacher.usage import Usage


@dataclass(frozen=True)
class Attempt:
    """One attempt journalled before it is sent: its entry, request key and reserved worst case.
    `resumed`: journalled by a killed run of this step, whose worst case is counted as spent already."""

    entry: int
    key: str
    worst: float
    resumed: bool = False


class Payments:
    def __init__(self, cache: RequestCache, cap: DollarCap, price: Price, model: str, payer: str | None):
        self.cache, self.cap, self.price, self.model, self.payer = cache, cap, price, model, payer
        self._resumed = False
        self.resumed_answers: set[str] = set()  # keys a killed run of this step paid an answer for
        self.resumed_unknown: dict[str, list[Attempt]] = {}  # a killed run's attempts of unknown fate, by key

    def resume(self, usage: Usage) -> None:
        """Once: this payer's open journal entries (a killed run's) become this run's, in `usage` and the cap."""
        if self._resumed or self.payer is None:
            return
        self._resumed = True
        for entry in self.cache.journal.open_entries(self.payer):
            self.cap.spent += entry.usd
            if entry.state == BILLED:
                usage.billed(entry.prompt_tokens, entry.completion_tokens, entry.usd)
                self.resumed_answers.add(entry.key)
            else:
                usage.unknown(entry.usd)
                attempt = Attempt(entry.id, entry.key, entry.usd, resumed=True)
                self.resumed_unknown.setdefault(entry.key, []).append(attempt)

    def open(self, attempts: Sequence[tuple[str, float]]) -> list[Attempt]:
        """Journal attempts (key, worst case) whose worst cases the caller has reserved; fsynced."""
        ids = self.cache.journal.expect(self.payer or "", self.model, attempts)
        return [Attempt(entry, key, worst) for entry, (key, worst) in zip(ids, attempts, strict=True)]

    # Each settlement has a durable half (`write_*`: the journal, fsynced) and an in-memory half
    # (`count_*`: usage and the cap). The sync client runs the first in a worker thread, so the
    # event loop serves other attempts during the fsync, and the second on the loop, so the
    # counts are never touched by two threads; the Batch path calls both (`keep`, `billed`, `unbilled`).

    def keep(self, attempt: Attempt, material: dict, answer: dict, priced: bool, usage: Usage) -> dict:
        """Store the answer `attempt` brought with its bill (`priced`: the server sent its usage),
        in one transaction; returns the stored answer (another process's, if it stored one first)."""
        stored = self.write_kept(attempt, material, answer, priced)
        self.count_kept(attempt, answer, priced, usage)
        return stored

    def write_kept(self, attempt: Attempt, material: dict, answer: dict, priced: bool) -> dict:
        if not priced:  # stored, but what it cost stays unknown: its worst case
            return self.cache.store(attempt.key, material, answer)
        bill = (attempt.entry, answer["prompt_tokens"], answer["completion_tokens"], self._cost(answer))
        return self.cache.store(attempt.key, material, answer, billed=bill)

    def count_kept(self, attempt: Attempt, answer: dict, priced: bool, usage: Usage) -> None:
        if priced:
            self.count_billed(attempt, answer, usage)
        else:
            self.unknown(attempt, usage)

    def billed(self, attempt: Attempt, answer: dict, usage: Usage) -> None:
        """A billed answer that is not kept (it had no usable text and is asked again)."""
        self.write_billed(attempt, answer)
        self.count_billed(attempt, answer, usage)

    def write_billed(self, attempt: Attempt, answer: dict) -> None:
        self.cache.journal.settle(
            attempt.entry, answer["prompt_tokens"], answer["completion_tokens"], self._cost(answer)
        )

    def count_billed(self, attempt: Attempt, answer: dict, usage: Usage) -> None:
        cost = self._cost(answer)
        usage.billed(answer["prompt_tokens"], answer["completion_tokens"], cost)
        if attempt.resumed:  # its worst case was counted as spent and unknown: now its bill is known
            self.cap.spent += cost - attempt.worst
            usage.unknown(attempt.worst, count=-1)
        else:
            self.cap.settle(attempt.worst, cost)

    def unbilled(self, attempts: Sequence[Attempt], usage: Usage) -> None:
        """The server refused these attempts (or a Batch job never ran them): nothing was billed."""
        self.write_unbilled(attempts)
        self.count_unbilled(attempts, usage)

    def write_unbilled(self, attempts: Sequence[Attempt]) -> None:
        if attempts:
            self.cache.journal.unbilled([a.entry for a in attempts])

    def count_unbilled(self, attempts: Sequence[Attempt], usage: Usage) -> None:
        for attempt in attempts:
            if attempt.resumed:
                self.cap.spent -= attempt.worst
                usage.unknown(attempt.worst, count=-1)
            else:
                self.cap.release(attempt.worst)

    def unknown(self, attempt: Attempt, usage: Usage) -> None:
        """No usage came back: the attempt may have been billed, up to its worst case (journalled already)."""
        if not attempt.resumed:
            self.cap.settle(attempt.worst, attempt.worst)
            usage.unknown(attempt.worst)

    def _cost(self, answer: dict) -> float:
        return self.price.cost(answer["prompt_tokens"], answer["completion_tokens"])
