"""The audited `dvc repro` of tests/test_pipeline_contract.py runs watched
(support.dvc_project.dvc_watched): it says each stage as it starts, and a stuck
one fails in time with every process's stack rather than holding the suite."""

from __future__ import annotations

import pytest

from support.dvc_project import dvc, dvc_watched, run


def test_a_stuck_repro_fails_in_time_with_every_stack_and_says_where_it_was(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  quick:\n    cmd: echo done > quick.txt\n    outs: [quick.txt]\n"
        "  stuck:\n    cmd: python -c 'import time; time.sleep(600)'\n    deps: [quick.txt]\n"
    )
    run(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    said = []
    with pytest.raises(AssertionError, match="still running after 15 s") as failure:
        dvc_watched(tmp_path, "repro", env={}, timeout=15, say=said.append)
    assert [s.split(" (")[0] for s in said] == ["quick", "stuck"]
    assert "time.sleep(600)" in str(failure.value)  # the echoed command
    assert 'File "<string>", line 1 in <module>' in str(failure.value)  # the stuck step's own stack
