"""Run records: a report rebuilt from saved records, with no DVC repository at all."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.core.metrics import score
from baldistill.report.experiments import read_times, write_report
from baldistill.report.run_records import load_record, make_record, save_records

from support.dvc_project import REPO

DOMAINS = {"earn": 60, "acq": 55, "tin": 3, "zinc": 2}  # pool rows: two head, two tail at threshold 50


def record(name: str, policy: str, accuracy: float, seed: int, restored: dict | None = None) -> dict:
    """A run whose student answers each of 40 fixed test rows right with probability `accuracy`."""
    draw = random.Random(seed)
    predictions = []
    for i in range(40):
        domain = list(DOMAINS)[i % 4]
        pred = domain if draw.random() < accuracy else "other"
        predictions.append(
            {"id": f"t{i}", "domain": domain, "gold": domain, "pred": pred, "route": "answer_sentence", "output": "..."}
        )
    per_domain = {d: {"score": accuracy, "pool_rows": n, "n": 10} for d, n in DOMAINS.items()}
    summary = {"experiment": name, "policy": policy, "stage": "s1", "macro": accuracy, "micro": accuracy}
    summary |= {"head": accuracy, "tail": accuracy, "calls_budgeted": 40, "calls_paid": 7, "rows_selected": 40}
    info = {"task": "classification", "labels": [*DOMAINS, "other"], "head_threshold": 50}
    return make_record(summary, per_domain, restored or {}, predictions, info, DOMAINS)


def test_records_keep_only_what_pairing_reads_and_come_back_unchanged(tmp_path):
    one = record("r-1", "random", 0.5, 1)
    [path] = save_records([one], tmp_path)
    assert path == tmp_path / "r-1.json"
    assert set(one["predictions"][0]) == {"id", "domain", "gold", "pred", "route"}  # not the output
    assert load_record(tmp_path, "r-1") == one


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: r.update(version=0), "version"),
        (lambda r: r.pop("predictions"), "predictions: missing"),
        (lambda r: r["summary"].update(experiment="other"), "summary.experiment"),
    ],
)
def test_a_broken_record_is_refused_naming_file_and_field(tmp_path, change, field):
    broken = record("r-1", "random", 0.5, 1)
    change(broken)
    (tmp_path / "r-1.json").write_text(json.dumps(broken))
    with pytest.raises(BaldistillError, match=rf"r-1\.json: {field}"):
        load_record(tmp_path, "r-1")


def test_a_missing_record_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(BaldistillError, match=r"r-9\.json: file not found"):
        load_record(tmp_path, "r-9")


def test_a_report_is_rebuilt_from_records_alone(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    adaptive = record("a-0", "adaptive", 0.9, 2, {"annotate@s0": "r-0"})
    save_records([record("r-0", "random", 0.3, 0), record("r-1", "random", 0.35, 1), adaptive], runs)
    monkeypatch.chdir(tmp_path)  # no DVC repository here: a record named is never looked for in DVC
    result = write_report(["r-0", "r-1", "a-0"], "out", n_boot=200, times={"a-0": 600.0}, from_runs=runs)
    text = (tmp_path / "out/report.md").read_text()
    # Scores are recomputed from each record's predictions (metrics.score), not copied from its summary.
    rows = adaptive["predictions"]
    columns = ([r[k] for r in rows] for k in ("gold", "pred", "domain"))
    expected = score("classification", *columns, adaptive["info"]["labels"], DOMAINS, 50)
    assert f"| a-0 | adaptive | s1 | {100 * expected['macro']:.2f} |" in text and text.count("| random | s1 |") == 2
    assert result["rows"][2]["second_pass_in_score"] == 0  # its routes are all the student's own
    assert "| random | 2 | " in text
    [row] = [line for line in text.splitlines() if line.startswith("| adaptive | 1 | +")]
    assert row.count("*") == 5  # 0.9 against about 0.33 on 40 rows: every interval excludes 0
    assert "- a-0: annotate@s0 made by r-0" in text and text.count("made by") == 1
    assert [s["wall_min"] for s in result["rows"]] == [None, None, 10.0]
    assert (tmp_path / "out/head_tail.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out/confusion_head.png").read_bytes()[:4] == b"\x89PNG"
    assert "- a-0: never predicted 0 of 4 labels; over-predicted" in text
    right = sum(r["pred"] == r["gold"] for r in adaptive["predictions"])
    assert f"- a-0: answer sentence 40 (right {100 * right / 40:.1f}%)" in text  # its route, kept in the record
    assert (
        "- r-0: never predicted 1 of 4 labels: tin (10); over-predicted (predicted/gold rows >= 2): other 34/0" in text
    )


def test_no_charts_writes_the_report_alone(tmp_path):
    runs = tmp_path / "runs"
    save_records([record("r-0", "random", 0.3, 0), record("a-0", "adaptive", 0.9, 2)], runs)
    result = write_report(["r-0", "a-0"], tmp_path / "out", n_boot=20, from_runs=runs, charts=False)
    assert result["charts"] == [] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md"]


def _baldistill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from baldistill.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def test_each_baseline_gets_its_own_table_and_pairs_one_more(tmp_path):
    runs = tmp_path / "runs"
    policies = [("r-0", "random", 0.3), ("n-0", "naive", 0.5), ("b-0", "balance", 0.5), ("a-0", "adaptive", 0.9)]
    save_records([record(name, policy, accuracy, i) for i, (name, policy, accuracy) in enumerate(policies)], runs)
    names = [name for name, _, _ in policies]
    args = ["report", *names, "--from-runs", "runs", "--n-boot", "50", "--no-charts", "--out", "out"]
    done = _baldistill(*args, "--baseline", "random", "--baseline", "adaptive", "--pair", "balance:naive", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out/report.md").read_text()
    assert "Against random (1 run)" in text and "Against adaptive (1 run)" in text
    assert "| balance | naive | 1 vs 1 |" in text and text.count("| balance | naive |") == 1


@pytest.mark.parametrize("pair", ["balance", "balance:", ":naive", "a:b:c"])
def test_a_pair_not_policy_colon_baseline_exits_2_naming_it_and_writes_nothing(tmp_path, pair):
    save_records([record("r-0", "random", 0.3, 0)], tmp_path / "runs")
    done = _baldistill("report", "r-0", "--from-runs", "runs", "--out", "out", "--pair", pair, cwd=tmp_path)
    assert done.returncode == 2 and f"'{pair}' is not POLICY:BASELINE" in done.stderr
    assert not (tmp_path / "out").exists()


def test_from_runs_needs_the_experiments_named(tmp_path):
    with pytest.raises(BaldistillError, match="--from-runs"):
        write_report([], tmp_path / "out", from_runs=tmp_path)


def _reports_script(out_dir, *args: str) -> None:
    """scripts/reports.sh writing under out_dir, with this interpreter's `baldistill` on PATH."""
    env = {**os.environ, "OUT": str(out_dir), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(REPO / "scripts/reports.sh"), *args], env=env, check=True, capture_output=True)


