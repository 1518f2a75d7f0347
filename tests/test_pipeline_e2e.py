"""The whole pipeline in a real DVC repo: a tiny student, a real HTTP teacher
on 127.0.0.1 (OpenAI protocol), real files. Re-runs, experiments between
policies and sharing through a DVC remote cost exactly what they should."""

from __future__ import annotations

import gzip
import json
import re
import sys

import pytest

from baldistill.core.metrics import score
from baldistill.report import comparison
from baldistill.student.training_log import STEP_METRICS

from support.dvc_project import REPO, dvc, make_project, ran_stages, run
from support.teacher_fakeserver import FakeTeacher
from support.tiny_pipeline import BUDGET, configure, teacher_reply

pytestmark = pytest.mark.slow  # whole `dvc repro`s of the tiny pipeline: about 10 minutes


@pytest.fixture(scope="module")
def teacher():
    with FakeTeacher(teacher_reply) as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory, teacher, tiny_student_dir):
    root = make_project(tmp_path_factory.mktemp("e2e"))
    configure(root, teacher.base_url, tiny_student_dir)
    return root


@pytest.fixture(autouse=True)
def teacher_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path_factory.getbasetemp() / "teacher-cache"))


def all_stages(k=2):
    steps = ["score_validation", "allocate", "select", "synthesize", "annotate", "train", "evaluate"]
    return {"prepare", "evaluate_zeroshot"} | {f"{s}@s{i}" for s in steps for i in range(k)}


def test_repro_runs_every_step_within_budget(project, teacher):
    result = dvc(project, "repro")
    assert set(ran_stages(result.stdout)) == all_stages()
    metrics = json.loads((project / "metrics/s1/metrics.json").read_text())
    assert {"macro", "micro", "head", "tail"} <= set(metrics) and metrics["policy"] == "adaptive"
    assert len(set(teacher.keys())) <= BUDGET
    reports = [
        json.loads((project / f"data/stages/s{k}/{step}_report.json").read_text())
        for k in range(2)
        for step in ("synthesize", "annotate")
    ]
    assert sum(r["teacher"]["calls_budgeted"] for r in reports) <= BUDGET
    ledger = json.loads((project / "metrics/s1/teacher.json").read_text())
    assert ledger["calls_budgeted"] == sum(r["teacher"]["calls_budgeted"] for r in reports) == BUDGET
    assert ledger["calls_paid"] == len(set(teacher.keys()))  # a fresh cache: every call was paid
    assert (project / "metrics/s1/per_domain.png").read_bytes()[:4] == b"\x89PNG"
    train = [json.loads(line) for line in (project / "data/stages/s1/train.jsonl").read_text().splitlines()]
    assert {r["source"] for r in train} == {"pool", "synthetic"} and len(train) == BUDGET
    assert_full_split_headline(project)


def assert_full_split_headline(project):
    """A real full-split evaluation (data.test_per_domain: null): prepare records the split's
    counts, every row weighs 1, so the headline is the plain full-set metric of the predictions,
    the balanced reading is the same, and a capped draw's estimate comes from the same function."""
    info = json.loads((project / "data/prepared/info.json").read_text())
    assert info["test_counts"] == {"earn": 2, "acq": 2, "tea": 2}
    metrics = json.loads((project / "metrics/s1/metrics.json").read_text())
    rows = [json.loads(line) for line in (project / "metrics/s1/predictions.jsonl").read_text().splitlines()]
    columns = [[r[k] for r in rows] for k in ("gold", "pred", "domain")]
    counts = json.loads((project / "data/prepared/counts.json").read_text())
    plain = score("classification", *columns, info["labels"], counts, info["head_threshold"])
    assert metrics["reading"] == "full split" and metrics["test_rows"] == metrics["n"] == 6
    assert metrics["macro"] == pytest.approx(plain["macro"]) and metrics["micro"] == pytest.approx(plain["micro"])
    assert (metrics["balanced_macro"], metrics["balanced_micro"]) == (metrics["macro"], metrics["micro"])
    assert {r["route"] for r in rows} <= {"answer_sentence", "none"}  # a trained student: its own answers only
    assert all((r["pred"] is None) == (r["route"] == "none") for r in rows) and "second_pass_rows" not in metrics
    zeroshot = [json.loads(line) for line in (project / "metrics/start/predictions.jsonl").read_text().splitlines()]
    assert {r["route"] for r in zeroshot} <= {"answer_sentence", "answer_extraction", "none"}


