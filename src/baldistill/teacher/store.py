"""The teacher cache's one SQLite file: where it lives, how it is opened, one write transaction.

Teacher calls are the scarce resource (they count against the budget B and
may cost money), so what they return and what they cost is committed to disk
before anything counts it as done. One SQLite file in WAL mode with
synchronous=FULL holds four tables, each behind a small API of its own:
answers (answers.py), the payment journal (journal.py), claims (claims.py)
and Batch jobs (jobs.py). Each commit is fsynced, readers never block the
writer, and several processes (parallel `dvc exp` runs) share one file safely.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from baldistill.core.errors import BaldistillError

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
# Columns added after the first release, with what rows written before them mean:
# every journal row of an older cache is an answer that was paid for.
_ADDED_COLUMNS = {("spend", "state"): "TEXT NOT NULL DEFAULT 'billed'"}


def default_dir() -> Path:
    """$BALDISTILL_TEACHER_CACHE, else .baldistill/teacher-cache under the cwd (the DVC root)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.cwd() / ".baldistill" / "teacher-cache"


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


class CacheFile:
    """The SQLite file under `directory`, opened at first use (so a step with
    nothing to ask creates no cache); safe across threads and processes."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else default_dir()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def __repr__(self) -> str:
        return f"CacheFile({str(self.directory)!r})"

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def _conn(self) -> sqlite3.Connection:
        """The database (hold the lock)."""
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
        db.execute("BEGIN IMMEDIATE")  # two processes upgrading one older file: one adds, the other sees it
        for (table, name), kind in _ADDED_COLUMNS.items():
            if name not in columns(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        db.execute("COMMIT")
        return db

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The rows of one query."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def write(self, sql: str, args: tuple = ()) -> int:
        """One statement in its own fsynced transaction; returns the rows it changed."""
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
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


def read_only(directory: Path) -> sqlite3.Connection | None:
    """The cache file opened read-only (for reports), or None if there is none; creates nothing."""
    path = directory / DB_NAME
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
