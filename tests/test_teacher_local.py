"""The real local teacher: llama-cpp-python's server with the 0.5B GGUF (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from baldistill.core import assets
from baldistill.core.answers import extract_answer
from baldistill.core.errors import BaldistillError
from baldistill.core.params import Params
from baldistill.teacher.annotation import annotate
from baldistill.teacher.endpoint import open_client
from baldistill.teacher.server import teacher_endpoint

from support.teacher_helpers import INFO, LABELS, pool_rows

pytestmark = pytest.mark.slow
MODEL = "qwen2.5-coder-0.5b"


def local_params(**teacher) -> Params:
    local = {"model_file": MODEL, "threads": 2, "ctx": 1024, "startup_timeout": 180}
    teacher = {"base_url": "local", "model": "qwen-local", "max_tokens": 48, "timeout": 300, "local": local, **teacher}
    return Params.model_validate({"budget": {"total": 10}, "stages": {"s0": "start"}, "teacher": teacher})


@pytest.fixture(autouse=True)
def need_local_server(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp.server")
    try:
        assets.path_of(MODEL)
    except BaldistillError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def server_pids() -> set[int]:
    """Every running llama_cpp.server process (by its command line, read from /proc)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"llama_cpp.server" in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_annotate_with_the_real_local_server():
    rows = pool_rows(1)[:2]
    before = server_pids()
    params = local_params()
    with open_client(params.teacher, budget=len(rows)) as client:
        assert server_pids() == before  # the server starts at the first cache miss, not before
        out, report = annotate(rows, 0, params.teacher, params.data.max_input_chars, INFO, client)
        started = server_pids() - before
    assert len(started) == 1
    assert [r.id for r in out] == [r.id for r in rows]  # on_mismatch=keep: every row kept
    assert all(extract_answer(r.rationale, "classification", LABELS) == r.label for r in out)
    assert all("answer is" in r.rationale.lower() for r in out)
    assert report["teacher"]["calls_paid"] == 2 and report["teacher"]["completion_tokens"] > 0
    # The report carries the server's own speed, read from its log.
    server = report["teacher"]["server"]
    assert server["completions"] == 2 and server["generated_tokens"] > 0 and server["generation_tokens_per_s"] > 0
    assert report["teacher"]["seconds"] > 0
    assert wait_gone(started), "the local server outlived its with-block"


HOLD = textwrap.dedent(
    f"""
    import sys, time
    from baldistill.core.params import Params
    from baldistill.teacher.server import teacher_endpoint
    params = Params.model_validate({{"budget": {{"total": 1}}, "stages": {{"s0": "start"}}, "teacher": {{
        "base_url": "local", "local": {{"model_file": "{MODEL}", "threads": 1, "ctx": 512}}}}}})
    with teacher_endpoint(params.teacher) as (url, model):
        print("ready", url, flush=True)
        time.sleep(600)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_orphan_server_when_the_step_is_killed(sig):
    before = server_pids()
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("ready")
        started = server_pids() - before
        assert len(started) == 1
        holder.send_signal(sig)
        holder.wait(timeout=30)
        assert wait_gone(started), f"llama_cpp.server survived {sig.name} of its parent"
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_server_that_dies_at_startup_is_a_clear_error(tmp_path, monkeypatch):
    """A corrupt model file: the error names the exit and quotes the server's output."""
    asset = assets.ASSETS[MODEL]
    home = tmp_path / "home"
    (home / "assets").mkdir(parents=True)
    (home / "assets" / asset.filename).write_bytes(b"not a gguf file")
    (home / "assets" / asset.filename).with_suffix(".sha256").write_text("x\n")
    monkeypatch.setenv("BALDISTILL_HOME", str(home))
    expected = r"local teacher server exited with code \d+ during startup: .+"
    teacher = local_params().teacher
    with pytest.raises(BaldistillError, match=expected) as caught, open_client(teacher, budget=1) as client:
        annotate(pool_rows(1)[:1], 0, teacher, 1500, INFO, client)
    assert "\n" not in str(caught.value)


def request_after_killing_the_server(teacher, sig: signal.Signals) -> None:
    import openai

    before = server_pids()
    with teacher_endpoint(teacher) as (url, _model):
        [pid] = server_pids() - before
        os.kill(pid, sig)
        assert wait_gone({pid})
        openai.OpenAI(base_url=url, api_key="x", max_retries=0).models.list()


def test_a_server_that_dies_while_serving_is_a_clear_error():
    """Killed under a request (as by SIGILL from a CPU feature the VM lacks): the
    error says how the server ended, not only that the connection failed."""
    expected = r"local teacher server died \(signal SIGILL\) while serving: .+"
    with pytest.raises(BaldistillError, match=expected) as caught:
        request_after_killing_the_server(local_params().teacher, signal.SIGILL)
    assert "\n" not in str(caught.value)
