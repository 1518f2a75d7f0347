"""dvc.yaml tells the truth: every step depends on the code it runs and the
params it reads, writes only its own outs and reads only its deps. Otherwise a
change leaves results stale while `dvc repro` says "up to date", or re-runs
steps for nothing.

The pipeline is read through DVC's own API with two and with three stages.
Imports and params reads come from the stage scripts' AST; the files a step
really opens come from a `dvc repro` of the tiny pipeline with an audit hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from support.dvc_project import make_project
from support.pipeline_contract import (
    REPO,
    Stage,
    load_stages,
    module_dep_problems,
    needed_files,
    params_problems,
    params_reads,
    pipeline_copy,
)
from support.step_audit import (
    Access,
    access_of,
    audit_env,
    read_audit,
    read_problems,
    unread_dep_problems,
    write_problems,
)
from support.teacher_fakeserver import FakeTeacher
from support.tiny_pipeline import configure, teacher_reply
from support.watched_run import WatchedRun, watched_dvc


def report(problems: list[str]) -> str:
    return f"{len(problems)} broken promises of dvc.yaml:\n" + "\n".join(problems)


@pytest.fixture(scope="module", params=[2, 3], ids=["2 stages", "3 stages"])
def stages(request, tmp_path_factory):
    return load_stages(pipeline_copy(tmp_path_factory.mktemp("pipeline"), request.param))


def test_the_pipeline_unrolls_every_step_for_every_stage(stages):
    k = len({s.name.split("@")[1] for s in stages if "@" in s.name})
    steps = {s.step for s in stages}
    once = {"prepare", "evaluate_zeroshot"}
    assert steps == once | {"score_validation", "allocate", "select", "synthesize", "annotate", "train", "evaluate"}
    assert len(stages) == len(once) + (len(steps) - len(once)) * k


def test_every_module_a_step_imports_is_a_dep_and_no_other(stages):
    problems = [problem for stage in stages for problem in module_dep_problems(stage)]
    assert not problems, report(problems)


def test_every_params_key_a_step_reads_is_listed_and_no_other(stages):
    problems = [problem for stage in stages for problem in params_problems(stage)]
    assert not problems, report(problems)


# --- the checks catch what they should -----------------------------------------------------------


def _edited(step: str, section: str, remove: str | None = None, add: str | None = None) -> str:
    """dvc.yaml's text with an entry removed from or added to `section` (deps, params) of `step`."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    entries = pipeline["stages"][step].get("do", pipeline["stages"][step])[section]
    if remove:
        entries.remove(remove)
    if add:
        entries.append(add)
    return yaml.safe_dump(pipeline, sort_keys=False)


def _new_problems(tmp_path, check, dvc_yaml: str) -> list[str]:
    """What `check` reports on `dvc_yaml` and not on the real dvc.yaml."""
    before = {p for stage in load_stages(pipeline_copy(tmp_path / "real", 2)) for p in check(stage)}
    after = [p for stage in load_stages(pipeline_copy(tmp_path / "changed", 2, dvc_yaml)) for p in check(stage)]
    return [p for p in after if p not in before]


@pytest.mark.parametrize(
    "edit,check,expected",
    [
        (
            dict(section="deps", remove="src/baldistill/teacher/synthesis.py"),
            module_dep_problems,
            "imports baldistill.teacher.synthesis but no dep covers src/baldistill/teacher/synthesis.py",
        ),
        (
            dict(section="deps", add="src/baldistill/teacher/annotation.py"),
            module_dep_problems,
            "dep src/baldistill/teacher/annotation.py is code the step does not import (a stale dep)",
        ),
        (
            dict(section="deps", add="src/baldistill/student"),
            module_dep_problems,
            "dep src/baldistill/student is code the step does not import (a stale dep)",
        ),
        (
            dict(section="params", remove="teacher.synth_temperature"),
            params_problems,
            "reads params key teacher.synth_temperature but its params: do not list it",
        ),
        (
            dict(section="params", add="teacher.on_mismatch"),  # annotation's key: synthesis never reads it
            params_problems,
            "lists params key teacher.on_mismatch but never reads it (a stale param)",
        ),
        (
            dict(section="params", remove="data.max_input_chars", add="data"),
            params_problems,
            "lists params data but reads only data.max_input_chars of it",
        ),
        (
            dict(section="params", add="train.seed"),
            params_problems,
            "lists params key train.seed but never reads it (a stale param)",
        ),
    ],
    ids=[
        "removed dep",
        "stale module dep",
        "stale folder dep",
        "removed param",
        "another step's leaf",
        "too broad a param",
        "stale param",
    ],
)
def test_a_broken_promise_in_dvc_yaml_is_reported(tmp_path, edit, check, expected):
    dvc_yaml = _edited("synthesize", **edit)
    assert _new_problems(tmp_path, check, dvc_yaml) == [f"synthesize@{k}: {expected}" for k in ("s0", "s1")]


