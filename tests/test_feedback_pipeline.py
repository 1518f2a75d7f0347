"""Policy feedback through the whole tiny pipeline (tests/support/tiny_pipeline.py):
a real DVC repo, the tiny student, a real HTTP teacher on 127.0.0.1. One
project runs K = 2 (B = 16), then K = 3 with B = 24: B/K stays 8, so every
allocation is re-planned and comes out the same for s0 and s1 (same shares,
same scores), DVC restores their steps and only s2 runs, which keeps the
test's CI time to about one and a half runs."""

from __future__ import annotations

import json
import sys

import pytest

from baldistill.core.allocation import allocate
from baldistill.core.feedback import read_scores
from baldistill.core.params import load_params
from baldistill.core.rows import domain_counts, read_rows

from support.dvc_project import dvc, make_project, ran_stages, run
from support.teacher_fakeserver import FakeTeacher
from support.tiny_pipeline import BUDGET, configure, teacher_reply

pytestmark = pytest.mark.slow  # two `dvc exp run`s of the tiny pipeline


def read_json(path):
    return json.loads(path.read_text())


def check_run(root, stages: int) -> dict:
    """What a feedback run of `stages` stages left behind; returns the last stage's validation record."""
    params = load_params(root / "params.yaml")
    counts = read_json(root / "data/prepared/counts.json")
    validation = read_rows(root / "data/prepared/validation.jsonl")
    assert read_json(root / "data/stages/s0/validation_scores.json")["scored"] is False  # stage 0 is naive
    previous = read_json(root / "data/stages/start/allocation.json")
    for k in range(stages):
        here = root / f"data/stages/s{k}"
        record = read_json(here / "validation_scores.json")
        scores = None
        if k > 0:
            # the previous stage's student, scored on every validation row, per domain
            assert record["scored"] is True and record["student"] == f"s{k - 1}"
            totals = {d: entry["total"] for d, entry in record["domains"].items()}
            assert totals == dict.fromkeys(counts, 0) | domain_counts(validation)
            scores = read_scores(record["domains"], "record")
        allocation = read_json(here / "allocation.json")
        # the step allocated by those scores, as the library does
        expected = allocate(params.budget.total, params.policy, stages, counts, previous, k, scores)
        assert allocation == json.loads(json.dumps(expected)) and allocation["policy"] == "feedback"
        assert sum(allocation["quota"].values()) == allocation["share"]
        previous = allocation
    ledger = read_json(root / f"metrics/s{stages - 1}/teacher.json")
    assert ledger["calls_budgeted"] == params.budget.total
    assert read_json(root / f"metrics/s{stages - 1}/metrics.json")["policy"] == "feedback"
    # the validation rows stay out of selection, synthesis and training
    held = {r.input for r in validation} | {r.id for r in validation}
    for k in range(stages):
        for name in ("selected.jsonl", "train.jsonl", "synthesize_responses.jsonl"):
            text = (root / f"data/stages/s{k}/{name}").read_text()
            assert not [h for h in held if h in text], name
    return record


def test_feedback_over_two_then_three_stages(tmp_path, tmp_path_factory, tiny_student_dir, monkeypatch):
    monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path_factory.mktemp("teacher-cache")))
    with FakeTeacher(teacher_reply) as teacher:
        root = make_project(tmp_path)
        configure(root, teacher.base_url, tiny_student_dir)
        # the last stage's evaluation only: the others' say nothing more here
        two = dvc(root, "exp", "run", "-S", "policy.name=feedback", "evaluate@s1")
        assert {"score_validation@s0", "score_validation@s1"} <= set(ran_stages(two.stdout))
        record = check_run(root, 2)
        command = [sys.executable, "-m", "baldistill.cli", "plan", "--json", "--scores", str(record_path(root, 1))]
        plan = json.loads(run(root, *command).stdout)
        # the plan, given the scores the run saw, plans what the run did
        assert plan["per_stage"][1]["quota"] == read_json(root / "data/stages/s1/allocation.json")["quota"]
        assert plan["teacher_calls"] == BUDGET and record["scored"]

        more = ("-S", "+stages.s2=s1", "-S", f"budget.total={BUDGET * 3 // 2}", "evaluate@s2")
        three = dvc(root, "exp", "run", "-S", "policy.name=feedback", *more)
        ran = set(ran_stages(three.stdout))
        # B and K changed, so the allocations re-ran; they came out as before: s0 and s1 are restored
        assert {"allocate@s0", "allocate@s1"} <= ran and not ran & {"prepare", "select@s1", "train@s1"}
        assert {f"{step}@s2" for step in ("score_validation", "allocate", "select", "train", "evaluate")} <= ran
        check_run(root, 3)

    # The tiny random student scores alike everywhere (its quotas are naive's), so the step
    # itself is shown other scores: earn weakest, acq strong. It allocates as the rule says.
    record = read_json(record_path(root, 1))
    record["domains"] = {"earn": [0, 2], "acq": [1, 1], "tea": [0, 0]}
    record["domains"] = {d: {"correct": c, "total": n} for d, (c, n) in record["domains"].items()}
    record_path(root, 1).write_text(json.dumps(record))
    run(root, sys.executable, "stages/allocate.py", "s1", "s0")
    # needs 0.78, 0.53, 0.67 of 8 calls (shrunk towards the pooled 1/3 by 4 pseudo-rows)
    assert read_json(root / "data/stages/s1/allocation.json")["quota"] == {"earn": 3, "acq": 2, "tea": 3}


def record_path(root, k):
    return root / f"data/stages/s{k}/validation_scores.json"
