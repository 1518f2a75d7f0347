"""The files each step really read and wrote in an audited `dvc repro` (see
audit/sitecustomize.py), checked against the stage's deps and outs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from support.pipeline_contract import Stage, covers

AUDIT_HOOK_DIR = Path(__file__).parent / "audit"
# Under the project root but no step's business: DVC's and git's own files (the
# root .dvcignore and .gitignore are read by DVC's Repo, which dvclive opens in
# the train step); the params file, whose keys the params check covers; the
# teacher cache (answers shared by every experiment; what a step used is
# exported into its outs).
IGNORED = (".dvc/", ".git/", ".dvcignore", ".gitignore", "params.yaml", ".baldistill/")


@dataclass
class Access:
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    removes: set[str] = field(default_factory=set)  # existing files it removed (not its own temp files)


def audit_env(log_dir: Path, root: Path) -> dict[str, str]:
    """Environment for `dvc repro` that makes every stage script log its file access into `log_dir`."""
    path = os.pathsep.join(filter(None, [str(AUDIT_HOOK_DIR), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "BALDISTILL_AUDIT_LOG": str(log_dir), "BALDISTILL_AUDIT_ROOT": str(root.resolve())}


def _ignored(path: str) -> bool:
    return path.startswith(IGNORED) or "__pycache__" in path.split("/")


def read_audit(log_dir: Path, root: Path) -> dict[str, Access]:
    """{"stages/train.py s1 s0": Access} for every audited process, paths relative to `root`."""
    steps: dict[str, Access] = {}
    for log in sorted(log_dir.glob("*.tsv")):
        header, *events = log.read_text().splitlines()
        access = steps.setdefault(header.split("\t", 1)[1], Access())
        created = set()
        for event in events:
            kind, path = event.split("\t", 1)
            path = Path(os.path.relpath(path, root.resolve())).as_posix()
            if _ignored(path):
                continue
            if kind == "read":
                access.reads.add(path)
            elif kind == "write":
                access.writes.add(path)
                created.add(path)
            elif kind == "mkdir":
                created.add(path)
            else:  # its own temp file or folder, renamed over the target or deleted, is no write
                mine = {p for p in created if covers(path, p)}
                access.writes -= mine
                if not mine:
                    access.removes.add(path)
    return steps


def access_of(stage: Stage, steps: dict[str, Access]) -> Access | None:
    words = stage.cmd.split()
    return steps.get(" ".join(words[words.index(stage.script) :]))


def owner(path: str, stages: list[Stage]) -> str | None:
    return next((s.name for s in stages if any(covers(out, path) for out in s.outs)), None)


def write_problems(stage: Stage, access: Access, stages: list[Stage]) -> list[str]:
    problems = []
    for path in sorted(access.writes | access.removes):
        if any(covers(out, path) for out in stage.outs):
            continue
        other = owner(path, stages)
        verb = "writes" if path in access.writes else "removes"
        where = f"an out of {other}, not of {stage.name}" if other else "no out of any stage"
        problems.append(f"{stage.name}: {verb} {path}, which is {where}")
    return problems


def read_problems(stage: Stage, access: Access, stages: list[Stage]) -> list[str]:
    problems = []
    for path in sorted(access.reads):
        if path in access.writes or any(covers(dep, path) for dep in stage.deps):
            continue  # what it wrote itself, or a dep
        other = owner(path, stages)
        where = f"an out of {other}" if other else "no out of any stage"
        problems.append(f"{stage.name}: reads {path}, which is no dep of it ({where})")
    return problems


def unread_dep_problems(stage: Stage, access: Access, root: Path) -> list[str]:
    """Data files in deps that the step never opened: a change to them re-runs the
    step for nothing. Folders are left out: a step may only look at one (select@s0
    asks whether models/start holds the BASE marker), which raises no audit event."""
    return [
        f"{stage.name}: dep {dep} is never read (a stale dep)"
        for dep in stage.deps
        if not dep.startswith(("src/", "stages/"))
        and (root / dep).is_file()
        and not any(covers(dep, path) for path in access.reads)
    ]
