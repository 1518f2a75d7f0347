"""Shared builders for the teacher tests (params, data set info, rows, clients)."""

from __future__ import annotations

from pathlib import Path

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Params
from baldistill.core.rows import Row
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import TeacherClient

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


def make_client(base_url: str, cache_dir: Path, budget: int = 100, **kw) -> TeacherClient:
    """A client of the server at `base_url`, sending SECRET as its API key."""
    options = dict(
        model="fake-teacher",
        budget=budget,
        concurrency=2,
        timeout=2.0,
        max_retries=3,
        backoff=0.01,
        api_key_env="BALDISTILL_TEST_KEY",
    )
    options.update(kw)
    return TeacherClient(connect=lambda: (base_url, SECRET), cache=RequestCache(cache_dir), **options)


def pool_rows(n_per_label: int = 3) -> list[Row]:
    return [
        Row(id=f"{label}-{i}", domain=label, input=f"story {i} about {label} markets", label=label)
        for label in LABELS
        for i in range(n_per_label)
    ]


def files_contain(directory: Path, needle: str) -> list[Path]:
    """Every file under `directory` whose bytes contain `needle`."""
    return [p for p in directory.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]
