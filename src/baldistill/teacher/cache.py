"""Content-addressed, durable cache of teacher responses.

Teacher calls are the scarce resource (they count against the budget B and
may cost money), so every answer is committed to disk before the request
counts as done: a step killed at any point loses no paid answer, and a re-run
(or another experiment asking the same thing) gets it for free.

Storage is one SQLite file in WAL mode with synchronous=FULL: each insert is
its own fsynced transaction, readers never block the writer, and several
processes (parallel `dvc exp` runs) can share one cache safely. The first
answer stored for a key wins, so a sampled request replays identically.

The key is the sha256 of the canonical JSON (sorted keys) of the request:
model, messages, temperature, max_tokens, and the `sample` index for sampled
(temperature > 0) requests only, since greedy requests are deterministic and
should share one answer. The base URL and API key are never part of an entry.

Beside the answers, the `spend` table journals every answer paid for: which
run step paid (its `payer`), the server's token counts and the dollars at
teacher.price, in the same transaction as the answer itself. A payment stays
"open" until the step that made it finishes; a step killed and run again
finds its own open payments and counts them as paid by it, not as cache hits,
so money is neither forgotten nor counted twice (spending.py, client.py).

The `claims` table says which process is asking the teacher for a key right
now (sync mode): another process sharing the cache that needs the same answer
waits for it instead of paying for it a second time (parallel `dvc exp`
workers ask many of the same requests). A claim dies with its process (same
host: the pid is gone) or, for a claimant on another host, when its lease
ends; it is removed in the transaction that stores the answer.

The `batches` table records each OpenAI Batch job (teacher.mode: batch) the
moment it is created, with the request keys it carries, and marks it done once
its answers are stored: a step killed while its job runs polls the same job
when run again instead of paying for a second one (batch.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl

ENV_VAR = "BALDISTILL_TEACHER_CACHE"
DB_NAME = "cache.sqlite"
_BUSY_TIMEOUT = 60.0  # seconds to wait for another process's lock
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payer TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usd REAL NOT NULL,
    open INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_payer ON spend (payer, open);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    base_url TEXT NOT NULL,
    keys TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Payment:
    """One answer paid for: by which step (`payer`), its tokens and dollars."""

    payer: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    usd: float

    def row(self) -> tuple:
        return (self.payer, self.model, self.prompt_tokens, self.completion_tokens, self.usd)


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
    """What `RequestCache.claim` found: the stored answer, or whether the key is now the caller's to ask."""

    answer: dict | None
    granted: bool


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key_material(model: str, messages: list[dict], temperature: float, max_tokens: int, sample: int | None) -> dict:
    """What a request's answer depends on; `sample` only matters when sampling."""
    material: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if temperature > 0:
        material["sample"] = sample
    return material


def request_key(material: dict) -> str:
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


def _holds(holder: Claimant, expires: float, asker: Claimant, now: float) -> bool:
    """Whether `holder`'s claim still keeps `asker` from asking."""
    if holder == asker:
        return False
    gone = holder.is_gone()
    return not gone if gone is not None else now < expires


