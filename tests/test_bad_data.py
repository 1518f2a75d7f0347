"""A user's JSONL files through the real `prepare` step: every malformed input
ends in one line naming file, line and field, exit 2, and nothing written;
byte-order marks, CRLF line ends and blank lines are accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GOOD = [
    {"id": f"r{i}", "text": f"story {i}", "topic": "acq" if i % 3 else "earn", "area": f"d{i % 2}"} for i in range(6)
]


def _line(obj) -> str:
    return json.dumps(obj)


def _prepare(tmp_path: Path, train: bytes, test: bytes | None = None) -> subprocess.CompletedProcess:
    """Run stages/prepare.py in an empty project whose params point at the files."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "train.jsonl").write_bytes(train)
    test = test if test is not None else "\n".join(_line(r) for r in GOOD[:2]).encode() + b"\n"
    (tmp_path / "data" / "raw" / "test.jsonl").write_bytes(test)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(
        dataset="jsonl",
        zipf_alpha=None,
        jsonl={
            "train": "data/raw/train.jsonl",
            "test": "data/raw/test.jsonl",
            "task": "classification",
            "name": "mine",
            "fields": {"id": "id", "input": "text", "label": "topic", "domain": "area"},
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "prepare.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _written(tmp_path: Path) -> list[str]:
    return sorted(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*") if p.is_file() and "raw" not in p.parts
    )


def _jsonl(rows, sep: bytes = b"\n") -> bytes:
    return sep.join(_line(r).encode() for r in rows) + sep


BAD = {
    "not UTF-8": (
        _jsonl(GOOD[:2]) + '{"id": "x", "text": "caf\xe9", "topic": "a", "area": "d"}\n'.encode("latin-1"),
        r"train\.jsonl:3: text that is not UTF-8 \(byte 0xe9",
    ),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe\n", r"train\.jsonl:3: binary data \(a NUL byte\)"),
    "broken JSON": (_jsonl(GOOD[:1]) + b'{"id": "r9", "text": "x",\n', r"train\.jsonl:2: invalid JSON"),
    "not an object": (_jsonl(GOOD[:2]) + b'["r9", "x"]\n', r"train\.jsonl:3: expected a JSON object, got list"),
    "missing field": (
        _jsonl([*GOOD[:3], {"id": "r9", "text": "x", "area": "d"}]),
        r"train\.jsonl:4: field 'topic': missing",
    ),
    "null field": (
        _jsonl([{"id": "r9", "text": None, "topic": "a", "area": "d"}]),
        r"train\.jsonl:1: field 'text': missing",
    ),
    "empty field": (
        _jsonl([*GOOD[:1], {"id": "r9", "text": "x", "topic": "a", "area": "  "}]),
        r"train\.jsonl:2: field 'area': empty",
    ),
    "wrong type": (
        _jsonl([*GOOD[:2], {"id": "r9", "text": ["x"], "topic": "a", "area": "d"}]),
        r"train\.jsonl:3: field 'text': expected a string, got list",
    ),
    "wrong id type": (
        _jsonl([{"id": 1.5, "text": "x", "topic": "a", "area": "d"}]),
        r"train\.jsonl:1: field 'id': expected a string or an integer, got float",
    ),
    "bool label": (
        _jsonl([{"id": "r9", "text": "x", "topic": True, "area": "d"}]),
        r"train\.jsonl:1: field 'topic': expected a string or an integer, got bool",
    ),
    "duplicate id": (
        _jsonl([*GOOD[:4], {**GOOD[1], "text": "again"}]),
        r"train\.jsonl:5: field 'id': duplicate id 'r1' \(first on line 2\)",
    ),
    "empty file": (b"", r"train\.jsonl: no rows"),
    "only blank lines": (b"\n  \n\r\n", r"train\.jsonl: no rows"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_train_file_is_one_line_exit_2_and_nothing_written(tmp_path, case):
    content, message = BAD[case]
    result = _prepare(tmp_path, content)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert __import__("re").search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert _written(tmp_path) == []


def test_bad_test_file_names_the_test_file(tmp_path):
    result = _prepare(tmp_path, _jsonl(GOOD), test=_jsonl([{"id": "t1", "text": "x", "topic": "a"}]))
    assert result.returncode == 2
    assert "test.jsonl:1: field 'area': missing" in result.stderr
    assert _written(tmp_path) == []


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    """A spreadsheet export: byte-order mark, CRLF line ends, blank lines between rows."""
    train = b"\xef\xbb\xbf" + b"\r\n\r\n".join(_line(r).encode() for r in GOOD) + b"\r\n\r\n"
    result = _prepare(tmp_path, train)
    assert result.returncode == 0, result.stderr
    pool = [json.loads(line) for line in (tmp_path / "data" / "prepared" / "pool.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in pool) == sorted(r["id"] for r in GOOD)
    assert {r["input"] for r in pool} == {r["text"] for r in GOOD}


def test_integer_ids_and_labels_are_taken_as_text(tmp_path):
    rows = [{"id": i, "text": f"s{i}", "topic": i % 2, "area": "d"} for i in range(4)]
    result = _prepare(tmp_path, _jsonl(rows))
    assert result.returncode == 0, result.stderr
    pool = [json.loads(line) for line in (tmp_path / "data" / "prepared" / "pool.jsonl").read_text().splitlines()]
    assert {r["label"] for r in pool} == {"0", "1"}
