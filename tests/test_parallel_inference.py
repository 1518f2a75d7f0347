"""select and evaluate under a launcher: where the student runs, how batches are
dealt, and (slow) the real stage scripts under `accelerate launch` with two CPU
processes writing exactly what one process writes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import write_json
from baldistill.core.rows import Row, write_rows
from baldistill.student.device import choose_device
from baldistill.student.generation import length_batches
from baldistill.student.model import BASE_MARKER
from baldistill.student.parallel import ONE_PROCESS, Workers, deal

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- device


@pytest.mark.parametrize(
    "override,launcher,cuda,mps,expected",
    [
        (None, None, False, False, "cpu"),
        (None, None, True, True, "cuda"),  # a GPU when there is one, CUDA first
        (None, None, False, True, "mps"),
        ("", None, True, False, "cuda"),  # an empty override is none
        ("cpu", None, True, True, "cpu"),  # the override wins over any GPU
        (" CUDA:1 ", None, True, False, "cuda:1"),
        (None, "cuda:3", True, False, "cuda:3"),  # under a launcher: this process's own GPU
        (None, "cpu", True, False, "cpu"),  # accelerate launch --cpu on a GPU machine
        ("cuda", "cuda:2", True, False, "cuda:2"),  # a bare type keeps the launcher's index
        ("cuda:0", "cuda:2", True, False, "cuda:0"),  # an explicit index is taken as given
        ("cpu", "cuda:2", True, False, "cpu"),
    ],
)
def test_student_device_rule(override, launcher, cuda, mps, expected):
    assert choose_device(override, launcher, cuda, mps) == expected


# ----------------------------------------------------------------------------- dealing batches


def test_batches_are_dealt_in_snake_order_so_processes_get_alike_work():
    batches = length_batches([50, 9, 40, 30, 20, 10, 45, 35, 5], 2)  # longest first: 50 45 | 40 35 | 30 20 | ...
    hands = deal(batches, 2)
    assert hands == [[0, 3, 4], [1, 2]]
    assert sorted(p for hand in hands for p in hand) == list(range(len(batches)))
    assert deal(batches, 1) == [list(range(len(batches)))]
    assert deal(batches, 8)[5:] == [[], [], []]  # more processes than batches: some get none


def test_one_process_runs_every_batch_and_returns_rows_in_input_order():
    batches = length_batches([3, 1, 4, 1, 5, 9, 2, 6], 3)
    got = ONE_PROCESS.map_batches(batches, lambda batch: [f"row{i}" for i in batch], progress=False)
    assert got == [f"row{i}" for i in range(8)]


def test_results_missing_from_the_gather_are_an_error_not_a_short_list():
    """Without a launcher nothing is gathered, so a process claiming to be one of two lacks half the rows."""
    batches = length_batches([1, 2, 3, 4], 1)
    with pytest.raises(RuntimeError, match="lost or repeated"):
        Workers(index=0, count=2).map_batches(batches, lambda batch: list(batch), progress=False)
    with pytest.raises(RuntimeError, match="lost or repeated"):  # a row in two batches
        ONE_PROCESS.map_batches([[0, 1], [1]], lambda batch: list(batch), progress=False)


# ----------------------------------------------------------------------------- two processes, real stage scripts

WORDS = "oil gold wheat rates bank profit shares crude cocoa coffee tin zinc grain ship trade".split()
DOMAINS = {"earn": 12, "crude": 6, "tin": 2}


def _text(i: int, words: int) -> str:
    return " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words))


def _project(root: Path, student_dir: str) -> Path:
    """A project holding what select@s0, evaluate@s0 and evaluate_zeroshot read: the tiny
    student (base, no adapter), a pool and test rows of varied length, an IFD allocation."""
    pool = [
        Row(id=f"{d}-{i}", domain=d, input=_text(i, 3 + 2 * i), label=d) for d, n in DOMAINS.items() for i in range(n)
    ]
    test = [Row(id=f"t{i}", domain=d, input=_text(i, 2 + 3 * i), label=d) for i, d in enumerate([*DOMAINS] * 3)]
    prepared = root / "data/prepared"
    prepared.mkdir(parents=True)
    write_rows(prepared / "pool.jsonl", pool)
    write_rows(prepared / "test.jsonl", test)
    write_json(prepared / "counts.json", DOMAINS)
    DatasetInfo(name="R52", task="classification", labels=list(DOMAINS), head_threshold=5).save(prepared / "info.json")
    real = {"earn": 3, "crude": 2, "tin": 2}
    allocation = {"policy": "adaptive", "quota": real, "real": real, "head": ["earn", "crude"], "tail": ["tin"]}
    write_json(root / "data/stages/s0/allocation.json", {**allocation, "open": 0, "duplicated": {}})
    write_json(root / "data/stages/start/taken.json", [])
    for stage in ("start", "s0"):
        (root / "models" / stage).mkdir(parents=True)
        (root / "models" / stage / BASE_MARKER).write_text("base\n")
    params = {
        "budget": {"total": 20},
        "stages": {"s0": "start"},
        "student": {"model": student_dir, "max_input_tokens": 32},
        # 9 + 6 candidates in batches of 4 (4 batches) and 9 test rows in batches of 2 (5): uneven hands.
        "select": {"candidates_per_row": 3, "batch_size": 4, "max_new_tokens": 6},
        "evaluate": {"batch_size": 2, "max_new_tokens": 8},
    }
    (root / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


STEPS = (("select_rows.py", "s0", "start"), ("evaluate.py", "s0"), ("evaluate_zeroshot.py",))


def _run_steps(project: Path, launch: list[str], env: dict[str, str], steps=STEPS) -> None:
    for script, *args in steps:
        cmd = [*launch, str(REPO / "stages" / script), *args]
        result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"


def _outputs(project: Path) -> dict[str, object]:
    """Every file the three steps write that holds results (the charts are drawn from them)."""
    files = [
        "data/stages/s0/selected.jsonl",
        "data/stages/s0/taken.json",
        "metrics/s0/predictions.jsonl",
        "metrics/s0/metrics.json",
        "metrics/s0/per_domain.csv",
        "metrics/start/predictions.jsonl",
        "metrics/start/metrics.json",
    ]
    out: dict[str, object] = {name: (project / name).read_text() for name in files if (project / name).exists()}
    report = json.loads((project / "data/stages/s0/select_report.json").read_text())
    out["select_report"] = {k: v for k, v in report.items() if k not in ("seconds", "processes")}
    return out


def _selected(project: Path) -> list[dict]:
    return [json.loads(line) for line in (project / "data/stages/s0/selected.jsonl").read_text().splitlines()]


def _ifds(project: Path) -> list[float]:
    """The IFD of every row picked by it (tail rows, taken whole, have none)."""
    return [r["meta"]["ifd"] for r in _selected(project) if r.get("meta", {}).get("ifd") is not None]


@pytest.mark.slow
def test_select_and_evaluate_under_accelerate_launch_write_what_one_process_writes(tiny_student_dir, tmp_path):
    """Two CPU processes (torchrun-style --multi_gpu with ACCELERATE_USE_CPU, as the
    training test explains) share the batches. At the same threads per process (the
    launcher gives each one thread) the files are byte for byte those of plain
    `python`: same rows, same IFD digits, same predictions and metrics. Against a
    two-thread process, torch's thread-split reductions move the last digits only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    one = _project(tmp_path / "one", tiny_student_dir)
    for copy in ("two", "threads"):
        shutil.copytree(one, tmp_path / copy)
    two, threads = tmp_path / "two", tmp_path / "threads"
    _run_steps(one, [sys.executable], {**env, "OMP_NUM_THREADS": "1"})
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    _run_steps(two, launch, {**env, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})

    report = json.loads((two / "data/stages/s0/select_report.json").read_text())
    assert report["processes"] == 2 and report["rows_scored"] == 15
    expected, got = _outputs(one), _outputs(two)
    assert [name for name in expected if got[name] != expected[name]] == []
    assert len(_ifds(one)) == 5  # the IFD picks (3 earn, 2 crude) are really compared

    _run_steps(threads, [sys.executable], {**env, "OMP_NUM_THREADS": "2"}, STEPS[:2])
    near = _outputs(threads)
    assert [r["id"] for r in _selected(threads)] == [r["id"] for r in _selected(two)]
    assert _ifds(threads) == pytest.approx(_ifds(two), rel=1e-6)
    assert near["metrics/s0/predictions.jsonl"] == got["metrics/s0/predictions.jsonl"]
