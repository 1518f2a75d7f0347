"""A real DVC project in a temp dir: a copy of this repository's pipeline."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
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
    shutil.copy(REPO / ".dvcignore", dest / ".dvcignore")  # over dvc init's empty one
    run(dest, "dvc", "config", "core.check_update", "false")  # the tests never reach the network
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "pipeline")
    return dest


def commit_repo(root: Path) -> Path:
    """The files at `root` as a git repo with DVC initialised, everything committed."""
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    dvc(root, "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pipeline")
    return root


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(project, sys.executable, "-m", "dvc", *args, env=env)


def stopped_exp_run(project: Path, started: Path, *args: str, env: dict[str, str]) -> None:
    """`dvc exp run --temp <args>` stopped with SIGTERM to its process group, as
    scripts/results.sh runs and stops it, once its step has created `started`
    (the step must create that file, then wait to be killed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "exp", "run", "--temp", *args],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run to stop never began its step"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(60)


# Set by MPI, Slurm or torchrun around the test run, these would make every
# student step (accelerate's PartialState) wait for peers that never come.
LAUNCHER_VARIABLES = (
    "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE",
)  # fmt: skip


def venv_env() -> dict[str, str]:
    """The environment of an activated venv: dvc.yaml's `python stages/...` and
    `dvc` itself must resolve to this interpreter's, as after `. .venv/bin/activate`.
    Hermetic: no launcher of the outer run, and no model hub (every model is local)."""
    bindir = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    # No DVC analytics daemon: on a machine whose network drops packets instead of
    # refusing them, the daemon can hold the captured output pipes open for minutes.
    # No hub: a model path that does not exist fails at once instead of being asked for.
    offline = {"DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return {**env, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), **offline}


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
        raise failed(args, f"still running after {COMMAND_TIMEOUT_S} s", out, err) from None
    if check and result.returncode != 0:
        raise failed(args, f"failed ({result.returncode})", result.stdout, result.stderr)
    return result


def failed(command, what: str, *outputs: str) -> AssertionError:
    """The failure of a command the tests ran: the command, what went wrong, and all it printed."""
    return AssertionError(f"{' '.join(command)} {what}:\n" + "\n".join(outputs))


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
