"""Shared builders for the teacher tests (params, data set info, rows, clients)."""

from __future__ import annotations

from pathlib import Path

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Params
from baldistill.core.rows import Row
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import TeacherClient
from baldistill.teacher.options import ClientOptions
from baldistill.teacher.spending import Price

SECRET = "sk-test-SECRET-0123456789abcdef"
LABELS = ["earn", "acq", "crude", "nat-gas", "ship"]
INFO = DatasetInfo(name="R52", task="classification", labels=LABELS)


def make_params(base_url: str, **teacher) -> Params:
    teacher = {
        "base_url": base_url,
        "model": "fake-teacher",
        "api_key_env": "BALDISTILL_TEST_KEY",
        "timeout": 2.0,
        "max_retries": 3,
        "concurrency": 2,
        **teacher,
    }
    return Params.model_validate({"budget": {"total": 100}, "stages": {"s0": "start"}, "teacher": teacher})


CLIENT_ARGS = ("cap", "payer", "server_log")  # the rest of make_client's keywords are ClientOptions'


def client_options(**kw) -> ClientOptions:
    """The tests' client options: a loopback teacher, quick retries; `price` may be a (in, out) tuple."""
    if isinstance(kw.get("price"), tuple):
        kw["price"] = Price(*kw["price"])
    defaults = dict(
        model="fake-teacher", concurrency=2, timeout=2.0, max_retries=3, backoff=0.01, api_key_env="BALDISTILL_TEST_KEY"
    )
    return ClientOptions(**{**defaults, **kw})


def make_client(base_url: str, cache_dir: Path, budget: int = 100, **kw) -> TeacherClient:
    """A client of the server at `base_url`, sending SECRET as its API key."""
    args = {name: kw.pop(name) for name in CLIENT_ARGS if name in kw}
    return TeacherClient(
        connect=lambda: (base_url, SECRET),
        cache=RequestCache(cache_dir),
        budget=budget,
        options=client_options(**kw),
        **args,
    )


def journal(cache_dir: Path, state: str | None = "billed") -> list[tuple]:
    """The payment journal's (key, payer, usd, open) rows, oldest first, of one state (None: every row)."""
    import sqlite3

    where, args = ("WHERE state = ?", (state,)) if state else ("", ())
    with sqlite3.connect(cache_dir / "cache.sqlite") as db:
        return db.execute(f"SELECT key, payer, usd, open FROM spend {where} ORDER BY id", args).fetchall()


def pool_rows(n_per_label: int = 3) -> list[Row]:
    return [
        Row(id=f"{label}-{i}", domain=label, input=f"story {i} about {label} markets", label=label)
        for label in LABELS
        for i in range(n_per_label)
    ]


def files_contain(directory: Path, needle: str) -> list[Path]:
    """Every file under `directory` whose bytes contain `needle`."""
    return [p for p in directory.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]
