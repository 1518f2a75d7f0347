"""The select step with 1 and N processes on the CPU, side by side, and its floor.

    python bench/select_scale.py [--model smollm2-135m-instruct] [--rows 32] [--batch-size 4]
                                 [--max-new-tokens 32] [--runs 1x1 2x1]

Runs the real stages/select_rows.py in a scratch project on the first --rows rows
of data/prepared/pool.jsonl (R52-like rows when there is none), every row a
candidate (select.candidates_per_row: null). Each run PxT is P processes of T
threads (OMP_NUM_THREADS): P = 1 under plain `python`, else under `accelerate
launch --multi_gpu --num_processes P` with ACCELERATE_USE_CPU (as
tests/test_parallel_inference.py starts CPU processes). For each it prints rows
per second inside the step (select_report.json's seconds: student load plus
scoring) and for the whole command (interpreter start, imports, process group).
The floor is the batched forward passes scoring needs in one process at the
first run's threads, timed here as bench/ifd.py times them: bare batched
generation plus one pass over the rationales alone. Finally it checks that every
run picked the same rows, IFD within 1e-6, as the first run.

Threads matter as much as processes on a shared machine: with other work on the
cores, a process of 2 OpenMP threads waits at every op for its slower thread
(measured 28x slower than 1 thread while a pipeline step ran beside it), so
compare runs of equal T, and 2x1 against 1x2 only on a quiet machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from student_common import R52_LABELS, R52_LIKE, command, machine, parser, timer

from baldistill.core.files import write_json
from baldistill.core.rows import Row, read_rows, write_rows
from baldistill.prompts import load_prompts
from baldistill.student import ifd
from baldistill.student.encoding import build_prompt
from baldistill.student.generation import generate, pad_id_of
from baldistill.student.model import BASE_MARKER, load_student

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "data/prepared/pool.jsonl"
DOMAIN = "bench"  # every row in one head domain, so each is a candidate of the same draw


def bench_rows(n: int) -> list[Row]:
    """The first n pool rows (or R52-like rows), all in one domain."""
    if POOL.exists():
        source = [r.input for r in read_rows(POOL)[:n]]
    else:
        source = [R52_LIKE[i % len(R52_LIKE)][1] for i in range(n)]
    return [Row(id=f"b{i}", domain=DOMAIN, input=text, label=DOMAIN) for i, text in enumerate(source)]


def make_project(root: Path, rows: list[Row], args) -> None:
    """What select@s0 reads: params, the pool, dataset info, an allocation and the base student."""
    write_rows(root / "data/prepared/pool.jsonl", rows)
    info = {"name": "R52", "task": "classification", "labels": [DOMAIN], "head_threshold": 0}
    write_json(root / "data/prepared/info.json", info)
    real = {DOMAIN: max(1, len(rows) // 4)}  # fewer picks than rows: every row is scored
    allocation = {"policy": "adaptive", "quota": real, "real": real, "head": [DOMAIN], "tail": []}
    write_json(root / "data/stages/s0/allocation.json", {**allocation, "open": 0, "duplicated": {}})
    write_json(root / "data/stages/start/taken.json", [])
    (root / "models/start").mkdir(parents=True)
    (root / "models/start" / BASE_MARKER).write_text("base\n")
    params = {
        "budget": {"total": 20},
        "stages": {"s0": "start"},
        "student": {"model": args.model, "max_input_tokens": args.max_input_tokens},
        "select": {"candidates_per_row": None, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens},
    }
    (root / "params.yaml").write_text(json.dumps(params))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(processes: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """The command prefix and environment that start `processes` CPU processes of `threads` threads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env["OMP_NUM_THREADS"] = str(threads)
    if processes == 1:
        return [sys.executable], env
    prefix = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
    ]  # fmt: skip
    return prefix, {**env, "ACCELERATE_USE_CPU": "true"}


