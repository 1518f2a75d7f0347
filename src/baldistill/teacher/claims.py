"""Claims: which process is asking the teacher for a key right now (sync mode).

Another process sharing the cache that needs the same answer waits for it
instead of paying for it a second time (parallel `dvc exp` workers ask many
of the same requests). A claim dies with its process (same host: the pid is
gone) or, for a claimant on another host, when its lease ends; it is removed
in the transaction that stores the answer (`drop_claim`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from baldistill.teacher.answers import answer_in
from baldistill.teacher.store import CacheFile


@dataclass(frozen=True)
class Claimant:
    """A process that may ask the teacher for a key: its host and pid."""

    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Claimant:
        return cls(socket.gethostname(), os.getpid())

    def is_gone(self) -> bool | None:
        """True if this process has ended, False if it runs, None if it is on another host (unknowable)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's live process
            return False
        return False


@dataclass(frozen=True)
class Claim:
    """What `Claims.claim` found: the stored answer, or whether the key is now the caller's to ask."""

    answer: dict | None
    granted: bool


def _holds(holder: Claimant, expires: float, asker: Claimant, now: float) -> bool:
    """Whether `holder`'s claim still keeps `asker` from asking."""
    if holder == asker:
        return False
    gone = holder.is_gone()
    return not gone if gone is not None else now < expires


def drop_claim(db: sqlite3.Connection, key: str) -> None:
    """Inside the transaction that stores `key`'s answer: nobody needs to hold it any more."""
    db.execute("DELETE FROM claims WHERE key = ?", (key,))


class Claims:
    def __init__(self, file: CacheFile):
        self.file = file

    def claim(self, key: str, claimant: Claimant, lease: float) -> Claim:
        """`claim_many` of one key."""
        return self.claim_many([key], claimant, lease)[key]

    def claim_many(self, keys: Iterable[str], claimant: Claimant, lease: float) -> dict[str, Claim]:
        """In one transaction, for each key: the answer if it is stored; else the key
        claimed for `claimant` (granted) unless another process that still runs
        holds it. A holder on another host counts as running until its lease
        (seconds) ends. One transaction for a whole batch: one fsync, not one per key."""
        now = time.time()
        with self.file.transaction() as db:
            return {key: _claim_in(db, key, claimant, now + lease, now) for key in keys}

    def release(self, key: str, claimant: Claimant) -> None:
        """`claimant` stopped asking for `key` without an answer: another process may ask."""
        self.file.write("DELETE FROM claims WHERE key = ? AND host = ? AND pid = ?", (key, claimant.host, claimant.pid))


def _claim_in(db: sqlite3.Connection, key: str, claimant: Claimant, expires: float, now: float) -> Claim:
    answer = answer_in(db, key)
    if answer is not None:
        return Claim(answer, granted=False)
    held = db.execute("SELECT host, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
    if held and _holds(Claimant(held[0], held[1]), held[2], claimant, now):
        return Claim(None, granted=False)
    db.execute(
        "INSERT OR REPLACE INTO claims (key, host, pid, expires) VALUES (?, ?, ?, ?)",
        (key, claimant.host, claimant.pid, expires),
    )
    return Claim(None, granted=True)
