"""The payment journal: every attempt the teacher may bill, from before it is sent until its bill is known.

A provider bills every attempt that reaches its model, not only the one whose
answer is kept, and a client cannot always tell whether it did (an attempt it
timed out on, or whose connection dropped, may have been answered and billed).
So each attempt is journalled, fsynced, *before* it is sent, as `unknown` at
its worst case (spending.py), and settled when its fate is known:

- `billed`: the server answered with its usage; the entry holds those tokens
  and their price, whatever the content (an empty answer is billed too). An
  answer's entry is settled in the transaction that stores the answer.
- `unbilled`: the server answered with an error status (429, 5xx, 4xx),
  which providers do not bill.
- `unknown` stays: no usage came back (a timeout, a dropped connection, an
  unreadable body, a kill -9 while the attempt was in flight). It counts at
  its worst case everywhere (`baldistill spend`, the ledgers' usd_unknown,
  the dollar cap) for good: no client can learn what the provider did.

The `payer` is the run step that made the attempt (`step_payer`). Its entries
stay "open" until that step has written its outputs; a step killed and run
again finds its own open entries and counts them as its own, once, so money
is neither forgotten nor counted twice (payments.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from baldistill.teacher.store import CacheFile, columns

BILLED, UNBILLED, UNKNOWN = "billed", "unbilled", "unknown"
_FIELDS = "id, key, payer, model, prompt_tokens, completion_tokens, usd, state"


def step_payer(step: str, stage: str) -> str:
    """Who pays for a step's attempts: the repository, the DVC experiment (its name
    survives a re-run of a killed `dvc exp run -n NAME`), and the step."""
    root = os.environ.get("DVC_ROOT") or os.getcwd()
    return f"{root}|{os.environ.get('DVC_EXP_NAME') or 'workspace'}|{step}@{stage}"


def run_of(payer: str) -> str:
    """The run part of a payer (`step_payer`'s "<repo>|<experiment or workspace>|<step>@<stage>")."""
    parts = payer.split("|")
    return parts[1] if len(parts) == 3 else (payer or "(no run)")


@dataclass(frozen=True)
class Entry:
    """One attempt: which step paid (`payer`), for which request key, what it cost and whether that is known."""

    id: int
    key: str
    payer: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    usd: float
    state: str


def settle_in(db: sqlite3.Connection, entry_id: int, prompt_tokens: int, completion_tokens: int, usd: float) -> None:
    """Inside a transaction: the attempt was billed at the server's usage (`usd` at teacher.price)."""
    db.execute(
        "UPDATE spend SET state = ?, prompt_tokens = ?, completion_tokens = ?, usd = ? WHERE id = ?",
        (BILLED, prompt_tokens, completion_tokens, usd, entry_id),
    )


class Journal:
    def __init__(self, file: CacheFile):
        self.file = file

    def expect(self, payer: str, model: str, attempts: Sequence[tuple[str, float]]) -> list[int]:
        """Journal attempts about to be sent, (key, worst-case USD) each, as unknown; one fsynced commit.
        Returns their entry ids."""
        now = time.time()
        with self.file.transaction() as db:
            return [
                db.execute(
                    "INSERT INTO spend (key, payer, model, prompt_tokens, completion_tokens, usd, open, created, state)"
                    " VALUES (?, ?, ?, 0, 0, ?, 1, ?, ?)",
                    (key, payer, model, worst, now, UNKNOWN),
                ).lastrowid
                for key, worst in attempts
            ]

    def settle(self, entry_id: int, prompt_tokens: int, completion_tokens: int, usd: float) -> None:
        """The attempt was billed, and no answer of it is to be stored (e.g. an empty one retried)."""
        with self.file.transaction() as db:
            settle_in(db, entry_id, prompt_tokens, completion_tokens, usd)

    def unbilled(self, entry_ids: Sequence[int]) -> None:
        """The server refused these attempts (an error status): nothing was billed."""
        with self.file.transaction() as db:
            db.executemany("UPDATE spend SET state = ?, usd = 0 WHERE id = ?", [(UNBILLED, i) for i in entry_ids])

    def open_entries(self, payer: str) -> list[Entry]:
        """`payer`'s entries that its step has not yet closed (a killed run's), billed or unknown."""
        rows = self.file.read(
            f"SELECT {_FIELDS} FROM spend WHERE payer = ? AND open = 1 AND state != ? ORDER BY id", (payer, UNBILLED)
        )
        return [Entry(*row) for row in rows]

    def close(self, payer: str) -> None:
        """`payer`'s step finished: a later run of it paid nothing of this."""
        self.file.write("UPDATE spend SET open = 0 WHERE payer = ? AND open = 1", (payer,))


def all_entries(db: sqlite3.Connection) -> list[Entry]:
    """Every billed or unknown entry of a (read-only) cache file; a cache older than the
    attempt journal has a row per paid answer only, each billed."""
    if "state" not in columns(db, "spend"):
        rows = db.execute(f"SELECT {_FIELDS.replace('state', repr(BILLED))} FROM spend").fetchall()
    else:
        rows = db.execute(f"SELECT {_FIELDS} FROM spend WHERE state != ?", (UNBILLED,)).fetchall()
    return [Entry(*row) for row in rows]


def unjournalled_answers(db: sqlite3.Connection) -> list[str]:
    """The stored responses (JSON text) of answers with no journal entry: stored before the journal existed."""
    rows = db.execute("SELECT response FROM entries WHERE key NOT IN (SELECT key FROM spend)").fetchall()
    return [response for (response,) in rows]
