"""How the tests run dvc (support.dvc_project): in a hermetic environment, and,
for the contract test's audited `dvc repro`, watched (dvc_watched): it says each
stage as it starts, and a stuck one fails in time with every process's stack
rather than holding the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.dvc_project import dvc, dvc_watched, run, venv_env

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
    (tmp_path / "dvc.yaml").write_text("stages:\n  stuck:\n    cmd: python -c 'import time; time.sleep(600)'\n")
    run(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    said = []
    # 20-30 s: time for dvc to start and reach the stage on a loaded machine
    with pytest.raises(AssertionError, match=message) as failure:
        dvc_watched(tmp_path, "repro", env={}, say=said.append, **limits)
    assert [s.split(" (")[0] for s in said] == ["stuck"]
    assert "time.sleep(600)" in str(failure.value)  # the echoed command
    assert 'File "<string>", line 1 in <module>' in str(failure.value)  # the stuck step's own stack


def _stuck_project(root: Path) -> Path:
    """A DVC repo whose one stage writes its pid to `pid` and sleeps."""
    root.mkdir(exist_ok=True)
    (root / "stuck.py").write_text("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    (root / "dvc.yaml").write_text("stages:\n  stuck:\n    cmd: python stuck.py\n")
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    return root


def test_a_watched_repro_interrupted_from_outside_shows_the_stacks_and_leaves_no_process(tmp_path):
    """What an outer time limit does: SIGTERM to the test process mid-step."""
    project = _stuck_project(tmp_path)
    watcher = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from support.dvc_project import dvc_watched\n"
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
        "from support.dvc_project import dvc_watched\n"
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
