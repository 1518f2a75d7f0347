"""`baldistill plan` as a user runs it: a real subprocess, real files."""

import json
import re
import subprocess
import sys

import pytest

from baldistill.core.allocation import make_plan
from baldistill.core.errors import BaldistillError
from baldistill.core.policies import POLICY_NAMES as POLICIES
from baldistill.plan.costs import NEED_POOL
from baldistill.plan.scores import plan_scores


def run_plan(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "baldistill.cli", "plan", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def counts_file(tmp_path):
    path = tmp_path / "counts.json"
    path.write_text(json.dumps({"earn": 300, "acq": 120, "crude": 20, "tea": 2, "platinum": 1}))
    return path


@pytest.mark.parametrize("policy", POLICIES)
def test_machine_form_for_every_policy(counts_file, policy):
    args = ("--counts", str(counts_file), "--budget", "40", "--stages", "3", "--policy", policy, "--json")
    result = run_plan(*args, cwd=counts_file.parent)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    # No prepared pool in this folder: calls only (tokens: tests/test_plan_cost.py).
    assert plan.pop("teacher_cost") == {"available": False, "reason": NEED_POOL}
    assert {"budget", "stages", "policy", "teacher_calls", "per_stage"} <= set(plan)
    assert (plan["budget"], plan["stages"], plan["policy"]) == (40, 3, policy)
    assert [r["stage"] for r in plan["per_stage"]] == [0, 1, 2]
    for alloc in plan["per_stage"]:
        assert {"stage", "quota", "real", "synthetic", "head", "tail", "teacher_calls"} <= set(alloc)
    assert plan["teacher_calls"] == sum(r["teacher_calls"] for r in plan["per_stage"]) <= 40
    counts = json.loads(counts_file.read_text())
    assert plan == json.loads(json.dumps(make_plan(counts, 40, 3, policy)))


def test_naive_plan_synthesizes_for_the_tail(counts_file):
    plan = json.loads(
        run_plan("--counts", str(counts_file), "--budget", "50", "--stages", "2", "--policy", "naive", "--json").stdout
    )
    s0 = plan["per_stage"][0]
    assert s0["quota"] == dict.fromkeys(("earn", "acq", "crude", "tea", "platinum"), 5)
    assert s0["tail"] == ["tea", "platinum"]
    assert s0["synthetic"] == {"earn": 0, "acq": 0, "crude": 0, "tea": 3, "platinum": 4}


def test_human_form_names_head_tail_and_calls(counts_file):
    result = run_plan("--counts", str(counts_file), "--budget", "50", "--stages", "2", "--policy", "naive")
    assert result.returncode == 0
    assert "stage 1: 25 teacher calls" in result.stdout and "tail (2): tea, platinum" in result.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--budget", "3", "--stages", "2", "--policy", "naive"), "smaller than the number of domains"),
        (("--budget", "30", "--stages", "0", "--policy", "naive"), "at least 1"),
        (("--budget", "30", "--stages", "2", "--policy", "nope"), "unknown policy"),
    ],
)
def test_impossible_requests_exit_2_with_one_line(counts_file, args, needle):
    result = run_plan("--counts", str(counts_file), *args, "--json")
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_empty_pool_and_bad_counts_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    result = run_plan("--counts", str(empty), "--budget", "3", "--stages", "1", "--policy", "naive", "--json")
    assert result.returncode == 2 and "empty" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": -1}')
    result = run_plan("--counts", str(bad), "--budget", "3", "--stages", "1", "--policy", "naive", "--json")
    assert result.returncode == 2 and "bad.json" in result.stderr and "'a'" in result.stderr


def feedback_plan(counts_file, *extra):
    args = ("--counts", str(counts_file), "--budget", "60", "--stages", "3", "--policy", "feedback", "--json")
    result = run_plan(*args, *extra, cwd=counts_file.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_feedback_plans_stage_zero_as_naive_and_later_stages_by_their_calls(counts_file):
    plan = feedback_plan(counts_file)
    naive = json.loads(json.dumps(make_plan(json.loads(counts_file.read_text()), 60, 3, "naive")))
    assert plan["per_stage"][0] == naive["per_stage"][0]
    # later stages: B/K calls each, exactly; their domains wait for the validation scores
    assert [alloc["teacher_calls"] for alloc in plan["per_stage"]] == [20, 20, 20] and plan["teacher_calls"] == 60
    assert all(alloc["open"] == 20 and not any(alloc["quota"].values()) for alloc in plan["per_stage"][1:])
    human = run_plan("--counts", str(counts_file), "--budget", "60", "--stages", "3", "--policy", "feedback").stdout
    assert "stage 1: 20 teacher calls" in human and "decided at run time by stage 0's validation scores" in human


def test_feedback_with_scores_plans_the_later_quotas(counts_file, tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"earn": 0.9, "acq": 0.6, "crude": 0.6, "tea": 0.2, "platinum": 0.2}))
    plan = feedback_plan(counts_file, "--scores", str(scores))
    s1, s2 = plan["per_stage"][1:]
    # needs 0.1 : 0.4 : 0.4 : 0.8 : 0.8 of 20 calls, between 2 and 12 (floor 0.5, cap 3 equal shares of 4)
    assert s1["quota"] == {"earn": 2, "acq": 3, "crude": 3, "tea": 6, "platinum": 6} == s2["quota"]
    assert s1["tail"] == ["tea", "platinum"] and s1["synthetic"]["platinum"] == 6  # its one row went in stage 0
    assert plan["scores"]["tea"] == 0.2 and plan["teacher_calls"] == 60
    measured = tmp_path / "record.json"  # as score_validation writes it: shrunk towards the pooled score
    domains = {"earn": {"correct": 4, "total": 4}, "acq": {"correct": 0, "total": 4}, "tea": {"correct": 0, "total": 1}}
    measured.write_text(json.dumps({"stage": "s1", "student": "s0", "scored": True, "domains": domains}))
    shrunk = feedback_plan(counts_file, "--scores", str(measured))["scores"]
    pooled = 4 / 9
    assert shrunk["crude"] == shrunk["platinum"] == round(pooled, 6)  # no validation row: the pooled score
    assert shrunk["tea"] == round(4 * pooled / 5, 6) and shrunk["earn"] == round((4 + 4 * pooled) / 8, 6)


def test_scores_for_a_policy_that_reads_none_exit_2_with_one_line(counts_file, tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"earn": 0.5}))
    args = ("--counts", str(counts_file), "--budget", "60", "--stages", "3", "--policy", "naive")
    result = run_plan(*args, "--scores", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "--scores: policy naive allocates without validation scores" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "scores,needle",
    [
        ({"earn": 1.5, "acq": 0, "crude": 0, "tea": 0, "platinum": 0}, "domain 'earn': the score must"),
        ({"earn": 0.5}, "domain 'acq': no score"),
        ({"gold": 0.5}, "domain 'gold' is not in the pool"),
        ({"tea": {"correct": 2, "total": 1}}, "domain 'tea': a validation score needs"),
        ({"stage": "s0", "scored": False, "domains": {}}, "holds no scores"),
        ([0.5], "expected a JSON object"),
    ],
)
def test_bad_scores_name_the_file_and_the_domain(tmp_path, scores, needle):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(scores))
    with pytest.raises(BaldistillError, match=re.escape(f"{path}: ") + ".*" + re.escape(needle)):
        plan_scores(path, ["earn", "acq", "crude", "tea", "platinum"], 4.0)
