"""The row schema: bad rows name file, line and field; writes are atomic."""

import json
import os

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.core.files import atomic_open, read_jsonl
from baldistill.core.rows import Row, domain_counts, read_rows, write_rows


def test_round_trip(tmp_path):
    rows = [
        Row("1", "earn", "profit up", "earn"),
        Row(
            "2",
            "tea",
            "tea story",
            "tea",
            rationale="r. The answer is tea.",
            source="synthetic",
            stage=1,
            meta={"ifd": 0.5},
        ),
    ]
    path = tmp_path / "rows.jsonl"
    assert write_rows(path, rows) == 2
    assert read_rows(path) == rows
    assert read_rows(path, teacher=False)[1].meta == {"ifd": 0.5}


@pytest.mark.parametrize(
    "record,needle",
    [
        ({"domain": "a", "input": "x", "label": "a"}, "missing field 'id'"),
        ({"id": "1", "domain": "", "input": "x", "label": "a"}, "field 'domain'"),
        ({"id": "1", "domain": "a", "input": "x", "label": 3}, "field 'label'"),
        ({"id": "1", "domain": "a", "input": "x", "label": "a", "source": "web"}, "field 'source'"),
        ({"id": "1", "domain": "a", "input": "x", "label": "a", "stage": -1}, "field 'stage'"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, record, needle):
    path = tmp_path / "bad.jsonl"
    good = {"id": "0", "domain": "a", "input": "x", "label": "a"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(BaldistillError) as err:
        read_rows(path)
    assert f"{path}:2" in str(err.value) and needle in str(err.value)


def test_teacher_rows_need_rationale_source_stage(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "1", "domain": "a", "input": "x", "label": "a", "source": "pool"}) + "\n")
    with pytest.raises(BaldistillError, match=r"t.jsonl:1: missing field 'rationale'"):
        read_rows(path, teacher=True)


def test_invalid_json_and_duplicate_ids(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "1"\n')
    with pytest.raises(BaldistillError, match=r"x\.jsonl:1: invalid JSON"):
        read_jsonl(path)
    row = {"id": "1", "domain": "a", "input": "x", "label": "a"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BaldistillError, match="duplicate id"):
        read_rows(path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    # A step killed mid-write: the block must write and then fail.
    with pytest.raises(RuntimeError), atomic_open(path) as handle:  # noqa: PT012
        handle.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_an_atomic_write_gets_the_mode_a_plain_write_would(tmp_path, umask):
    before = os.umask(umask)
    try:
        with atomic_open(tmp_path / "new.json") as handle:
            handle.write("{}")
        with open(tmp_path / "plain.json", "w") as handle:
            handle.write("{}")
        (tmp_path / "shared.json").write_text("old")
        (tmp_path / "shared.json").chmod(0o640)
        with atomic_open(tmp_path / "shared.json") as handle:  # an existing file keeps its mode
            handle.write("new")
    finally:
        os.umask(before)
    assert (tmp_path / "new.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o640


def test_domain_counts_head_to_tail():
    rows = [Row(str(i), d, "x", d) for i, d in enumerate("abbccc")]
    assert list(domain_counts(rows).items()) == [("c", 3), ("b", 2), ("a", 1)]
