"""The teacher cache: one durable SQLite file (store.py) and the four jobs it holds.

    cache = RequestCache()          # $BALDISTILL_TEACHER_CACHE, else .baldistill/teacher-cache
    cache.get(key) / cache.put(...) # the answers (answers.py)
    cache.journal                   # what every attempt cost (journal.py)
    cache.claims                    # who is asking for a key now (claims.py)
    cache.jobs                      # Batch jobs in flight (jobs.py)

`store` is where the four meet: an answer, the settlement of the attempt that
brought it and the end of its claim are one fsynced transaction, so a step
killed at any point loses no paid answer and leaves no payment unaccounted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from baldistill.teacher.answers import Answers, answer_in, insert_answer, key_material, request_key
from baldistill.teacher.claims import Claims, drop_claim
from baldistill.teacher.jobs import JobRecords
from baldistill.teacher.journal import Journal, settle_in
from baldistill.teacher.store import DB_NAME, ENV_VAR, CacheFile, default_dir

__all__ = ["DB_NAME", "ENV_VAR", "RequestCache", "default_dir", "key_material", "request_key"]


class RequestCache:
    """Key -> (request, response) store with its journal, claims and Batch jobs; safe across threads and processes."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.file = CacheFile(directory)
        self.answers = Answers(self.file)
        self.journal, self.claims, self.jobs = Journal(self.file), Claims(self.file), JobRecords(self.file)

    @property
    def directory(self) -> Path:
        return self.file.directory

    @property
    def path(self) -> Path:
        return self.file.path

    def __repr__(self) -> str:
        return f"RequestCache({str(self.directory)!r})"

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(self, key: str, request: dict, response: dict, billed: tuple[int, int, int, float] | None = None) -> dict:
        """Store `response` durably with, if given, the settlement of the attempt that brought it
        (`billed`: entry id, prompt and completion tokens, USD), in one fsynced transaction.
        Returns the answer stored for the key: the first one wins, so another process's may."""
        with self.file.transaction() as db:
            new = insert_answer(db, key, request, response)
            drop_claim(db, key)
            if billed is not None:  # paid whichever answer wins: it was billed
                settle_in(db, *billed)
            return response if new else (answer_in(db, key) or response)

    def put(self, key: str, request: dict, response: dict) -> bool:
        """Store an answer nobody paid for here (imported); False if the key was already there."""
        with self.file.transaction() as db:
            new = insert_answer(db, key, request, response)
            drop_claim(db, key)
        return new

    def get(self, key: str) -> dict | None:
        return self.answers.get(key)

    def __len__(self) -> int:
        return self.answers.count()

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        return self.answers.keys()

    def entries(self, keys: Iterable[str]) -> list[dict]:
        return self.answers.entries(keys)

    def export_jsonl(self, path: str | os.PathLike, keys: Iterable[str]) -> int:
        return self.answers.export_jsonl(path, keys)

    def import_jsonl(self, path: str | os.PathLike) -> int:
        return self.answers.import_jsonl(path)