def run_select(project: Path, processes: int, threads: int) -> dict:
    """Run select@s0 with `processes` processes of `threads` threads; its report, picks and wall time."""
    prefix, env = launcher(processes, threads)
    start = time.perf_counter()
    cmd = [*prefix, str(REPO / "stages/select_rows.py"), "s0", "start"]
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"select with {processes} process(es) failed:\n{result.stderr[-3000:]}")
    report = json.loads((project / "data/stages/s0/select_report.json").read_text())
    picks = {r.id: r.meta.get("ifd") for r in read_rows(project / "data/stages/s0/selected.jsonl")}
    return {"report": report, "picks": picks, "wall": wall}


def floor_seconds(args, rows: list[Row], threads: int) -> float:
    """Bare batched generation plus one batched pass over the rationales alone (bench/ifd.py's floor)."""
    torch.set_num_threads(threads)
    model, tokenizer = load_student(args.model)
    templates = load_prompts("classification", R52_LABELS)
    prompts = [build_prompt(tokenizer, templates, r.input, args.max_input_tokens) for r in rows]
    generate(model, tokenizer, prompts[:2], 4, 2, progress=False)  # warm-up: one-time kernel setup
    t: dict[str, float] = {}
    with timer(t, "floor"):
        out = generate(model, tokenizer, prompts, args.max_new_tokens, args.batch_size, progress=False)
        seqs, starts = ifd.direct_rows(tokenizer, [g.token_ids for g in out])
        ifd.sequence_nll(model, seqs, starts, args.batch_size, pad_id_of(tokenizer))
    return t["floor"]


def same_picks(a: dict, b: dict) -> bool:
    if list(a) != list(b):
        return False
    pairs = zip(a.values(), b.values())
    return all(x == y if None in (x, y) else abs(x - y) <= 1e-6 * abs(y) for x, y in pairs)


def print_table(args, rows: list[Row], floor: float, runs: dict[str, dict]) -> None:
    source = "data/prepared/pool.jsonl" if POOL.exists() else "R52-like rows"
    print(
        f"{len(rows)} rows of {source}, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
        f"model {args.model}; {machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'run':36s} {'rows':>5s} {'step s':>7s} {'rows/s':>7s} {'command s':>10s} {'rows/s':>7s}")
    first = args.runs[0]
    name = f"floor: bare passes, 1 x {first.split('x')[1]} threads"
    print(f"{name:36s} {len(rows):5d} {floor:7.2f} {len(rows) / floor:7.2f}")
    for spec, run in runs.items():
        scored, seconds, wall = run["report"]["rows_scored"], run["report"]["seconds"], run["wall"]
        p, t = spec.split("x")
        name = f"select, {p} process(es) x {t} thread(s)"
        print(f"{name:36s} {scored:5d} {seconds:7.2f} {scored / seconds:7.2f} {wall:10.2f} {scored / wall:7.2f}")
    agree = [spec for spec, run in runs.items() if same_picks(run["picks"], runs[first]["picks"])]
    print(f"same picks, IFD within 1e-6 of run {first}: {agree} of {list(runs)}")
    print("reproduce:", command())


def main() -> None:
    p = parser(__doc__.splitlines()[0], repeat=1)
    p.set_defaults(rows=32, batch_size=4, max_new_tokens=32, max_input_tokens=128)
    p.add_argument("--runs", nargs="+", default=["1x1", "2x1"], help="PxT: P processes of T threads each")
    args = p.parse_args()
    rows = bench_rows(args.rows)
    floor = floor_seconds(args, rows, int(args.runs[0].split("x")[1]))
    runs = {}
    with tempfile.TemporaryDirectory(prefix="select-scale-") as scratch:
        for spec in args.runs:
            processes, threads = (int(v) for v in spec.split("x"))
            project = Path(scratch) / spec
            make_project(project, rows, args)
            runs[spec] = run_select(project, processes, threads)
            shutil.rmtree(project)

    print_table(args, rows, floor, runs)


if __name__ == "__main__":
    main()
