"""A real DVC project in a temp dir: a copy of this repository's pipeline."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty, Queue

import psutil

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
        raise _failed(args, f"still running after {COMMAND_TIMEOUT_S} s", out, err) from None
    if check and result.returncode != 0:
        raise _failed(args, f"failed ({result.returncode})", result.stdout, result.stderr)
    return result


def _failed(command, what: str, *outputs: str) -> AssertionError:
    """The failure of a command the tests ran: the command, what went wrong, and all it printed."""
    return AssertionError(f"{' '.join(command)} {what}:\n" + "\n".join(outputs))


def dvc_watched(
    project: Path,
    *args: str,
    env: dict[str, str],
    timeout: float,
    say: Callable[[str], None],
    stage_timeout: float = float("inf"),
) -> str:
    """`dvc *args` that tells `say` each stage it starts, with the seconds since
    the start, while it runs: a run cut short from outside (a harness's time
    limit) still shows how far it got. Past `timeout` for the run, or
    `stage_timeout` for one stage, every Python process of the run dumps its
    stack (faulthandler, on SIGABRT) into the failure message; interrupted
    (Ctrl-C, an outer limit's SIGTERM, pytest-timeout), it gives `say` the
    same dump and kills the run before it lets the interruption go on."""
    command = [sys.executable, "-m", "dvc", *args]
    process = subprocess.Popen(
        command,
        cwd=project,
        env={**venv_env(), **env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the stage scripts get the SIGABRT too
    )
    lines: list[str] = []
    queue: Queue[str | None] = Queue()
    threading.Thread(target=_pump, args=(process.stdout, queue), daemon=True).start()
    start = time.monotonic()
    deadline, stage, stage_deadline = start + timeout, None, float("inf")
    try:
        with _sigterm_as_keyboard_interrupt():
            # Checked at every line too: a stage that keeps printing is no less stuck.
            while (left := min(deadline, stage_deadline) - time.monotonic()) > 0:
                if (line := queue.get(timeout=left)) is None:
                    break
                lines.append(line)
                if line.startswith("Running stage '"):
                    stage, stage_deadline = line.split("'")[1], time.monotonic() + stage_timeout
                    say(f"{stage} ({time.monotonic() - start:.0f} s)")
            else:
                raise Empty
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (Empty, subprocess.TimeoutExpired) as cut:
        lines += _stacks_then_kill(process, queue)
        in_stage = isinstance(cut, Empty) and stage_deadline < deadline  # the stage's limit came first
        what = f"still in stage {stage} after {stage_timeout:g} s" if in_stage else None
        raise _failed(command, what or f"still running after {timeout:g} s", "".join(lines)) from None
    except BaseException:  # Ctrl-C, SIGTERM, pytest-timeout's failure: nothing is left running
        # Said at once: a harness may kill this process soon after its SIGTERM.
        say(f"\n{' '.join(command)} interrupted after {time.monotonic() - start:.0f} s in stage {stage}")
        lines += _stacks_then_kill(process, queue)
        say(f"\nits output and stacks:\n{''.join(lines)}")
        raise
    if process.returncode != 0:
        raise _failed(command, f"failed ({process.returncode})", "".join(lines))
    return "".join(lines)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt():
    """SIGTERM (what `timeout` and most harnesses send first) raises
    KeyboardInterrupt here, so the run's stacks are dumped before the end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stacks_then_kill(process: subprocess.Popen, queue: Queue) -> list[str]:
    """Every Python process of the run dumps its stack (SIGABRT with faulthandler
    on), the deepest first and one at a time, since they share one pipe and
    dumps written together interleave; then the group is killed. Returns what
    the run printed since."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for member in [*reversed(psutil.Process(process.pid).children(recursive=True)), process]:
            with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                os.kill(member.pid, signal.SIGABRT)
                time.sleep(0.5)  # its dump is written
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return _drained(queue)


def _pump(stream, queue: Queue) -> None:
    """Every line of `stream` into `queue`, then None."""
    for line in stream:
        queue.put(line)
    queue.put(None)


def _drained(queue: Queue) -> list[str]:
    """What is left in `queue` up to its None, or up to 10 s of silence."""
    lines = []
    try:
        while (line := queue.get(timeout=10)) is not None:
            lines.append(line)
    except Empty:
        pass
    return lines


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
