"""`baldistill cache export|import`: the teacher's answers carried between machines as (gzipped) JSONL."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl
from baldistill.teacher.cache import RequestCache, key_material, request_key

records = st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=20) | st.integers(), max_size=4), max_size=6)


@given(records)
def test_gzipped_jsonl_reads_back_what_was_written(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("gz") / "rows.jsonl.gz"
    assert write_jsonl(path, rows) == len(rows)
    assert read_jsonl(path) == rows
    first = path.read_bytes()
    write_jsonl(path, rows)
    assert path.read_bytes() == first  # no timestamp inside: the same rows, the same bytes


def test_a_gz_file_that_is_no_gzip_is_refused_naming_it(tmp_path):
    (tmp_path / "x.jsonl.gz").write_text('{"a": 1}\n')
    with pytest.raises(BaldistillError, match=r"x\.jsonl\.gz: not a readable gzip file"):
        read_jsonl(tmp_path / "x.jsonl.gz")


def cli(cache_dir, *args: str) -> subprocess.CompletedProcess:
    env = {"BALDISTILL_TEACHER_CACHE": str(cache_dir), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "baldistill.cli", "cache", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def answers(n: int) -> list[tuple[str, dict, dict]]:
    out = []
    for i in range(n):
        material = key_material("m", [{"role": "user", "content": f"question {i}"}], 0.0, 64, None)
        out.append((request_key(material), material, {"content": f"The answer is {i}."}))
    return out


def test_export_on_one_machine_import_on_another(tmp_path):
    with RequestCache(tmp_path / "here") as here:
        for key, request, response in answers(3):
            here.put(key, request, response)
    exported = cli(tmp_path / "here", "export", str(tmp_path / "answers.jsonl.gz"))
    assert exported.returncode == 0 and "3 answers" in exported.stdout
    assert len(gzip.decompress((tmp_path / "answers.jsonl.gz").read_bytes()).splitlines()) == 3
    imported = cli(tmp_path / "there", "import", str(tmp_path / "answers.jsonl.gz"))
    assert imported.returncode == 0 and "3 new answers, 3 in the cache" in imported.stdout
    again = cli(tmp_path / "there", "import", str(tmp_path / "answers.jsonl.gz"))
    assert "0 new answers, 3 in the cache" in again.stdout
    with RequestCache(tmp_path / "there") as there:
        assert [there.get(key) for key, _, _ in answers(3)] == [r for _, _, r in answers(3)]


def test_a_file_with_one_forged_answer_is_refused_whole(tmp_path):
    lines = [{"key": k, "request": q, "response": r} for k, q, r in answers(3)]
    lines[1]["request"] = {**lines[1]["request"], "max_tokens": 1}  # its key no longer matches
    (tmp_path / "forged.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli(tmp_path / "there", "import", str(tmp_path / "forged.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("forged.jsonl:2: key does not match the sha256 of its request")
    assert len(result.stderr.strip().splitlines()) == 1
    with RequestCache(tmp_path / "there") as there:
        assert len(there) == 0  # not even the two good lines
