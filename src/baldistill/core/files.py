"""Reading and writing the pipeline's JSONL, JSON and binary outputs.

Every write goes to a temporary file in the target directory, is flushed and
fsynced, then renamed over the target, so a killed step never leaves a
half-written output that DVC (or the next step) would mistake for a real one.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import secrets
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import jsonlines

from baldistill.core.errors import BaldistillError

T = TypeVar("T")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # Created as open(path, "w") creates a file: 0666 less the umask, which the
    # kernel applies (mkstemp's 0600 would make every output private).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with suppress(FileNotFoundError):  # a file written over keeps its mode
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _text_out(path: str | os.PathLike) -> Iterator[Any]:
    """atomic_open's text handle, gzip-compressed when `path` ends in .gz (mtime 0:
    the same records give the same bytes, so DVC and git see no change)."""
    if Path(path).suffix != ".gz":
        with atomic_open(path) as handle:
            yield handle
        return
    with (
        atomic_open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        io.TextIOWrapper(zipped, encoding="utf-8") as handle,
    ):
        yield handle


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write `records` as JSON lines (gzip when `path` ends in .gz); returns the number written."""
    count = 0
    with _text_out(path) as handle:
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
    """Read a JSONL file (gzip when its name ends in .gz); `parse(obj, where)` validates each object.

    `where` is "FILE:LINE", so validation errors name the file and line. Blank
    lines are skipped; a UTF-8 byte-order mark (spreadsheet exports write one)
    and CRLF line ends are accepted. Bytes that are not UTF-8 fail on their line.
    """
    path = Path(path)
    if not path.is_file():
        raise BaldistillError(f"{path}: file not found")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise BaldistillError(f"{path}: not a readable gzip file ({exc})") from None
    if b"\x00" in data:  # no text file holds a NUL; say "binary" rather than quote a random byte
        lineno = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise BaldistillError(f"{path}:{lineno}: binary data (a NUL byte), not UTF-8 JSON lines")
    out: list = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{lineno}"
        line = _decode_line(raw.removeprefix(b"\xef\xbb\xbf") if lineno == 1 else raw, where)
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BaldistillError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise BaldistillError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        out.append(parse(obj, where) if parse else obj)
    return out


def _decode_line(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        kind = "binary data" if b"\x00" in raw else "text that is not UTF-8"
        raise BaldistillError(
            f"{where}: {kind} (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            "save the file as UTF-8 JSON lines"
        ) from None
