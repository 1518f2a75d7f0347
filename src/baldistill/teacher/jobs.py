"""Batch jobs (teacher.mode: batch) as recorded in the teacher cache.

Each OpenAI Batch job is recorded the moment it is created, with the request
keys it carries, and marked done once its answers are stored: a step killed
while its job runs polls the same job when run again instead of paying for a
second one (batch.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from baldistill.teacher.store import CacheFile


class JobRecords:
    def __init__(self, file: CacheFile):
        self.file = file

    def add(self, batch_id: str, payer: str, base_url: str, keys: Iterable[str]) -> None:
        """Record a Batch job just created (fsynced), before anything waits on it."""
        row = (batch_id, payer, base_url, json.dumps(list(keys)), "open", time.time())
        self.file.write(
            "INSERT OR REPLACE INTO batches (batch_id, payer, base_url, keys, status, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )

    def open(self, payer: str, base_url: str) -> list[tuple[str, list[str]]]:
        """(batch id, request keys) of `payer`'s jobs at `base_url` whose answers are not all stored yet."""
        rows = self.file.read(
            "SELECT batch_id, keys FROM batches WHERE payer = ? AND base_url = ? AND status = 'open' ORDER BY created",
            (payer, base_url),
        )
        return [(batch_id, json.loads(keys)) for batch_id, keys in rows]

    def close(self, batch_id: str, status: str) -> None:
        """The job ended (`status`: the API's final status) and its answers are stored."""
        self.file.write("UPDATE batches SET status = ? WHERE batch_id = ?", (status, batch_id))
