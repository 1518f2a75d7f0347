"""A killed annotate step loses no paid answer and re-asks nothing it already got."""

from __future__ import annotations

from baldistill.core.rows import read_rows, write_rows

from support.child_step import kill_once_answers_are_stored, start_child, stored_server_keys
from support.teacher_fakeserver import Action, FakeTeacher
from support.teacher_helpers import SECRET, files_contain, pool_rows


def test_sigkill_midway_then_rerun_resumes(tmp_path):
    rows = pool_rows(2)[:8]
    write_rows(tmp_path / "rows.jsonl", rows)
    with FakeTeacher(delay=0.4) as server:
        child = start_child("teacher_child.py", server.base_url, tmp_path)
        kill_once_answers_are_stored(server, child, tmp_path / "cache")
        answered_before = server.answered()
        seen_before = len(server.seen)
        kept = answered_before & stored_server_keys(tmp_path / "cache")
        assert not (tmp_path / "out.jsonl").exists()
        assert len(answered_before - kept) <= 1  # at most an answer caught in the kill's instant
        assert 3 <= len(kept) < len(rows)

        rerun = start_child("teacher_child.py", server.base_url, tmp_path)
        _, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        asked_again = [s.key for s in server.seen[seen_before:]]

    assert set(asked_again).isdisjoint(kept)  # nothing already answered and stored is asked again
    assert len(asked_again) == len(set(asked_again)) == len(rows) - len(kept)
    out = read_rows(tmp_path / "out.jsonl", teacher=True)
    assert sorted(r.id for r in out) == sorted(r.id for r in rows)


def test_refused_request_exits_2_with_one_line_and_no_secret(tmp_path):
    write_rows(tmp_path / "rows.jsonl", pool_rows(1))
    refuse = Action("status", 401, content="Incorrect API key provided: {auth}")
    with FakeTeacher(lambda key, attempt, body: refuse) as server:
        child = start_child("teacher_child.py", server.base_url, tmp_path)
        _, err = child.communicate(timeout=120)
    assert child.returncode == 2
    lines = [line for line in err.strip().splitlines() if "call/s" not in line]  # minus the progress bar
    assert len(lines) == 1 and lines[0].startswith("error: teacher refused the request: HTTP 401")
    assert SECRET not in err and files_contain(tmp_path, SECRET) == []
