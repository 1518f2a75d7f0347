"""What dvc.yaml promises, read through DVC's own API, against what the stage
scripts do: the project modules they import (AST, transitively) and the
params keys they read (AST over attribute chains on the loaded `Params`).

Every check returns a list of problems, each naming the DVC stage and the item,
so one failing test lists everything there is to fix.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from pydantic import BaseModel

from baldistill.core import step_keys
from baldistill.core.params import Params

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = "baldistill"

# Modules a step may import without depending on them, because none can change
# what the step writes:
UNTRACKED_MODULES = {
    # the package root only sets __version__
    "baldistill",
    # exception types and exit codes: they decide whether a step fails, never what it writes
    "baldistill.core.errors",
    # argument parsing and one-line errors; the arguments themselves are in dvc.yaml's cmd
    "baldistill.core.step",
    # paths only: the audited run in tests/test_pipeline_contract.py pins every path a step
    # reads or writes to dvc.yaml, so moving a file fails there rather than going stale
    "baldistill.core.layout",
}
# Files a module reads at run time, which count as imported wherever it is.
MODULE_DATA = {"baldistill.prompts": "src/baldistill/prompts/*.yaml"}
# Properties of Params that read a params key.
DERIVED_KEYS = {"K": "stages", "stage_names": "stages"}
# Views that read only some keys of a section: `teacher_keys(params.teacher, ANNOTATE)` reads
# teacher.<each key of step_keys.ANNOTATE>, not the whole section.
SECTION_VIEWS = {"teacher_keys": "teacher"}


@dataclass(frozen=True)
class Stage:
    """One DVC stage as DVC resolved it (foreach items unrolled)."""

    name: str  # e.g. "allocate@s0"
    cmd: str
    raw_cmd: str  # before ${...} interpolation
    deps: tuple[str, ...]  # paths relative to the project root
    params: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots

    @property
    def step(self) -> str:
        return self.name.split("@")[0]

    @property
    def script(self) -> str:
        return next(word for word in self.cmd.split() if re.fullmatch(r"stages/\w+\.py", word))


def pipeline_copy(dest: Path, stages: int, dvc_yaml: str | None = None) -> Path:
    """A DVC project holding this repo's pipeline definition with `stages` stages
    (and `dvc_yaml` instead of dvc.yaml's text, if given): enough for DVC to
    resolve the stages; no git, no code, no data."""
    dest.mkdir(parents=True, exist_ok=True)
    Repo.init(dest, no_scm=True).close()
    (dest / "dvc.yaml").write_text(dvc_yaml if dvc_yaml is not None else (REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["stages"] = {f"s{k}": "start" if k == 0 else f"s{k - 1}" for k in range(stages)}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def load_stages(root: Path) -> list[Stage]:
    raw = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    with Repo(root) as repo:
        found = []
        for stage in repo.index.stages:
            definition = raw[stage.name.split("@")[0]]
            found.append(
                Stage(
                    name=stage.name,
                    cmd=stage.cmd,
                    raw_cmd=definition.get("do", definition)["cmd"],
                    deps=tuple(d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)),
                    params=tuple(key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params),
                    outs=tuple(o.def_path for o in stage.outs),
                )
            )
    return found


def covers(dep: str, path: str) -> bool:
    """A dep covers a path if it is that file or a folder holding it."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


# --- (a) imported modules against deps ------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """The source file of project module `name`; None for any other name."""
    if name.split(".")[0] != PACKAGE:
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, module: str | None, is_package: bool) -> tuple[set[str], set[str]]:
    """(modules, maybe modules) that import statements anywhere in `tree` (functions
    included) load: `import a.b` loads a and a.b; `from a import b` loads a, and a.b
    if b is a module rather than a name defined in a."""
    modules, maybe = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            modules.add(base)
            maybe.update(f"{base}.{alias.name}" for alias in node.names)
    parents = {".".join(name.split(".")[:i]) for name in modules for i in range(1, name.count(".") + 1)}
    return modules | parents, maybe