def test_the_committed_mcqa_report_is_what_its_committed_records_give(tmp_path):
    """docs/results.md quotes docs/results/mcqa/report.md: rebuilt from the
    committed records by the command it names, it is the same, word for word."""
    _reports_script(tmp_path, "mcqa")
    assert (tmp_path / "mcqa/report.md").read_text() == (REPO / "docs/results/mcqa/report.md").read_text()


def test_the_committed_r52_run_table_is_what_its_committed_records_give(tmp_path):
    """The twelve R52 runs' table and per-policy means (no bootstrap: that is
    the slow part) rebuilt from the committed records match the committed report."""
    runs = [f"r52-{policy}-seed{seed}" for policy in ("random", "duplicate", "naive", "adaptive") for seed in (0, 1, 2)]
    times = read_times(REPO / "docs/results/r52_runs.tsv")
    write_report(runs, tmp_path, n_boot=1, from_runs=REPO / "docs/results/runs", times=times)
    before_intervals = re.compile(r"\n(?=Against random)")
    rebuilt = before_intervals.split((tmp_path / "report.md").read_text())[0]
    committed = before_intervals.split((REPO / "docs/results/r52-three-seeds/report.md").read_text())[0]
    assert rebuilt.count("| r52-") == 12 and rebuilt == committed


def test_the_committed_v2_report_is_what_its_committed_records_give(tmp_path):
    """docs/results/v2/report.md (issue 36's set at the new defaults): rebuilt from the
    committed records by scripts/reports.sh, it is the same, word for word."""
    _reports_script(tmp_path, "r52v2")
    assert (tmp_path / "v2/report.md").read_text() == (REPO / "docs/results/v2/report.md").read_text()
