"""Which run paid for each teacher step, when DVC restored it in another.

`dvc exp run` restores a step from DVC's run cache when its command, deps and
params match a run made before: the outputs, the step's report and the ledger
built from it are that earlier run's, so the later run would show calls and
teacher tokens/s it never paid for or measured (issue 13's Duplicate seed 1
showed seed 0's 114 calls). Two runs whose dvc.lock give a teacher step the
same command, deps, params and report md5 ran it once: DVC's run cache is keyed
by the first three, and the report md5 alone is not enough (a teacher that
answers two models' requests alike writes byte-identical reports for runs that
each paid). The earliest
run holding it (by commit time: an experiment is committed when it ends) made
it; the others restored it, and the report takes its usage out of their ledgers.
A run that `dvc exp show` does not list (a workspace `dvc repro` never
committed, a removed experiment) is not seen, nor is a run that was stopped
(its row carries the lock of the commit it ran from, not one of its own): the
earliest listed finished run holding its output is billed instead, which for
scripts/results.sh's stop-then-finish is the run of that name. The teacher
cache's payment journal (`baldistill spend`) has the exact bill per payer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import NamedTuple

import yaml

from baldistill.report.exp_rows import UNFINISHED_STATES, final_stage, ledger_of, read_output, run_name
from baldistill.teacher.usage import LEDGER_FIELDS, SERVER_FIELDS, add_usage

TEACHER_STEPS = ("synthesize", "annotate")
# What a restored step's maker paid; its calls and dollars budgeted stay the run's
# too (the run used those answers: they count against its B).
PAID_FIELDS = tuple(field for field in LEDGER_FIELDS if field not in ("calls_budgeted", "usd_budgeted"))


def teacher_step_reports(lock_text: str) -> dict[str, tuple[str, str]]:
    """{step@sK: (report path, fingerprint)} of the teacher steps in a dvc.lock:
    the fingerprint is that of the step's lock entry (command, deps, params, outs)."""
    steps = {}
    for name, stage in (yaml.safe_load(lock_text) or {}).get("stages", {}).items():
        if name.split("@")[0] in TEACHER_STEPS:
            for out in stage.get("outs", []):
                if out["path"].endswith("_report.json"):
                    steps[name] = (out["path"], lock_entry_fingerprint(stage))
    return steps


def lock_entry_fingerprint(stage: dict) -> str:
    """One step's run identity: what DVC's run cache keys on, and what it wrote."""
    entry = {
        "cmd": stage.get("cmd"),
        "deps": sorted((dep["path"], dep.get("md5") or dep.get("hash")) for dep in stage.get("deps", [])),
        "params": stage.get("params", {}),
        "outs": sorted((out["path"], out.get("md5")) for out in stage.get("outs", [])),
    }
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


class Holding(NamedTuple):
    """One run's teacher steps, as its dvc.lock names them."""

    name: str
    when: float  # its commit time (inf: the workspace)
    steps: dict[str, tuple[str, str]]  # teacher_step_reports of its dvc.lock
    rev: str = ""


def makers(holdings: Iterable[Holding]) -> dict[tuple[str, str], str]:
    """(step, fingerprint) -> the run that made it: the earliest of the runs
    holding it; ties go to the first listed."""
    made: dict[tuple[str, str], str] = {}
    for holding in sorted(holdings, key=lambda holding: holding.when):
        for step, (_, fingerprint) in holding.steps.items():
            made.setdefault((step, fingerprint), holding.name)
    return made


def restored(name: str, steps: dict[str, tuple[str, str]], made: dict[tuple[str, str], str]) -> dict[str, str]:
    """{step: the run that made it} for the steps of run `name` that another run made."""
    return {step: made[(step, key)] for step, (_, key) in steps.items() if made.get((step, key), name) != name}


