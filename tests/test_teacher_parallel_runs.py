"""Two runs sharing one teacher cache (parallel `dvc exp` workers) pay for each
answer once: a request one process is asking, the other waits for."""

from __future__ import annotations

import sqlite3
from collections import Counter

from baldistill.core.rows import read_rows, write_rows

from support.child_step import start_child
from support.teacher_fakeserver import Action, FakeTeacher
from support.teacher_helpers import pool_rows


def test_two_runs_asking_the_same_rows_at_once_pay_each_answer_once(tmp_path):
    rows = pool_rows(2)[:8]
    cache, runs = tmp_path / "cache", [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
        write_rows(run / "rows.jsonl", rows)
    with FakeTeacher(delay=0.4) as server:  # both runs are in flight together
        children = [start_child("teacher_child.py", server.base_url, run, cache=cache) for run in runs]
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
        asked = Counter(s.key for s in server.seen)

    assert len(asked) == len(rows) and set(asked.values()) == {1}  # each answer asked for once
    with sqlite3.connect(cache / "cache.sqlite") as db:
        paid = Counter(key for (key,) in db.execute("SELECT key FROM spend"))
        claims = db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    assert len(paid) == len(rows) and set(paid.values()) == {1}  # and journalled as paid once
    assert claims == 0  # every claim ended with its stored answer
    a, b = (sorted((r.id, r.rationale) for r in read_rows(run / "out.jsonl", teacher=True)) for run in runs)
    assert a == b and len(a) == len(rows)


def test_a_run_that_fails_leaves_no_claim_behind(tmp_path):
    write_rows(tmp_path / "rows.jsonl", pool_rows(1))
    refuse = Action("status", 401, content="Incorrect API key provided")
    with FakeTeacher(lambda key, attempt, body: refuse) as server:
        child = start_child("teacher_child.py", server.base_url, tmp_path)
        child.communicate(timeout=120)
    assert child.returncode == 2
    with sqlite3.connect(tmp_path / "cache" / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
