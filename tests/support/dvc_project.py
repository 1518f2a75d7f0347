"""A real DVC project in a temp dir: a copy of this repository's pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FILES = ("dvc.yaml", "params.yaml", "stages", "src", "data/raw")


def make_project(dest: Path) -> Path:
    for name in PIPELINE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, dest / name)
    run(dest, "git", "init", "-q")
    run(dest, "git", "config", "user.email", "test@example.com")
    run(dest, "git", "config", "user.name", "test")
    run(dest, "dvc", "init", "-q")
    run(dest, "dvc", "config", "core.check_update", "false")  # the tests never reach the network
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "pipeline")
    return dest


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(project, sys.executable, "-m", "dvc", *args, env=env)


def venv_env() -> dict[str, str]:
    """The environment of an activated venv: dvc.yaml's `python stages/...` and
    `dvc` itself must resolve to this interpreter's, as after `. .venv/bin/activate`."""
    bindir = str(Path(sys.executable).parent)
    # No DVC analytics daemon: on a machine whose network drops packets instead of
    # refusing them, the daemon can hold the captured output pipes open for minutes.
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1"}


# A stuck `dvc repro` must fail with what it printed, not stall the suite
# silently: the slowest one here (the e2e repro) takes about 8 minutes alone.
COMMAND_TIMEOUT_S = 1800


def run(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in the venv's environment, plus `env`."""
    try:
        result = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, env={**venv_env(), **(env or {})}, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as stuck:
        out, err = (_text(stuck.stdout), _text(stuck.stderr))
        raise AssertionError(f"{' '.join(args)} still running after {COMMAND_TIMEOUT_S} s:\n{out}\n{err}") from None
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ran_stages(output: str) -> list[str]:
    """Stage names that `dvc repro`/`dvc exp run` actually executed."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def dag_edges(project: Path, target: str | None = None) -> set[tuple[str, str]]:
    """(upstream, downstream) pairs of `dvc dag --dot`."""
    out = dvc(project, "dag", "--dot", *([target] if target else [])).stdout
    edges = set()
    for line in out.splitlines():
        if "->" in line:
            left, right = line.rstrip(";").split("->")
            edges.add((left.strip().strip('"'), right.strip().strip('"')))
    return edges


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the run asked for text.
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")
