"""How the tests run dvc (support.dvc_project): in a hermetic environment, and,
for the contract test's audited `dvc repro`, watched (dvc_watched): it says each
stage as it starts, and a stuck one fails in time with every process's stack
rather than holding the suite."""

from __future__ import annotations

import sys

import pytest

from support.dvc_project import dvc, dvc_watched, run


def test_steps_run_without_the_outer_launcher_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")  # as under torchrun or mpirun
    monkeypatch.setenv("PMI_SIZE", "4")
    script = "import os; print([os.environ.get(k) for k in ('WORLD_SIZE', 'PMI_SIZE', 'HF_HUB_OFFLINE')])"
    out = run(tmp_path, sys.executable, "-c", script).stdout
    assert out.strip() == "[None, None, '1']"


def test_a_stuck_repro_fails_in_time_with_every_stack_and_says_where_it_was(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  stuck:\n    cmd: python -c 'import time; time.sleep(600)'\n")
    run(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    said = []
    # 30 s: time for dvc to start and reach the stage on a loaded machine
    with pytest.raises(AssertionError, match="still running after 30 s") as failure:
        dvc_watched(tmp_path, "repro", env={}, timeout=30, say=said.append)
    assert [s.split(" (")[0] for s in said] == ["stuck"]
    assert "time.sleep(600)" in str(failure.value)  # the echoed command
    assert 'File "<string>", line 1 in <module>' in str(failure.value)  # the stuck step's own stack
