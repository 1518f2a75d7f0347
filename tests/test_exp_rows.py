"""Choosing experiments among `dvc exp show` rows, in a real DVC repo."""

from __future__ import annotations

from support.dvc_project import commit_repo, dvc, stopped_exp_run, venv_env

STEP = """import json, os, time, yaml
params = yaml.safe_load(open("params.yaml"))
if params["wait"]:  # the run a user stops: it tells the test it began, then waits to be killed
    open(os.environ["STARTED"], "w").close()
    time.sleep(600)
os.makedirs("metrics/s1", exist_ok=True)
json.dump({"macro": 0.5}, open("metrics/s1/metrics.json", "w"))
"""
PIPELINE = """stages:
  evaluate:
    cmd: python step.py
    deps:
      - step.py
    params:
      - wait
    metrics:
      - metrics/s1/metrics.json:
          cache: false
"""


def test_a_run_stopped_under_a_name_does_not_shadow_the_finished_run_of_that_name(tmp_path):
    from dvc.api import exp_show

    from baldistill.report.exp_rows import experiment_baselines, pick

    (tmp_path / "step.py").write_text(STEP)
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    (tmp_path / "params.yaml").write_text("wait: 0\n")
    commit_repo(tmp_path)

    started = tmp_path / "started"
    env = {**venv_env(), "STARTED": str(started)}
    stopped_exp_run(tmp_path, started, "-n", "seed2", "-S", "wait=1", env=env)
    dvc(tmp_path, "exp", "run", "--temp", "-n", "seed2", "-S", "wait=0", env=env)

    rows = exp_show(repo=str(tmp_path), revs=experiment_baselines(str(tmp_path)))
    named = [row for row in rows if row.get("Experiment") == "seed2"]
    assert len(named) == 2 and named[0].get("State") == "Running"  # the stopped run is still listed first
    (chosen,) = pick(rows, ["seed2"])
    assert chosen.get("State") not in {"Running", "Queued", "Failed"}
    assert chosen["wait"] == 0 and chosen["macro"] == 0.5  # `dvc exp show` drops a lone file prefix