def test_a_step_passing_the_whole_params_on_is_reported(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(
        "params = load_params()\n"
        "run(params.teacher, params.data.max_input_chars.bit_length(), params.K)\n"
        "def inner():\n"
        "    return library(params)\n"
        "params.nope\n"
    )
    keys, misuses = params_reads(script)
    assert keys == {"teacher", "data.max_input_chars", "stages"}
    assert misuses == [
        "line 4: uses the whole Params `params`, not a section or key of it",
        "line 5: reads params.nope, which is no params key",
    ]


def test_imports_count_transitively_inside_functions_and_as_from_package_import_module(tmp_path):
    script = tmp_path / "step.py"
    script.write_text("def main():\n    from baldistill import prompts\n")
    needed = needed_files(script)
    assert needed["src/baldistill/prompts/__init__.py"] == "imports baldistill.prompts"
    assert needed["src/baldistill/prompts/classification.yaml"] == "baldistill.prompts reads it"


# --- what the steps really read and write ---------------------------------------------------------


class Audited(NamedTuple):
    root: Path
    stages: list[Stage]
    access: dict[str, Access]  # by stage name


def _terminal_writer(request) -> Callable[[str], None]:
    """Writes straight to pytest's terminal, past output capture (a no-op without one)."""
    plugins = request.config.pluginmanager
    terminal, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def write(text: str) -> None:
        if terminal and capture:
            with capture.global_and_fixture_disabled():
                terminal.write(text, flush=True)

    return write


# The run takes 45-65 s on this project's machines, its longest step about 10 s;
# a machine 4x slower needs about 4 minutes and 40 s. A stuck step fails with
# every stack within a few minutes, before a harness's 10-minute limit cuts the
# whole test run without them.
AUDITED_REPRO_TIMEOUT_S = 450
AUDITED_STAGE_TIMEOUT_S = 150
AUDITED_HEARTBEAT_S = 5
# A step running this long (twice the longest here) writes its stacks every as
# many seconds, and they are said on the terminal as they come.
AUDITED_SLOW_STEP_S = 20


class _Started(NamedTuple):
    root: Path
    log: Path
    run: WatchedRun


@pytest.fixture(scope="module", autouse=True)
def audited_run(request, tmp_path_factory) -> Iterator[_Started | pytest.skip.Exception | None]:
    """The audited `dvc repro` of the tiny two-stage pipeline, with every step's
    file access logged; started before this file's first test when a selected
    test needs it, so the static checks run beside it. It is most of the file's
    time (a run cut short from outside still shows how far it got, see audited)."""
    if not any("audited" in item.fixturenames for item in request.session.items if item.path == request.path):
        yield None
        return
    try:
        student = request.getfixturevalue("tiny_student_dir")
    except pytest.skip.Exception as no_student:  # only the tests that need the run are skipped
        yield no_student
        return
    root, log = tmp_path_factory.mktemp("audited"), tmp_path_factory.mktemp("audit-log")
    cache = tmp_path_factory.mktemp("teacher-cache")
    say = _terminal_writer(request)
    with FakeTeacher(teacher_reply) as teacher:
        make_project(root)
        configure(root, teacher.base_url, student)
        env = {**audit_env(log, root), "BALDISTILL_TEACHER_CACHE": str(cache)}
        env["BALDISTILL_AUDIT_STACKS_EVERY_S"] = str(AUDITED_SLOW_STEP_S)
        with watched_dvc(root, "repro", env=env, say=lambda text: say(f" {text}")) as run:
            yield _Started(root, log, run)


@pytest.fixture(scope="module")
def audited(request, audited_run: _Started | pytest.skip.Exception) -> Audited:
    """The audited run, waited for: it says on the terminal which stage it is in
    as it goes, every few seconds how long it has run, and a slow step's stacks."""
    if not isinstance(audited_run, _Started):
        pytest.skip(str(audited_run))
    say = _terminal_writer(request)
    say("\naudited dvc repro of the tiny pipeline:")
    limits = dict(timeout=AUDITED_REPRO_TIMEOUT_S, stage_timeout=AUDITED_STAGE_TIMEOUT_S)
    audited_run.run.wait(heartbeat=AUDITED_HEARTBEAT_S, echo_after=AUDITED_SLOW_STEP_S, **limits)
    say(" done\n")
    stages = load_stages(audited_run.root)
    steps = read_audit(audited_run.log, audited_run.root)
    return Audited(audited_run.root, stages, {stage.name: access_of(stage, steps) for stage in stages})


@pytest.mark.slow
def test_every_step_ran_under_the_audit(audited):
    assert [s.name for s in audited.stages if audited.access[s.name] is None] == []
    assert all(audited.access[s.name].writes for s in audited.stages)


@pytest.mark.slow
def test_every_step_writes_only_its_own_outs(audited):
    stages, access = audited.stages, audited.access
    problems = [p for stage in stages for p in write_problems(stage, access[stage.name], stages)]
    assert not problems, report(problems)


@pytest.mark.slow
def test_every_step_reads_only_its_deps_and_every_data_file_dep_is_read(audited):
    stages, access = audited.stages, audited.access
    problems = [p for stage in stages for p in read_problems(stage, access[stage.name], stages)]
    problems += [p for stage in stages for p in unread_dep_problems(stage, access[stage.name], audited.root)]
    assert not problems, report(problems)


@pytest.mark.slow
def test_a_removed_data_dep_and_a_removed_out_are_reported(audited):
    synthesize = next(s for s in audited.stages if s.name == "synthesize@s0")
    allocation = "data/stages/s0/allocation.json"
    synthetic = "data/stages/s0/synthetic.jsonl"
    crippled = replace(
        synthesize,
        deps=tuple(d for d in synthesize.deps if d != allocation),
        outs=tuple(o for o in synthesize.outs if o != synthetic),
    )
    stages = [crippled if stage is synthesize else stage for stage in audited.stages]
    access = audited.access[synthesize.name]
    assert read_problems(crippled, access, stages) == [
        f"synthesize@s0: reads {allocation}, which is no dep of it (an out of allocate@s0)"
    ]
    assert write_problems(crippled, access, stages) == [
        f"synthesize@s0: writes {synthetic}, which is no out of any stage"
    ]


# --- the audit itself -------------------------------------------------------------


def test_the_audit_keeps_a_sitecustomize_it_shadows(tmp_path):
    """A harness's or distribution's own sitecustomize still runs in audited steps."""
    root, log, other = tmp_path / "project", tmp_path / "log", tmp_path / "other"
    for folder in (root / "stages", log, other):
        folder.mkdir(parents=True)
    (root / "data.txt").write_text("x")
    (root / "stages" / "step.py").write_text("open('data.txt').read()\n")
    (other / "sitecustomize.py").write_text(f"open({str(tmp_path / 'other-ran')!r}, 'w').close()\n")
    env = audit_env(log, root)
    env["PYTHONPATH"] += os.pathsep + str(other)
    subprocess.run([sys.executable, "stages/step.py"], cwd=root, env={**os.environ, **env}, check=True)
    assert (tmp_path / "other-ran").exists()
    assert "data.txt" in read_audit(log, root)["stages/step.py"].reads  # the hook still logs


def test_a_slow_audited_step_writes_its_stacks_and_goes_on(tmp_path):
    root, log = tmp_path / "project", tmp_path / "log"
    for folder in (root / "stages", log):
        folder.mkdir(parents=True)
    (root / "stages" / "step.py").write_text("import time\ntime.sleep(2.5)\nprint('finished')\n")
    env = {**os.environ, **audit_env(log, root), "BALDISTILL_AUDIT_STACKS_EVERY_S": "1"}
    done = subprocess.run([sys.executable, "stages/step.py"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "finished\n"
    assert done.stderr.count('step.py", line 2 in <module>') == 2  # at 1 s and 2 s, where it slept