def _does_nothing(path: Path) -> bool:
    """A package __init__ that holds at most a docstring runs no code when imported."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return path.name == "__init__.py" and all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body
    )


@cache
def imported_modules(script: Path) -> tuple[dict[str, Path], tuple[str, ...]]:
    """({dotted name: source file} of the project modules the script imports,
    transitively; project modules it imports that do not exist)."""
    modules, maybe = _imports(ast.parse(script.read_text(encoding="utf-8")), None, False)
    todo = [(name, True) for name in modules] + [(name, False) for name in maybe]
    found: dict[str, Path] = {}
    missing = set()
    while todo:
        name, required = todo.pop()
        path = module_file(name)
        if path is None and required and name.split(".")[0] == PACKAGE:
            missing.add(name)
        if name in found or path is None:
            continue
        found[name] = path
        modules, maybe = _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
        todo += [(name, True) for name in modules] + [(name, False) for name in maybe]
    return found, tuple(sorted(missing))


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def needed_files(script: Path) -> dict[str, str]:
    """{file relative to the repo: why it is needed} for the script and what it imports."""
    needed = {_relative(script): "the step's script"}
    for name, path in sorted(imported_modules(script)[0].items()):
        if name in UNTRACKED_MODULES or _does_nothing(path):
            continue
        needed[_relative(path)] = f"imports {name}"
        if name in MODULE_DATA:
            for data in sorted(REPO.glob(MODULE_DATA[name])):
                needed[_relative(data)] = f"{name} reads it"
    return needed


def _code_files_under(dep: str) -> list[str]:
    root = REPO / dep
    if root.is_file():
        return [dep]
    return sorted(
        p.relative_to(REPO).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    )


def module_dep_problems(stage: Stage) -> list[str]:
    needed = needed_files(REPO / stage.script)
    problems = [
        f"{stage.name}: imports {name}, which is no module of the project"
        for name in imported_modules(REPO / stage.script)[1]
    ]
    problems += [
        f"{stage.name}: {why} but no dep covers {path}"
        for path, why in needed.items()
        if not any(covers(dep, path) for dep in stage.deps)
    ]
    for dep in stage.deps:
        if not dep.startswith(("src/", "stages/")):
            continue
        unused = [path for path in _code_files_under(dep) if path not in needed]
        if unused == _code_files_under(dep):
            problems.append(f"{stage.name}: dep {dep} is code the step does not import (a stale dep)")
        elif unused:
            problems.append(f"{stage.name}: dep {dep} also covers {', '.join(unused)}, which the step does not import")
    return problems


# --- (b) params keys read against params listed ---------------------------------------------------


def _field_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _params_key(chain: list[str]) -> str | None:
    """`["data", "max_input_chars", "bit_length"]` -> "data.max_input_chars": the
    longest prefix of an attribute chain on Params that is a params key."""
    if chain[0] in DERIVED_KEYS:
        return DERIVED_KEYS[chain[0]]
    keys: list[str] = []
    model: type[BaseModel] | None = Params
    for attr in chain:
        if model is None or attr not in model.model_fields:
            break
        keys.append(attr)
        model = _field_model(model, attr)
    return ".".join(keys) or None


def params_reads(script: Path) -> tuple[set[str], list[str]]:
    """(params keys the script reads, misuses). The Params object that
    load_params() returns may only be the base of an attribute chain: a step
    passes sections or values on, never the whole object."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    holders = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", None) == "load_params"
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    keys, misuses = set(), []
    uses = [node for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in holders]
    for node in sorted(uses, key=lambda use: (use.lineno, use.col_offset)):
        if not isinstance(node.ctx, ast.Load):
            continue
        chain, top = [], node
        while isinstance(parent.get(top), ast.Attribute):
            top = parent[top]
            chain.append(top.attr)
        key = _params_key(chain) if chain else None
        viewed = _view_keys(parent.get(top), top, chain)
        if viewed is not None:
            keys |= viewed
            continue
        if not chain:
            misuses.append(f"line {node.lineno}: uses the whole Params `{node.id}`, not a section or key of it")
        elif key is None:
            misuses.append(f"line {node.lineno}: reads {node.id}.{chain[0]}, which is no params key")
        else:
            keys.add(key)
    return keys, misuses


def _view_keys(call: ast.AST | None, arg: ast.AST, chain: list[str]) -> set[str] | None:
    """The keys a `teacher_keys(params.teacher, NAME)` call reads (NAME a tuple of
    core/step_keys.py), or None where `arg` is not such a call's section."""
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) in SECTION_VIEWS):
        return None
    if chain != [SECTION_VIEWS[call.func.id]] or call.args[:1] != [arg] or len(call.args) != 2:
        return None
    names = call.args[1]
    if not isinstance(names, ast.Name) or not hasattr(step_keys, names.id):
        return None
    return {f"{chain[0]}.{key}" for key in getattr(step_keys, names.id)}


def cmd_reads(stage: Stage) -> set[str]:
    """Params interpolated into the command (`${train.launch}`); key/item are foreach's."""
    return {name for name in re.findall(r"\$\{\s*([\w.]+)\s*\}", stage.raw_cmd) if name not in ("key", "item")}


def key_covers(section: str, key: str) -> bool:
    """`data` covers `data` and `data.seed`, not `dataset`."""
    return key == section or key.startswith(section + ".")


def params_problems(stage: Stage) -> list[str]:
    reads, misuses = params_reads(REPO / stage.script)
    reads |= cmd_reads(stage)
    problems = [f"{stage.name}: {stage.script} {misuse}" for misuse in misuses]
    for key in sorted(reads):
        if not any(key_covers(listed, key) for listed in stage.params):
            problems.append(f"{stage.name}: reads params key {key} but its params: do not list it")
    for listed in stage.params:
        if any(key_covers(read, listed) for read in reads):
            continue
        inside = sorted(read for read in reads if key_covers(listed, read))
        if inside:  # a change to any other key of the section would re-run the step for nothing
            problems.append(f"{stage.name}: lists params {listed} but reads only {', '.join(inside)} of it")
        else:
            problems.append(f"{stage.name}: lists params key {listed} but never reads it (a stale param)")
    return problems
