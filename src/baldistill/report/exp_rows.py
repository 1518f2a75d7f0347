"""Reading `dvc exp show` rows (experiments and the commits they ran from)
and the files DVC tracked in each: shared by `baldistill report` and `spend`."""

from __future__ import annotations

import json
import re

from baldistill.core.errors import BaldistillError
from baldistill.core.layout import StagePaths


def run_name(row: dict) -> str:
    """An experiment's name, or a commit's rev ("workspace" for the workspace)."""
    return row.get("Experiment") or row["rev"]


def final_stage(row: dict) -> str | None:
    """The highest sK that has a metrics file in this experiment."""
    stages = {
        int(m.group(1))
        for key in row
        if (m := re.match(r"metrics/s(\d+)/metrics\.json:macro$", key)) and row[key] is not None
    }
    return f"s{max(stages)}" if stages else None


# `dvc exp show` keeps listing a `--temp` run that was stopped or failed, under
# its name and with one of these states, beside the finished run of that name.
UNFINISHED_STATES = frozenset({"Queued", "Running", "Failed"})


def pick(rows: list[dict], wanted: list[str]) -> list[dict]:
    """Experiments by name or rev ("workspace" included); all of them if none named.
    A name that a stopped run left behind beside a finished one means the finished one."""
    if not wanted:
        return [r for r in rows if r.get("rev") == "workspace" or r.get("Experiment")]
    chosen = []
    for name in wanted:
        match = [r for r in rows if name in (r.get("Experiment"), r.get("rev"))]
        if not match:
            raise BaldistillError(f"no experiment or revision named {name!r} (see `dvc exp show`)")
        chosen.append(min(match, key=lambda row: row.get("State") in UNFINISHED_STATES))  # first finished
    return chosen


def number(row: dict, column: str):
    """`column` of a `dvc exp show` row as a number, None where it has none: a JSON
    null in a metrics file comes back as the string "None" (a run that paid no
    teacher call has no tokens/s). Any other text is a broken metrics file."""
    value = row.get(column)
    if value is None or value == "None":
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            name = run_name(row)
            raise BaldistillError(f"experiment {name}: {column} is {value!r}, not a number") from None
    return value


def experiment_baselines(repo: str | None) -> list[str]:
    """HEAD and every commit some experiment was run from: seeds run over several
    sittings may rest on different commits, and a report compares them all."""
    from dvc.repo import Repo

    with Repo(repo) as dvc_repo:
        return ["HEAD", *dvc_repo.experiments.ls(all_commits=True)]


def read_output(path: str, rev: str, repo: str | None) -> str:
    """A DVC-tracked file as it was in experiment/revision `rev` ("workspace" = now)."""
    import dvc.api

    return dvc.api.read(path, repo=repo, rev=None if rev == "workspace" else rev)


def ledger_of(row: dict, stage: str) -> dict:
    """A run's teacher ledger up to `stage` (metrics/<stage>/teacher.json), as numbers."""
    prefix = f"{StagePaths(stage).ledger.as_posix()}:"
    values = {key[len(prefix) :]: number(row, key) for key in row if key.startswith(prefix)}
    return {key: value for key, value in values.items() if value is not None}


def with_file_metrics(row: dict, repo: str | None) -> dict:
    """`row` with each stage's metrics under "file:name" columns, read from the files.

    `dvc exp show` prefixes a metric with its file only where two files share
    the name, so a run that evaluated only its last stage (`dvc exp run
    evaluate@s1`) shows `macro`, not `metrics/s1/metrics.json:macro`, and would
    look unfinished. Reading the files gives every run the same columns."""
    from dvc.exceptions import DvcException

    out = dict(row)
    for stage in ["start", *(key.split(".", 1)[1] for key in row if key.startswith("stages."))]:
        here = StagePaths(stage)
        for path in (here.metrics.as_posix(), here.ledger.as_posix()):
            try:
                values = json.loads(read_output(path, row["rev"], repo))
            except (FileNotFoundError, DvcException, ValueError):  # a stage this run did not evaluate
                continue
            out.update({f"{path}:{k}": v for k, v in values.items() if not isinstance(v, dict | list)})
    return out
