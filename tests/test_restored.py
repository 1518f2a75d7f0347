"""A run whose teacher steps DVC restored from another run's cache is not
billed for them (report.restored): pure parts, then real `dvc exp run`s."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from baldistill.report.restored import (
    Holding,
    makers,
    own_ledger,
    restored,
    restored_markdown,
    teacher_step_reports,
)
from baldistill.teacher.usage import add_usage, empty_ledger

from support.dvc_project import commit_repo, dvc, run, stopped_exp_run, venv_env

LOCK = """
schema: '2.0'
stages:
  synthesize@s0:
    cmd: python stages/synthesize.py s0 start
    outs:
    - path: data/stages/s0/synthesize_report.json
      md5: aaa
    - path: data/stages/s0/synthetic.jsonl
      md5: bbb
  annotate@s0:
    cmd: python stages/annotate.py s0 start
    outs:
    - path: data/stages/s0/annotate_report.json
      md5: ccc
  train@s0:
    cmd: python stages/train.py s0 start
    outs:
    - path: data/stages/s0/train_report.json
      md5: ddd
"""


def test_the_teacher_steps_are_read_from_dvc_lock_by_their_report():
    steps = teacher_step_reports(LOCK)
    assert {step: path for step, (path, _) in steps.items()} == {
        "synthesize@s0": "data/stages/s0/synthesize_report.json",
        "annotate@s0": "data/stages/s0/annotate_report.json",
    }
    assert steps == teacher_step_reports(LOCK)  # the same entry, the same fingerprint
    assert steps["synthesize@s0"][1] != steps["annotate@s0"][1]


def test_a_byte_identical_report_from_other_inputs_is_another_run():
    # Two teacher models answered alike: the reports match, the params do not. CI once
    # billed a run's synthesis to an earlier run with another teacher model.
    with_params = LOCK.replace(
        "    cmd: python stages/annotate.py s0 start\n",
        "    cmd: python stages/annotate.py s0 start\n    params:\n      params.yaml:\n        teacher.model: MODEL\n",
    )
    one, other = (teacher_step_reports(with_params.replace("MODEL", model)) for model in ("a", "b"))
    assert one["annotate@s0"][1] != other["annotate@s0"][1]
    assert one["synthesize@s0"] == other["synthesize@s0"]  # its entry did not change
    made = makers([Holding("first", 1.0, one), Holding("second", 2.0, other)])
    assert restored("second", other, made) == {"synthesize@s0": "first"}


def test_the_earliest_run_holding_a_step_made_it_and_the_later_ones_restored_it():
    report = "data/stages/s0/annotate_report.json"
    holdings = [
        Holding("later", 20.0, {"annotate@s0": (report, "x")}),
        Holding("first", 10.0, {"annotate@s0": (report, "x")}),
        Holding("other", 30.0, {"annotate@s0": (report, "y")}),
    ]
    made = makers(holdings)
    assert restored("later", holdings[0].steps, made) == {"annotate@s0": "first"}
    assert restored("first", holdings[1].steps, made) == {}
    assert restored("other", holdings[2].steps, made) == {}


usage = st.fixed_dictionaries(
    {
        "calls_budgeted": st.integers(0, 500),
        "calls_paid": st.integers(0, 500),
        "prompt_tokens": st.integers(0, 10**6),
        "completion_tokens": st.integers(0, 10**5),
        "usd_paid": st.floats(0, 100, allow_nan=False),
        "usd_budgeted": st.floats(0, 100, allow_nan=False),
        "server": st.fixed_dictionaries(
            {
                "prompt_tokens_evaluated": st.integers(0, 10**6),
                "prompt_seconds": st.floats(0, 10**4, allow_nan=False),
                "generated_tokens": st.integers(0, 10**5),
                "generation_seconds": st.floats(0, 10**4, allow_nan=False),
            }
        ),
    }
)


@given(st.lists(usage, min_size=1, max_size=4), st.integers(0, 4))
def test_the_own_ledger_keeps_exactly_the_steps_the_run_made(usages, cut):
    own_steps, restored_steps = usages[:cut], usages[cut:]
    full = add_usage(empty_ledger(), *usages)
    own = own_ledger(full, restored_steps)
    alone = add_usage(empty_ledger(), *own_steps)
    assert own["calls_paid"] == alone["calls_paid"] and own["prompt_tokens"] == alone["prompt_tokens"]
    assert own["calls_budgeted"] == full["calls_budgeted"]  # restored answers still count against B
    assert abs(own["usd_paid"] - alone["usd_paid"]) < 1e-4
    assert own["server_generated_tokens"] == alone["server_generated_tokens"]
    if not any(u["server"]["generated_tokens"] for u in own_steps):
        assert own["generation_tokens_per_s"] is None  # no speed borrowed from a restored step


def test_the_note_names_each_restored_step_and_its_maker():
    text = restored_markdown({"b": {"annotate@s0": "a", "annotate@s1": "a"}, "a": {}})
    assert "- b: annotate@s0, annotate@s1 made by a" in text
    assert "- a" not in text
    assert restored_markdown({"a": {}}) == ""


# --- real experiments ------------------------------------------------------------------------

ANNOTATE = """import json, os, random, sys
stage = sys.argv[1]
os.makedirs("data", exist_ok=True); os.makedirs(f"metrics/{stage}", exist_ok=True)
server = {"prompt_tokens_evaluated": 100, "prompt_seconds": 2.0, "generated_tokens": 30, "generation_seconds": 3.0}
usage = {"calls_budgeted": 5, "calls_paid": 5, "prompt_tokens": 100, "completion_tokens": 30,
         "seconds": random.random(), "server": server}
