"""A `dvc` command watched while it runs: it says each stage as it starts and,
between stages, how long it has been going, so a run cut short from outside (a
harness's time limit) still shows how far it got. Past its limits, or
interrupted, every Python process of the run dumps its stack before the run
is killed: a stuck step fails with where it was stuck, never silently.

The run starts when the `with` block is entered and is waited for later
(`wait`), so a test file can do other work beside it (the contract test runs
its static checks while its audited `dvc repro` goes on)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import NoReturn

import psutil

from support.dvc_project import failed, venv_env

Say = Callable[[str], None]


class WatchedRun:
    """`dvc *args` in `project`, started at once; `wait` watches it to the end."""

    def __init__(self, project: Path, args: tuple[str, ...], env: dict[str, str], say: Say):
        self.command = [sys.executable, "-m", "dvc", *args]
        self.say = say
        self.process = subprocess.Popen(
            self.command,
            cwd=project,
            env={**venv_env(), **env, "PYTHONFAULTHANDLER": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the stage scripts get the SIGABRT too
        )
        self.start = time.monotonic()
        self.lines: list[str] = []
        self.stage: str | None = None
        self._stage_at = 0.0  # when self.stage began
        self._echo = False  # whether each line is said as it comes (a slow stage)
        # Lines come stamped with when they were printed: a run waited for late
        # still times its stages from their real start.
        self._queue: Queue[tuple[float, str] | None] = Queue()
        threading.Thread(target=_pump, args=(self.process.stdout, self._queue), daemon=True).start()

    def _seconds(self, at: float | None = None) -> str:
        return f"{(at or time.monotonic()) - self.start:.0f} s"

    def wait(
        self,
        timeout: float,
        stage_timeout: float = float("inf"),
        heartbeat: float = float("inf"),
        echo_after: float = float("inf"),
    ) -> str:
        """All the run printed, once it has ended well. Fails with every stack
        past `timeout` for the run or `stage_timeout` for one stage; says the
        run's seconds after each `heartbeat` seconds without a new stage, and
        says all a stage prints once it has run `echo_after` seconds (a slow
        step's own stack dumps reach the terminal before an outer limit cuts)."""
        deadline, stage_deadline = self.start + timeout, float("inf")
        # Checked at every line too: a stage that keeps printing is no less stuck.
        while (left := min(deadline, stage_deadline) - time.monotonic()) > 0:
            echo_at = self._stage_at + echo_after if self.stage and not self._echo else float("inf")
            try:
                item = self._queue.get(timeout=max(0.0, min(left, heartbeat, echo_at - time.monotonic())))
            except Empty:
                item = False
            if time.monotonic() >= echo_at:
                self._echo = True
                self.say(f"\n{self.stage} has run {echo_after:g} s; all it prints from here on:\n")
            if item is None:
                break
            if item is False:
                if min(deadline, stage_deadline, echo_at) > time.monotonic():
                    self.say(f"... {self._seconds()}")
            elif self._took(item):
                stage_deadline = item[0] + stage_timeout
        else:
            in_stage = stage_deadline < deadline  # the stage's limit came first
            self._fail(f"still in stage {self.stage} after {stage_timeout:g} s" if in_stage else None, timeout)
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._fail(None, timeout)
        if self.process.returncode != 0:
            raise failed(self.command, f"failed ({self.process.returncode})", "".join(self.lines))
        return "".join(self.lines)

    def _took(self, item: tuple[float, str]) -> bool:
        """Keeps a line of the run; True (and says so) where it starts a stage."""
        at, line = item
        self.lines.append(line)
        if not line.startswith("Running stage '"):
            if self._echo:
                self.say(line)
            return False
        self.stage, self._stage_at, self._echo = line.split("'")[1], at, False
        self.say(f"{self.stage} ({self._seconds(at)})")
        return True

    def _take_printed(self) -> None:
        """Takes the lines printed so far that no `wait` has read."""
        with contextlib.suppress(Empty):
            while (item := self._queue.get_nowait()) is not None:
                self._took(item)
            self._queue.put(None)  # the end, left for whoever drains the rest

    def _fail(self, what: str | None, timeout: float) -> NoReturn:
        self.lines += _stacks_then_kill(self.process, self._queue)
        raise failed(self.command, what or f"still running after {timeout:g} s", "".join(self.lines))

    def interrupted(self) -> None:
        """Cut from outside while still running: say where it was at once (a
        harness may kill this process soon after its SIGTERM), then the stacks."""
        self._take_printed()
        self.say(f"\n{' '.join(self.command)} interrupted after {self._seconds()} in stage {self.stage}")
        self.lines += _stacks_then_kill(self.process, self._queue)
        self.say(f"\nits output and stacks:\n{''.join(self.lines)}")


@contextlib.contextmanager
def watched_dvc(project: Path, *args: str, env: dict[str, str], say: Say) -> Iterator[WatchedRun]:
    """Starts `dvc *args`; whatever ends the block (Ctrl-C, an outer limit's
    SIGTERM, pytest-timeout's failure, a failing test beside it) leaves no
    process of the run behind, and one still running shows its stacks first."""
    watched = WatchedRun(project, args, env, say)
    try:
        with _sigterm_as_keyboard_interrupt():
            yield watched
    finally:
        if watched.process.poll() is None:
            watched.interrupted()


def dvc_watched(project: Path, *args: str, env: dict[str, str], timeout: float, say: Say, **limits: float) -> str:
    """`dvc *args` watched from start to end (see WatchedRun.wait for `limits`)."""
    with watched_dvc(project, *args, env=env, say=say) as watched:
        return watched.wait(timeout, **limits)


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
    """Every line of `stream` into `queue` with when it came, then None."""
    for line in stream:
        queue.put((time.monotonic(), line))
    queue.put(None)


def _drained(queue: Queue) -> list[str]:
    """What is left in `queue` up to its None, or up to 10 s of silence."""
    lines = []
    try:
        while (item := queue.get(timeout=10)) is not None:
            lines.append(item[1])
    except Empty:
        pass
    return lines
