"""The whole tiny pipeline with teacher.mode: batch, against a fake OpenAI Batch API
on loopback: every teacher step sends its cache misses as one job, pays the batch
price, and a second `dvc repro` sends nothing."""

from __future__ import annotations

import json

import pytest
import yaml

from support.dvc_project import dvc, make_project, ran_stages
from support.fake_batch_server import FakeBatchServer
from support.teacher_helpers import SECRET
from support.tiny_pipeline import configure, teacher_reply

PRICE = {"input_per_1m": 1.0, "output_per_1m": 2.0, "batch_factor": 0.5}

pytestmark = pytest.mark.slow


def batch_mode(project) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["teacher"].update(mode="batch", batch_poll_seconds=0.05, price=PRICE, api_key_env="BALDISTILL_TEST_KEY")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_full_pipeline_in_batch_mode(tmp_path, tiny_student_dir):
    (tmp_path / "project").mkdir()
    project, cache = make_project(tmp_path / "project"), tmp_path / "teacher-cache"
    env = {"BALDISTILL_TEACHER_CACHE": str(cache), "BALDISTILL_TEST_KEY": SECRET, "TQDM_DISABLE": "1"}
    with FakeBatchServer(answer=lambda body: teacher_reply("", 0, body).content) as server:
        configure(project, server.base_url, tiny_student_dir)
        batch_mode(project)
        dvc(project, "repro", env=env)
        jobs, answered = len(server.jobs), list(server.answered)
        ledger = json.loads((project / "metrics/s1/teacher.json").read_text())
        reports = [
            json.loads((project / f"data/stages/{s}/{step}_report.json").read_text())
            for s in ("s0", "s1")
            for step in ("synthesize", "annotate")
        ]
        # Every teacher step again, forced: all of it from the cache, no job.
        again = dvc(
            project, "repro", "-f", "-s", "synthesize@s0", "annotate@s0", "synthesize@s1", "annotate@s1", env=env
        )
        jobs_after = len(server.jobs)
    asked = [r["teacher"] for r in reports if r["teacher"]["calls_paid"]]
    assert ledger["calls_paid"] == ledger["calls_budgeted"] == len(answered) == len(set(answered)) > 0
    assert jobs == len(asked) and all(len(t["batch_ids"]) == 1 for t in asked)  # one job per step that asked
    batch_price = sum(t["prompt_tokens"] * 0.5 + t["completion_tokens"] * 1.0 for t in asked) / 1e6
    assert ledger["usd_paid"] == pytest.approx(batch_price) and batch_price > 0
    assert (project / "metrics/s1/metrics.json").exists()
    assert len(ran_stages(again.stdout)) == 4 and jobs_after == jobs
