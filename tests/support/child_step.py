"""A miniature teacher step run as a child process (tests/support/*_child.py),
killed mid-run and waited on: shared by the resume, parallel-run, dollar-cap
and Batch tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from baldistill.teacher.cache import RequestCache

from support.teacher_fakeserver import body_key
from support.teacher_helpers import SECRET

SUPPORT = Path(__file__).parent


def start_child(script: str, base_url: str, workdir: Path, *args: str, cache: Path | None = None) -> subprocess.Popen:
    """Run tests/support/`script` on `workdir` against `base_url`, with the test
    key in the environment and the teacher cache at `cache` (default workdir/cache)."""
    env = {
        **os.environ,
        "BALDISTILL_TEST_KEY": SECRET,
        "BALDISTILL_TEACHER_CACHE": str(cache or workdir / "cache"),
        "TQDM_DISABLE": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(SUPPORT / script), base_url, str(workdir), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    on disk, and one more request has reached the server (so it is in flight: the server
    answers after its delay)."""
    wait_for(
        lambda: (
            len(server.answered()) >= at_least
            and (cache_dir / "cache.sqlite").exists()
            and server.answered() <= stored_server_keys(cache_dir)
            # and a later request has reached the server unanswered: in flight at the kill, however
            # slowly a loaded machine lets the child send it
            and any(s.key not in server.answered() for s in server.seen)
        )
    )
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
