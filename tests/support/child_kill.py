"""Killing a child step mid-run and waiting on what it left: shared by the
resume, dollar-cap and Batch tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from baldistill.teacher.cache import RequestCache

from support.teacher_fakeserver import body_key


def stored_server_keys(cache_dir: Path) -> set[str]:
    """Server-side keys of every answer in the cache (its request has the body's fields)."""
    with RequestCache(cache_dir) as cache:
        return {body_key(entry["request"]) for entry in cache.entries(cache.keys())}


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def kill_once_answers_are_stored(server, child: subprocess.Popen, cache_dir: Path, at_least: int = 3) -> None:
    """kill -9 `child` once >= `at_least` answers are out and every answer sent so far is
    on disk; with the server's 0.4 s delay the next requests are then in flight."""
    wait_for(
        lambda: (
            len(server.answered()) >= at_least
            and (cache_dir / "cache.sqlite").exists()
            and server.answered() <= stored_server_keys(cache_dir)
        )
    )
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