def test_summary_and_report_commands(project):
    dvc(project, "repro")
    summary = run(project, sys.executable, "-m", "baldistill.cli", "summary").stdout
    assert "policy adaptive, stage s1: macro" in summary and f"teacher calls: {BUDGET} budgeted" in summary
    assert "metrics/s1/per_domain.png" in summary
    assert "synthesized rows per stage: s0 0, s1 " in summary
    assert re.search(r"IFD picks, mean percentile .*: s0 .*, s1 0\.\d\d \(\d+ rows\)", summary)
    assert "trained vs zero-shot student: macro " in summary and "paired bootstrap 95% interval over 6 rows" in summary
    assert "(on the full test split, 6 rows); balanced macro" in summary and "labels: never predicted " in summary
    assert "answers by route: " in summary
    report = run(project, sys.executable, "-m", "baldistill.cli", "report", "workspace", "--out", "rep").stdout
    assert "| workspace | adaptive | s1 |" in report
    assert (project / "rep/per_domain.png").read_bytes()[:4] == b"\x89PNG"


def test_second_repro_does_nothing_and_calls_nobody(project, teacher):
    dvc(project, "repro")
    before = len(teacher.keys())
    again = dvc(project, "repro")
    assert ran_stages(again.stdout) == []
    assert len(teacher.keys()) == before


def test_evaluation_param_reruns_only_evaluation(project, teacher):
    dvc(project, "repro")
    before = len(teacher.keys())
    exp = dvc(project, "exp", "run", "-S", "evaluate.max_new_tokens=5")
    # score_validation scores with the evaluation's settings; for adaptive it scores nothing
    # and writes the same file, so no allocation re-runs
    evaluations = {"evaluate@s0", "evaluate@s1", "evaluate_zeroshot", "score_validation@s0", "score_validation@s1"}
    assert set(ran_stages(exp.stdout)) == evaluations
    assert len(teacher.keys()) == before


def test_policy_experiment_reruns_allocation_onwards_and_pays_identical_requests_once(project, teacher):
    dvc(project, "repro")
    answered_before = teacher.answered()
    n_before = len(teacher.keys())
    exp = dvc(project, "exp", "run", "-S", "policy.name=naive")
    ran = set(ran_stages(exp.stdout))
    assert "prepare" not in ran and {"allocate@s0", "allocate@s1"} <= ran
    assert "evaluate_zeroshot" not in ran  # the untrained student does not depend on the policy
    sent = teacher.keys()[n_before:]
    # a request the teacher already answered (in any experiment) is never sent again
    assert not set(sent) & answered_before
    reports = [
        json.loads((project / f"data/stages/s{k}/{step}_report.json").read_text())
        for k in range(2)
        for step in ("synthesize", "annotate")
    ]
    assert sum(r["teacher"]["calls_budgeted"] for r in reports) <= BUDGET
    assert len(set(sent)) <= sum(r["teacher"]["calls_paid"] for r in reports)


def test_pull_from_remote_in_a_fresh_clone_recomputes_nothing(project, teacher, tmp_path):
    dvc(project, "repro")
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "shared", str(remote))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "results")
    dvc(project, "push", "--run-cache")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    before = len(teacher.keys())
    dvc(clone, "pull", "--run-cache")
    result = dvc(clone, "repro")
    assert ran_stages(result.stdout) == []
    assert len(teacher.keys()) == before
    assert json.loads((clone / "metrics/s1/metrics.json").read_text()) == json.loads(
        (project / "metrics/s1/metrics.json").read_text()
    )


@pytest.mark.parametrize("policy", ["random", "random_label", "duplicate", "balance", "active", "zeroshot"])
def test_every_baseline_runs_through_the_same_pipeline(project, teacher, policy):
    exp = dvc(project, "exp", "run", "-S", f"policy.name={policy}")
    assert "prepare" not in set(ran_stages(exp.stdout))
    metrics = json.loads((project / "metrics/s1/metrics.json").read_text())
    ledger = json.loads((project / "metrics/s1/teacher.json").read_text())
    assert metrics["policy"] == policy and 0 <= metrics["macro"] <= 1
    plan = json.loads(run(project, sys.executable, "-m", "baldistill.cli", "plan", "--json").stdout)
    assert ledger["calls_budgeted"] == plan["teacher_calls"] <= BUDGET
    train = [json.loads(line) for line in (project / "data/stages/s1/train.jsonl").read_text().splitlines()]
    sources = {r["source"] for r in train}
    if policy == "zeroshot":
        assert train == [] and (project / "models/s1/BASE").exists()
        # Its stages score the base student as the Zero-shot CoT baseline does, answer extraction included.
        start = json.loads((project / "metrics/start/metrics.json").read_text())
        assert {k: metrics[k] for k in ("macro", "micro", "routes")} == {
            k: start[k] for k in ("macro", "micro", "routes")
        }
    elif policy == "random_label":
        assert ledger["calls_budgeted"] == 0 and all("rationale" not in r for r in train)
    elif policy == "duplicate":
        assert "duplicate" in sources and "synthetic" not in sources
    elif policy == "balance":
        assert "synthetic" in sources
    else:  # random, active: pool rows only
        assert sources == {"pool"}


