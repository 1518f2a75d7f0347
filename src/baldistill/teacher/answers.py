"""The teacher's answers, content-addressed: one per request key, the first stored wins.

The key is the sha256 of the canonical JSON (sorted keys) of the request:
model, messages, temperature, max_tokens, and the `sample` index for sampled
(temperature > 0) requests only, since greedy requests are deterministic and
should share one answer. The base URL and API key are never part of an entry.
The first answer stored for a key wins, so a sampled request replays
identically, and a re-run (or another experiment asking the same thing) gets
it for free.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl
from baldistill.teacher.store import CacheFile


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


def insert_answer(db: sqlite3.Connection, key: str, request: dict, response: dict) -> bool:
    """Inside a transaction: store `response` for `key` unless one is there; True if it was new."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO entries (key, request, response, created) VALUES (?, ?, ?, ?)",
        (key, canonical_json(request), canonical_json(response), time.time()),
    )
    return cursor.rowcount == 1


def answer_in(db: sqlite3.Connection, key: str) -> dict | None:
    """Inside a transaction: the stored response for `key`, or None."""
    row = db.execute("SELECT response FROM entries WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


class Answers:
    """Key -> (request, response), over the cache file."""

    def __init__(self, file: CacheFile):
        self.file = file

    def get(self, key: str) -> dict | None:
        """The stored response for `key`, or None."""
        rows = self.file.read("SELECT response FROM entries WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def count(self) -> int:
        return self.file.read("SELECT COUNT(*) FROM entries")[0][0]

    def keys(self) -> list[str]:
        return [k for (k,) in self.file.read("SELECT key FROM entries ORDER BY created")]

    def entries(self, keys: Iterable[str]) -> list[dict]:
        """Stored entries for `keys` in that order (duplicates once, missing skipped)."""
        out, seen = [], set()
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            rows = self.file.read("SELECT request, response FROM entries WHERE key = ?", (key,))
            if rows:
                out.append({"key": key, "request": json.loads(rows[0][0]), "response": json.loads(rows[0][1])})
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

        entries = read_jsonl(path, check)
        with self.file.transaction() as db:  # a file is loaded whole or not at all, with one fsync
            return sum(insert_answer(db, e["key"], e["request"], e["response"]) for e in entries)
