"""Pipeline overhead on a finished run: the time of a no-op `dvc repro`, and the
teacher calls paid when steps re-send identical requests (must be 0).

Run it in an activated venv (`. .venv/bin/activate`) in a repository where `dvc repro` has finished:

    python bench/pipeline.py [--repeats 3] [--stages s0]

It times `dvc repro` (nothing to do) `repeats` times, then force-re-runs the
synthesize and annotate steps of the given stages, which send exactly the
requests of the finished run again, and reads what those steps paid.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True, check=True)


def noop_repro_seconds(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = dvc("repro").stdout
        times.append(time.perf_counter() - start)
        if "Running stage" in out:
            raise SystemExit("the run was not finished: `dvc repro` still had work to do")
    return times


def paid_on_identical_rerun(stages: list[str]) -> list[tuple[str, int, int]]:
    rows = []
    for stage in stages:
        for step in ("synthesize", "annotate"):
            dvc("repro", "--force", "--single-item", f"{step}@{stage}")
            report = json.loads(Path(f"data/stages/{stage}/{step}_report.json").read_text())
            rows.append((f"{step}@{stage}", report["teacher"]["calls_budgeted"], report["teacher"]["calls_paid"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=["s0"])
    args = parser.parse_args()
    times = noop_repro_seconds(args.repeats)
    print("| measurement | value |\n|---|---|")
    print(f"| no-op `dvc repro` (best of {args.repeats}) | {min(times):.2f} s |")
    print(f"| no-op `dvc repro` (mean) | {sum(times) / len(times):.2f} s |")
    for name, budgeted, paid in paid_on_identical_rerun(args.stages):
        print(f"| {name} forced re-run: calls budgeted / paid | {budgeted} / {paid} |")
    # the forced steps rewrote identical outputs: the pipeline is up to date again
    print(f"| `dvc repro` after the forced re-runs | {min(noop_repro_seconds(1)):.2f} s, nothing re-ran |")
    print(f"\ncommand: python bench/{Path(__file__).name} {shlex.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
