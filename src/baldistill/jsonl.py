"""Reading and writing the pipeline's JSONL, JSON and binary outputs.

Every write goes to a temporary file in the target directory, is flushed and
fsynced, then renamed over the target, so a killed step never leaves a
half-written output that DVC (or the next step) would mistake for a real one.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import jsonlines

from .errors import BaldistillError

T = TypeVar("T")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write `records` as JSON lines; returns the number written."""
    count = 0
    with atomic_open(path) as handle:
        writer = jsonlines.Writer(handle, sort_keys=False, compact=True)
        for record in records:
            writer.write(record)
            count += 1
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_csv(path: str | os.PathLike, fieldnames: Iterable[str], records: Iterable[dict]) -> None:
    """Atomically write `records` as CSV with a header (for `dvc plots`)."""
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise BaldistillError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BaldistillError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def read_jsonl(path: str | os.PathLike, parse: Callable[[dict, str], T] | None = None) -> list[T]:
    """Read a JSONL file; `parse(obj, where)` validates each object.

    `where` is "FILE:LINE", so validation errors name the file and line.
    Blank lines are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise BaldistillError(f"{path}: file not found")
    out: list = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BaldistillError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise BaldistillError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            out.append(parse(obj, where) if parse else obj)
    return out