def own_ledger(ledger: dict, restored_usages: list[dict]) -> dict:
    """`ledger` without what restored steps paid: the calls, tokens and dollars
    the run itself paid, and its own teacher tokens/s (None where it fetched
    nothing). What it budgeted stays: restored answers still count against its B."""
    negated = [
        {
            **{field: -usage.get(field, 0) for field in PAID_FIELDS},
            "server": {key: -((usage.get("server") or {}).get(key, 0)) for key in SERVER_FIELDS.values()},
        }
        for usage in restored_usages
    ]
    own = add_usage(ledger, *negated)
    # Seconds left over where no token is are the ledger's rounding: no speed, not 0 tok/s.
    for rate, tokens in (
        ("prompt_tokens_per_s", "server_prompt_tokens"),
        ("generation_tokens_per_s", "server_generated_tokens"),
    ):
        if own[tokens] <= 0:
            own[rate] = None
    return own


def restored_teacher_steps(rows: list[dict], repo: str | None) -> dict[str, dict[str, tuple[str, str]]]:
    """For each `dvc exp show` row (experiments and commits) that restored a
    teacher step: {row rev: {step: (maker, report path)}}. By rev: a stopped
    run is listed under the same name as the finished one."""
    from dvc.exceptions import PathMissingError
    from scmrepo.git import Git

    git = Git(repo or ".")
    holdings = []
    for row in rows:
        if row.get("State") in UNFINISHED_STATES:  # its dvc.lock is its baseline's
            continue
        rev = row["rev"]
        try:
            lock = read_output("dvc.lock", rev, repo)
        except (FileNotFoundError, PathMissingError):  # a commit from before the pipeline ran
            continue
        when = float("inf") if rev == "workspace" else git.resolve_commit(rev).commit_time
        holdings.append(Holding(run_name(row), when, teacher_step_reports(lock), rev))
    made = makers(holdings)
    out = {}
    for holding in holdings:
        if found := restored(holding.name, holding.steps, made):
            out[holding.rev] = {step: (maker, holding.steps[step][0]) for step, maker in found.items()}
    return out


def own_ledgers(rows: list[dict], chosen: list[dict], repo: str | None) -> dict[str, tuple[dict, dict[str, str]]]:
    """For each chosen row: (its final ledger without the paid calls of the steps
    it restored, {restored step: the run that made it}). `rows`: every row `dvc
    exp show` gave, where the makers are looked for. Only steps that paid calls
    count: a step that paid none writes the same report every time it runs, so
    the same md5 there does not tell a restored step from one run again."""
    found = restored_teacher_steps(rows, repo)
    out = {}
    for row in chosen:
        name, stage = run_name(row), final_stage(row)
        ledger = ledger_of(row, stage) if stage else {}
        usages = {
            step: (made, json.loads(read_output(path, row["rev"], repo))["teacher"])
            for step, (made, path) in found.get(row["rev"], {}).items()
            if stage is not None and int(step.split("@s")[1]) <= int(stage[1:])
        }
        paid = {step: made_usage for step, made_usage in usages.items() if made_usage[1].get("calls_paid", 0) > 0}
        own = own_ledger(ledger, [usage for _, usage in paid.values()]) if paid else ledger
        out[name] = (own, {step: made for step, (made, _) in paid.items()})
    return out


def restored_markdown(restored_by_run: dict[str, dict[str, str]]) -> str:
    """A note naming each run's restored teacher steps and who made them ("" if none)."""
    lines = []
    for name, steps in restored_by_run.items():
        by_maker: dict[str, list[str]] = {}
        for step, made in steps.items():
            by_maker.setdefault(made, []).append(step)
        if by_maker:
            lines.append(f"- {name}: " + "; ".join(f"{', '.join(s)} made by {m}" for m, s in by_maker.items()))
    if not lines:
        return ""
    return (
        "\nTeacher steps DVC restored from its run cache: another run made them and paid their calls, "
        "which are counted (with their tokens/s) in that run's row, not here.\n" + "\n".join(lines) + "\n"
    )
