"""How the tests run dvc (support.dvc_project): in a hermetic environment, and,
for the contract test's audited `dvc repro`, watched (support.watched_run): it says each
stage as it starts, and a stuck one fails in time with every process's stack
rather than holding the suite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.dvc_project import dvc, run, venv_env
from support.watched_run import dvc_watched, watched_dvc

TESTS = Path(__file__).resolve().parent


def test_steps_run_without_the_outer_launcher_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")  # as under torchrun or mpirun
    monkeypatch.setenv("PMI_SIZE", "4")
    script = "import os; print([os.environ.get(k) for k in ('WORLD_SIZE', 'PMI_SIZE', 'HF_HUB_OFFLINE')])"
    out = run(tmp_path, sys.executable, "-c", script).stdout
    assert out.strip() == "[None, None, '1']"


@pytest.mark.parametrize(
    "limits,message",
    [
        (dict(timeout=30), "still running after 30 s"),
        (dict(timeout=600, stage_timeout=20), "still in stage stuck after 20 s"),
    ],
    ids=["run limit", "stage limit"],
)
def test_a_stuck_repro_fails_in_time_with_every_stack_and_says_where_it_was(tmp_path, limits, message):
    _one_stage_repo(tmp_path, "stuck", "python -c 'import time; time.sleep(600)'")
    said = []
    # 20-30 s: time for dvc to start and reach the stage on a loaded machine
    with pytest.raises(AssertionError, match=message) as failure:
        dvc_watched(tmp_path, "repro", env={}, say=said.append, heartbeat=6, **limits)
    beats = [s for s in said if re.fullmatch(r"\.\.\. \d+ s", s)]  # it said it was still going
    assert beats and [s.split(" (")[0] for s in said if s not in beats] == ["stuck"]
    assert "time.sleep(600)" in str(failure.value)  # the echoed command
    assert 'File "<string>", line 1 in <module>' in str(failure.value)  # the stuck step's own stack


def _stuck_project(root: Path) -> Path:
    """A DVC repo whose one stage writes its pid to `pid` and sleeps."""
    root.mkdir(exist_ok=True)
    (root / "stuck.py").write_text("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    return _one_stage_repo(root, "stuck", "python stuck.py")


def _one_stage_repo(root: Path, stage: str, cmd: str) -> Path:
    """A git and DVC repo at `root` whose dvc.yaml has the one stage `stage` running `cmd`."""
    (root / "dvc.yaml").write_text(f"stages:\n  {stage}:\n    cmd: {cmd}\n")
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    return root


def test_a_watched_repro_interrupted_from_outside_shows_the_stacks_and_leaves_no_process(tmp_path):
    """What an outer time limit does: SIGTERM to the test process mid-step."""
    project = _stuck_project(tmp_path)
    watcher = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from support.watched_run import dvc_watched\n"
        f"dvc_watched(__import__('pathlib').Path({str(project)!r}), 'repro', env={{}}, timeout=300,"
        " say=lambda text: print(text, flush=True))\n"
    )
    outer = subprocess.Popen(
        [sys.executable, "-c", watcher], env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 60
    while not (project / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    step = int((project / "pid").read_text())
    outer.send_signal(signal.SIGTERM)
    out, _ = outer.communicate(timeout=60)
    assert outer.returncode != 0
    assert out.startswith("stuck (")
    assert "interrupted after" in out and "its output and stacks" in out
    assert 'stuck.py", line 3 in <module>' in out  # the step's own stack, dumped before the kill
    with pytest.raises(ProcessLookupError):
        os.kill(step, 0)  # the step is gone with its run, not left behind


def test_a_watched_repro_cut_by_pytest_timeout_shows_the_stacks_and_leaves_no_process(tmp_path):
    """What `pytest --timeout N` does to a test whose watched run is still going."""
    project = _stuck_project(tmp_path / "project")
    test_file = tmp_path / "test_cut.py"
    test_file.write_text(
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from support.watched_run import dvc_watched\n"
        "def test_it():\n"
        f"    dvc_watched(Path({str(project)!r}), 'repro', env={{}}, timeout=300, say=print)\n"
    )
    cut = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--timeout=15", str(test_file)],
        cwd=tmp_path,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cut.returncode == 1  # the test failed; the session went on
    assert "interrupted after" in cut.stdout and "Timeout" in cut.stdout
    assert 'stuck.py", line 3 in <module>' in cut.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(int((project / "pid").read_text()), 0)


def test_a_run_waited_for_late_times_its_stage_from_the_stage_s_real_start(tmp_path):
    """The contract test starts its audited run first and waits for it after its
    static checks: a stage that began meanwhile is timed from when it began."""
    project, said = _stuck_project(tmp_path), []
    with watched_dvc(project, "repro", env={}, say=said.append) as watched:
        _wait_for(project / "pid")
        time.sleep(3)
        waited_from = time.monotonic() - watched.start
        with pytest.raises(AssertionError, match="still in stage stuck after 2 s"):
            watched.wait(timeout=600, stage_timeout=2)
    assert said[0].startswith("stuck (")
    assert int(said[0].split("(")[1].split()[0]) < waited_from  # said when it began, not when read
    with pytest.raises(ProcessLookupError):
        os.kill(int((project / "pid").read_text()), 0)


def test_a_run_left_running_by_a_failure_beside_it_shows_its_stacks_and_leaves_no_process(tmp_path):
    """A static test failing (or Ctrl-C) before the wait: the run is not orphaned."""
    project, said = _stuck_project(tmp_path), []

    def failing_beside_the_run():
        with watched_dvc(project, "repro", env={}, say=said.append):
            _wait_for(project / "pid")
            raise RuntimeError("a failure beside the run")

    with pytest.raises(RuntimeError, match="a failure beside the run"):
        failing_beside_the_run()
    assert said[0].startswith("stuck (")  # printed before the wait that never came
    assert "interrupted after" in said[1] and said[1].endswith("in stage stuck")
    assert 'stuck.py", line 3 in <module>' in said[2]
    with pytest.raises(ProcessLookupError):
        os.kill(int((project / "pid").read_text()), 0)


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), f"{path} never appeared"


def test_a_slow_stage_s_output_is_said_as_it_comes(tmp_path):
    """What a slow audited step prints (its own stack dumps) reaches the terminal
    while it runs, not only in a failure an outer limit may never let happen."""
    slow = "import faulthandler, time; faulthandler.dump_traceback_later(4); time.sleep(600)"
    _one_stage_repo(tmp_path, "slow", f'python -c "{slow}"')
    said = []
    with pytest.raises(AssertionError, match="still in stage slow after 10 s"):
        dvc_watched(tmp_path, "repro", env={}, say=said.append, timeout=120, stage_timeout=10, echo_after=2)
    echoed = said.index("\nslow has run 2 s; all it prints from here on:\n")
    assert said[echoed - 1].startswith("slow (")
    assert any('File "<string>", line 1 in <module>' in line for line in said[echoed + 1 :])
