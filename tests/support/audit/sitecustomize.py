"""Logs the files a stage script opens, renames and removes under the project.

tests/test_pipeline_contract.py puts this folder on PYTHONPATH while `dvc repro`
runs, so Python imports it at start-up in every process. It logs only in a
stage script (sys.argv[0] under stages/) and the processes that script starts
(they inherit BALDISTILL_AUDIT_STEP), one file per process: a header line with
the script's argv, then `KIND<TAB>PATH` lines, KIND one of read, write, mkdir,
remove (a rename removes its source and writes its target).
With BALDISTILL_AUDIT_STACKS_EVERY_S set, a step also writes every thread's
stack to stderr each that many seconds it runs (and goes on): a slow step shows
where it is before an outer time limit cuts the run.
Files written by native code (safetensors, for one) raise no audit event; they
land in folders the Python side also writes, so those folders still show up.
"""

import faulthandler
import importlib.machinery
import importlib.util
import os
import sys

LOG_DIR = os.environ.get("BALDISTILL_AUDIT_LOG")
ROOT = os.environ.get("BALDISTILL_AUDIT_ROOT", "")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _step_argv() -> str | None:
    inherited = os.environ.get("BALDISTILL_AUDIT_STEP")
    if inherited:
        return inherited
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(os.path.dirname(os.path.abspath(script))) == "stages" and script.endswith(".py"):
        return " ".join([os.path.relpath(os.path.abspath(script), ROOT), *sys.argv[1:]])
    return None


def _kind(mode, flags) -> str:
    if isinstance(mode, str):
        return "write" if any(c in mode for c in "wax+") else "read"
    return "write" if (flags or 0) & WRITE_FLAGS else "read"


def _install(step: str) -> None:
    os.environ["BALDISTILL_AUDIT_STEP"] = step  # the step's own subprocesses log under its name
    log = os.open(os.path.join(LOG_DIR, f"{os.getpid()}.tsv"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(log, f"step\t{step}\n".encode())

    def record(kind: str, path) -> None:
        if isinstance(path, int) or path is None:
            return  # an open file descriptor (os.fdopen): its path was logged when it was opened
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(ROOT + os.sep):
            os.write(log, f"{kind}\t{path}\n".encode())

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            record(_kind(args[1], args[2]), args[0])
        elif event == "os.rename":  # os.rename and os.replace: the source is gone, the target written
            record("remove", args[0])
            record("write", args[1])
        elif event == "os.remove":
            record("remove", args[0])
        elif event == "os.mkdir":
            record("mkdir", args[0])

    sys.addaudithook(hook)
    if every := os.environ.get("BALDISTILL_AUDIT_STACKS_EVERY_S"):
        faulthandler.dump_traceback_later(float(every), repeat=True)


def _run_shadowed_sitecustomize() -> None:
    """Python runs only the first sitecustomize on its path, and putting this
    folder first hides any other (a distribution's, a test harness's): run that
    one too, so the audited processes start as they would without the audit."""
    here = os.path.dirname(os.path.realpath(__file__))
    rest = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec and spec.loader and os.path.realpath(spec.origin or "") != os.path.realpath(__file__):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if LOG_DIR and ROOT:
    _step = _step_argv()
    if _step:
        _install(_step)
_run_shadowed_sitecustomize()
