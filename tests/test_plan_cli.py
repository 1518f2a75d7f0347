"""`baldistill plan` as a user runs it: a real subprocess, real files."""

import json
import subprocess
import sys

import pytest

from baldistill.core.allocation import make_plan
from baldistill.core.policies import POLICY_NAMES as POLICIES
from baldistill.teacher.plan_costs import NEED_POOL


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