def shown_experiment(project, name: str) -> dict:
    """The `data` of experiment `name` in `dvc exp show --json`."""
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    groups = [group for commit in shown for group in commit.get("experiments") or []]
    [found] = [rev for group in groups for rev in group["revs"] if rev.get("name") == name]
    return found


def named_experiments(project) -> list[str]:
    """Experiment refs, without DVC's own transient refs/exps/exec/ ones."""
    refs = run(project, "git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    return [ref for ref in refs if not ref.startswith("refs/exps/exec/")]


def test_budget_change_is_one_command_and_exp_show_holds_each_stage_s_training(project, teacher):
    before = named_experiments(project)
    exp = dvc(project, "exp", "run", "-n", "budget9", "-S", "budget.total=9", "-S", "policy.name=adaptive")
    assert "prepare" not in set(ran_stages(exp.stdout))
    ledger = json.loads((project / "metrics/s1/teacher.json").read_text())
    assert ledger["calls_budgeted"] == 9
    # dvclive's log of each stage's training is a metric of the experiment, as `dvc exp show` gives it
    found = shown_experiment(project, "budget9")
    for stage in ("s0", "s1"):
        shown = found["data"]["metrics"][f"metrics/{stage}/train/metrics.json"]["data"]
        assert shown == json.loads((project / f"metrics/{stage}/train/metrics.json").read_text())
        assert shown["steps"] == shown["step"] >= 1 and shown["loss"] > 0 and shown["tokens_per_s"] > 0
    plots = json.loads(dvc(project, "plots", "diff", "--json").stdout)["data"]
    logged = {f"metrics/{stage}/train/plots/metrics/{name}.tsv" for stage in ("s0", "s1") for name in STEP_METRICS}
    assert logged <= set(plots)
    # and dvclive saved no experiment and put no file of its own in git: one new experiment,
    # and under metrics/ it holds only DVC's .gitignore files (the outs are in DVC's cache)
    assert len(named_experiments(project)) == len(before) + 1
    committed = run(project, "git", "ls-tree", "-r", "--name-only", found["rev"]).stdout.split()
    assert "metrics/s0/train/.gitignore" in committed
    assert not [path for path in committed if path.startswith("metrics/") and not path.endswith("/.gitignore")]


def test_report_gives_mean_spread_and_paired_intervals_over_seeds(project, teacher, tmp_path_factory):
    # A teacher model name of their own: no answer is cached yet, so seed 1 pays for its s0 steps.
    before, model = len(teacher.keys()), "teacher.model=fake-teacher-for-seeds"
    for seed in (1, 2):
        policy, train_seed = "policy.name=naive", f"train.seed={seed}"
        dvc(project, "exp", "run", "-n", f"naive-seed{seed}", "-S", policy, "-S", train_seed, "-S", model)
    paid_for_seeds = len(teacher.keys()) - before  # requests the teacher answered for the two seeds
    times = project / "runs.tsv"  # as scripts/results.sh keeps it
    times.write_text("experiment\tcommit\twall_s\tfinished\nnaive-seed1\tx\t600\tt\n")
    dvc(project, "exp", "run", "-n", "adaptive-seed1", "-S", "policy.name=adaptive", "-S", "train.seed=1")
    report = run(
        project,
        sys.executable,
        "-m",
        "baldistill.cli",
        "report",
        "naive-seed1",
        "naive-seed2",
        "adaptive-seed1",
        "--baseline",
        "naive",
        "--n-boot",
        "50",
        "--out",
        "seeds",
        "--times",
        str(times),
        "--save-runs",
        "runs",
    ).stdout
    assert "| naive-seed1 | naive | s1 |" in report and "| naive-seed2 | naive | s1 |" in report
    assert "| naive | 2 | " in report and "±" in report
    assert "Against naive (2 runs)" in report
    [row] = [line for line in report.splitlines() if line.startswith("| adaptive | 1 | ") and "[" in line]
    # An interval per score ("[n/a]" where undefined): macro, micro, balanced macro, head, tail.
    assert row.count("[") == len(comparison.KEYS) == 5
    assert "- adaptive: " in report  # the plain sentence, significant or not
    assert (project / "seeds/per_domain.png").read_bytes()[:4] == b"\x89PNG"
    assert (project / "seeds/head_tail.png").read_bytes()[:4] == b"\x89PNG"
    [naive1] = [line for line in report.splitlines() if line.startswith("| naive-seed1 |")]
    assert naive1.endswith("| 10 |")  # wall minutes from --times
    assert all(cell.strip().isdigit() for cell in [naive1.split("|")[-3]])  # rows selected over the stages
    # Seed 2 restored seed 1's s0 teacher steps from DVC's run cache (same inputs): billed once, to seed 1.
    # (the label-use lines start with the run's name too: "- naive-seed2: never predicts ...")
    [note] = [line for line in report.splitlines() if line.startswith("- naive-seed2: ") and "made by" in line]
    assert "annotate@s0" in note and note.endswith("made by naive-seed1")
    [header] = [line for line in report.splitlines() if line.startswith("| experiment |") and "calls paid" in line]
    paid_column = [cell.strip() for cell in header.split("|")].index("calls paid")
    billed = [int(line.split("|")[paid_column]) for line in report.splitlines() if line.startswith("| naive-seed")]
    assert sum(billed) == paid_for_seeds > 0
    # The saved run records rebuild the same report outside the repository (as on a fresh clone).
    elsewhere = tmp_path_factory.mktemp("fresh-clone")
    again = run(
        elsewhere,
        sys.executable,
        "-m",
        "baldistill.cli",
        "report",
        *("naive-seed1", "naive-seed2", "adaptive-seed1"),
        *("--baseline", "naive", "--n-boot", "50", "--times", str(times), "--from-runs", str(project / "runs")),
    ).stdout
    assert again.split("charts:")[0] == report.split("charts:")[0]


def test_a_run_that_evaluated_only_its_last_stage_is_reported(tmp_path, teacher, tiny_student_dir):
    """`dvc exp run evaluate@s1` leaves only s1's metrics, so `dvc exp show` drops
    the file from their names ("macro"); the report reads the files instead."""
    root = make_project(tmp_path)
    configure(root, teacher.base_url, tiny_student_dir)
    dvc(root, "exp", "run", "-n", "last-only", "evaluate@s1")
    command = [sys.executable, "-m", "baldistill.cli", "report", "last-only", "--n-boot", "10", "--out", "rep"]
    assert "| last-only | adaptive | s1 |" in run(root, *command).stdout


def test_results_script_logs_saves_the_record_and_the_answers_and_skips_a_finished_run(project, teacher):
    """scripts/results.sh as issue 13's runs use it, on the tiny pipeline (its
    steps mostly restored from the run cache when the policy test ran first)."""
    (project / "scripts").mkdir(exist_ok=True)
    (project / "scripts/results.sh").write_text((REPO / "scripts/results.sh").read_text())
    run(project, "git", "add", "scripts/results.sh")
    run(project, "git", "commit", "-qm", "results script")
    env = {"DATASET": "jsonl", "SEEDS": "0", "POLICIES": "naive", "LOG": "out/runs.tsv"}
    env |= {"RECORDS": "out/runs", "ANSWERS": "out/answers.jsonl.gz"}
    (project / "out").mkdir(exist_ok=True)
    run(project, "bash", "scripts/results.sh", env=env)
    header, line = (project / "out/runs.tsv").read_text().splitlines()
    assert header.split("\t") == ["experiment", "commit", "wall_s", "finished"]  # what read_times reads
    name, commit, wall_s, _ = line.split("\t")
    assert name == "jsonl-naive-seed0" and commit == run(project, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    assert int(wall_s) > 0
    record = json.loads((project / "out/runs/jsonl-naive-seed0.json").read_text())
    assert record["summary"]["policy"] == "naive" and len(record["predictions"]) == 6  # the six test rows
    answers = gzip.decompress((project / "out/answers.jsonl.gz").read_bytes()).decode().splitlines()

    def texts(requests):
        return {json.dumps(request["messages"], sort_keys=True) for request in requests}

    answered = texts(seen.body for seen in teacher.seen if seen.answered)
    assert answered <= texts(json.loads(a)["request"] for a in answers)  # every answer paid so far
    asked = len(teacher.keys())
    again = run(project, "bash", "scripts/results.sh", env=env)
    assert "jsonl-naive-seed0: exists, skipped" in again.stdout
    assert len((project / "out/runs.tsv").read_text().splitlines()) == 2 and len(teacher.keys()) == asked