json.dump({"teacher": usage}, open(f"data/{stage}_annotate_report.json", "w"))
n = int(stage[1:]) + 1  # the ledger sums the stages so far, 5 calls each
ledger = {"calls_budgeted": 5 * n, "calls_paid": 5 * n, "prompt_tokens": 100 * n, "completion_tokens": 30 * n,
          "server_prompt_tokens": 100 * n, "server_prompt_seconds": 2.0 * n, "server_generated_tokens": 30 * n,
          "server_generation_seconds": 3.0 * n, "prompt_tokens_per_s": 50.0, "generation_tokens_per_s": 10.0}
json.dump(ledger, open(f"metrics/{stage}/teacher.json", "w"))
"""
EVALUATE = """import json, sys
json.dump({"macro": 0.5}, open(f"metrics/{sys.argv[1]}/metrics.json", "w"))
"""
PIPELINE = """stages:
  annotate:
    foreach: [s0, s1]
    do:
      cmd: python annotate.py ${item}
      deps:
        - annotate.py
      params:
        - teacher.model
      outs:
        - data/${item}_annotate_report.json
      metrics:
        - metrics/${item}/teacher.json
  evaluate:
    foreach: [s0, s1]
    do:
      cmd: python evaluate.py ${item}
      deps:
        - evaluate.py
        - metrics/${item}/teacher.json
      params:
        - train.seed
      metrics:
        - metrics/${item}/metrics.json:
            cache: false
"""


def test_experiments_that_restored_a_paid_step_are_not_billed_for_it(tmp_path):
    from dvc.api import exp_show
    from dvc.api import read as read_tracked

    from baldistill.report.exp_rows import experiment_baselines, pick
    from baldistill.report.restored import own_ledgers

    files = {"annotate.py": ANNOTATE, "evaluate.py": EVALUATE, "dvc.yaml": PIPELINE}
    files["params.yaml"] = "teacher:\n  model: a\ntrain:\n  seed: 0\n"
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    commit_repo(tmp_path)
    dvc(tmp_path, "exp", "run", "-n", "pays", "-S", "train.seed=1")
    dvc(tmp_path, "exp", "run", "-n", "other-teacher", "-S", "teacher.model=b")  # annotate runs again: pays
    dvc(tmp_path, "exp", "run", "-n", "restores", "-S", "train.seed=2", "-S", "teacher.model=a")  # run cache
    rows = exp_show(repo=str(tmp_path), revs=experiment_baselines(str(tmp_path)))
    chosen = pick(rows, ["pays", "other-teacher", "restores"])
    own = own_ledgers(rows, chosen, str(tmp_path))
    assert {name: ledger["calls_paid"] for name, (ledger, _) in own.items()} == {
        "pays": 10,
        "other-teacher": 10,
        "restores": 0,
    }
    assert own["restores"][1] == {"annotate@s0": "pays", "annotate@s1": "pays"}
    assert own["restores"][0]["generation_tokens_per_s"] is None
    assert own["pays"][0]["generation_tokens_per_s"] == 10.0
    report = json.loads(read_tracked("data/s0_annotate_report.json", repo=str(tmp_path), rev=chosen[2]["rev"]))
    assert report["teacher"]["calls_paid"] == 5  # the restored file itself still says what the maker paid


WAITING_EVALUATE = """import json, os, sys, time, yaml
if yaml.safe_load(open("params.yaml"))["wait"]:  # the sitting a user stops, after its teacher steps
    open(os.environ["STARTED"], "w").close()
    time.sleep(600)
json.dump({"macro": 0.5}, open(f"metrics/{sys.argv[1]}/metrics.json", "w"))
"""


def test_a_run_finished_after_a_stopped_sitting_is_billed_for_what_that_sitting_paid(tmp_path):
    """scripts/results.sh's stop-then-finish: the finished run's teacher steps come
    from DVC's run cache, filled by its own stopped sitting, whose `dvc exp show`
    row (State Running) carries the baseline's dvc.lock, not a lock of its own."""
    from dvc.api import exp_show

    from baldistill.report.exp_rows import experiment_baselines, pick
    from baldistill.report.restored import own_ledgers

    pipeline = PIPELINE.replace("        - train.seed\n", "        - train.seed\n        - wait\n")
    files = {"annotate.py": ANNOTATE, "evaluate.py": WAITING_EVALUATE, "dvc.yaml": pipeline}
    files["params.yaml"] = "teacher:\n  model: a\ntrain:\n  seed: 0\nwait: 0\n"
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    commit_repo(tmp_path)
    dvc(tmp_path, "repro")  # the baseline commit holds a lock of its own, as a clone of main does
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "commit", "-qm", "ran")

    started = tmp_path / "started"
    env = {**venv_env(), "STARTED": str(started)}
    stopped_exp_run(tmp_path, started, "-n", "seed2", "-S", "teacher.model=b", "-S", "wait=1", env=env)
    dvc(tmp_path, "exp", "run", "--temp", "-n", "seed2", "-S", "teacher.model=b", "-S", "wait=0", env=env)

    rows = exp_show(repo=str(tmp_path), revs=experiment_baselines(str(tmp_path)))
    assert "Running" in {row.get("State") for row in rows if row.get("Experiment") == "seed2"}  # the stopped sitting
    chosen = pick(rows, ["seed2"])
    ledger, restored_steps = own_ledgers(rows, chosen, str(tmp_path))["seed2"]
    assert restored_steps == {}  # no other run made them: its stopped sitting did
    assert ledger["calls_paid"] == 10 and ledger["generation_tokens_per_s"] == 10.0