def default_dir() -> Path:
    """$BALDISTILL_TEACHER_CACHE, else .baldistill/teacher-cache under the cwd (the DVC root)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.cwd() / ".baldistill" / "teacher-cache"


class RequestCache:
    """Key -> (request, response) store; safe across threads and processes."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else default_dir()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @property
    def _conn(self) -> sqlite3.Connection:
        """The database, opened at first use, so a step with nothing to ask creates no cache (hold the lock)."""
        if self._db is None:
            try:
                self._db = self._open()
            except (OSError, sqlite3.Error) as exc:
                raise BaldistillError(f"{self.directory}: cannot open the teacher cache: {exc}") from None
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        # When two processes create the cache at once, switching it to WAL can fail with "database
        # is locked" at once (SQLite's busy timeout does not cover it), so wait for the other one here.
        deadline = time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.02)
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def __repr__(self) -> str:
        return f"RequestCache({str(self.directory)!r})"

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: str) -> dict | None:
        """The stored response for `key`, or None."""
        with self._lock:
            row = self._conn.execute("SELECT response FROM entries WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, request: dict, response: dict, payment: Payment | None = None) -> bool:
        """Store durably (fsynced commit), with its payment if it was paid for, in one
        transaction; returns False if the key was already there (the payment is still
        journalled: it was paid)."""
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO entries (key, request, response, created) VALUES (?, ?, ?, ?)",
                (key, canonical_json(request), canonical_json(response), now),
            )
            db.execute("DELETE FROM claims WHERE key = ?", (key,))
            if payment is not None:
                db.execute(
                    "INSERT INTO spend (key, payer, model, prompt_tokens, completion_tokens, usd, open, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                    (key, *payment.row(), now),
                )
        return cursor.rowcount == 1

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the thread lock: BEGIN IMMEDIATE (no other
        writer can slip in between its reads and writes), one fsynced COMMIT,
        and a ROLLBACK on any error, an interrupt included."""
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def claim(self, key: str, claimant: Claimant, lease: float) -> Claim:
        """`claim_many` of one key."""
        return self.claim_many([key], claimant, lease)[key]

    def claim_many(self, keys: Iterable[str], claimant: Claimant, lease: float) -> dict[str, Claim]:
        """In one transaction, for each key: the answer if it is stored; else the key
        claimed for `claimant` (granted) unless another process that still runs
        holds it. A holder on another host counts as running until its lease
        (seconds) ends. One transaction for a whole batch: one fsync, not one per key."""
        now = time.time()
        with self._transaction() as db:
            return {key: self._claim_in_transaction(db, key, claimant, now + lease, now) for key in keys}

    @staticmethod
    def _claim_in_transaction(
        db: sqlite3.Connection, key: str, claimant: Claimant, expires: float, now: float
    ) -> Claim:
        row = db.execute("SELECT response FROM entries WHERE key = ?", (key,)).fetchone()
        if row:
            return Claim(json.loads(row[0]), granted=False)
        held = db.execute("SELECT host, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
        if held and _holds(Claimant(held[0], held[1]), held[2], claimant, now):
            return Claim(None, granted=False)
        db.execute(
            "INSERT OR REPLACE INTO claims (key, host, pid, expires) VALUES (?, ?, ?, ?)",
            (key, claimant.host, claimant.pid, expires),
        )
        return Claim(None, granted=True)

    def release(self, key: str, claimant: Claimant) -> None:
        """`claimant` stopped asking for `key` without an answer: another process may ask."""
        with self._lock:
            self._conn.execute(
                "DELETE FROM claims WHERE key = ? AND host = ? AND pid = ?", (key, claimant.host, claimant.pid)
            )

    def open_payments(self, payer: str, keys: Iterable[str]) -> dict[str, Payment]:
        """Payments `payer` made for `keys` that its step has not yet closed (a killed run's)."""
        wanted = set(keys)
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, payer, model, prompt_tokens, completion_tokens, usd FROM spend"
                " WHERE payer = ? AND open = 1",
                (payer,),
            ).fetchall()
        return {row[0]: Payment(*row[1:]) for row in rows if row[0] in wanted}

    def close_payments(self, payer: str) -> None:
        """`payer`'s step finished: a later run of it paid nothing of this."""
        with self._lock:
            self._conn.execute("UPDATE spend SET open = 0 WHERE payer = ? AND open = 1", (payer,))

    def add_batch(self, batch_id: str, payer: str, base_url: str, keys: Iterable[str]) -> None:
        """Record a Batch job just created (fsynced), before anything waits on it."""
        row = (batch_id, payer, base_url, json.dumps(list(keys)), "open", time.time())
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO batches (batch_id, payer, base_url, keys, status, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

    def open_batches(self, payer: str, base_url: str) -> list[tuple[str, list[str]]]:
        """(batch id, request keys) of `payer`'s jobs at `base_url` whose answers are not all stored yet."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT batch_id, keys FROM batches WHERE payer = ? AND base_url = ? AND status = 'open'"
                " ORDER BY created",
                (payer, base_url),
            ).fetchall()
        return [(batch_id, json.loads(keys)) for batch_id, keys in rows]

    def close_batch(self, batch_id: str, status: str) -> None:
        """The job ended (`status`: the API's final status) and its answers are stored."""
        with self._lock:
            self._conn.execute("UPDATE batches SET status = ? WHERE batch_id = ?", (status, batch_id))

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def keys(self) -> list[str]:
        with self._lock:
            return [k for (k,) in self._conn.execute("SELECT key FROM entries ORDER BY created")]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def entries(self, keys: Iterable[str]) -> list[dict]:
        """Stored entries for `keys` in that order (duplicates once, missing skipped)."""
        out, seen = [], set()
        with self._lock:
            for key in keys:
                if key in seen:
                    continue
                seen.add(key)
                row = self._conn.execute("SELECT request, response FROM entries WHERE key = ?", (key,)).fetchone()
                if row:
                    out.append({"key": key, "request": json.loads(row[0]), "response": json.loads(row[1])})
        return out

    def export_jsonl(self, path: str | os.PathLike, keys: Iterable[str]) -> int:
        """Write the entries a step used as JSONL (a DVC output); returns the count."""
        return write_jsonl(path, self.entries(keys))

    def import_jsonl(self, path: str | os.PathLike) -> int:
        """Load entries exported elsewhere; each key is re-derived from its request
        so a tampered or mismatched line cannot poison the cache. Returns how many were new."""

        def check(obj: dict, where: str) -> dict:
            for field in ("key", "request", "response"):
                if field not in obj:
                    raise BaldistillError(f"{where}: missing field '{field}'")
            if request_key(obj["request"]) != obj["key"]:
                raise BaldistillError(f"{where}: key does not match the sha256 of its request")
            return obj

        return sum(self.put(e["key"], e["request"], e["response"]) for e in read_jsonl(path, check))
