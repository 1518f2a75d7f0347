"""The teacher endpoint: a remote OpenAI-compatible URL, or a local llama.cpp server.

With teacher.base_url == "local" the default offline teacher (a GGUF served by
llama-cpp-python's OpenAI-compatible server) runs on 127.0.0.1 for exactly as
long as the `with` block. It must never outlive us: we stop it on normal exit,
on exceptions, on Ctrl-C and on SIGTERM (turned into SystemExit while the
block runs), and on Linux the kernel sends it SIGTERM if we die by SIGKILL
(PR_SET_PDEATHSIG), so no orphan keeps a core busy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from baldistill.core import assets
from baldistill.core.errors import BaldistillError

LOCAL = "local"
_PR_SET_PDEATHSIG = 1


@contextmanager
def teacher_endpoint(teacher, on_log: Callable[[Callable[[], str]], None] | None = None) -> Iterator[tuple[str, str]]:
    """Yield (base_url, model) for `teacher` (the params.teacher section).

    For the local server, `on_log` (if given) receives a function that reads the
    server's log so far (llama.cpp prints each completion's timings there)."""
    if teacher.base_url != LOCAL:
        yield teacher.base_url, teacher.model
        return
    local = teacher.local
    model_path = assets.path_of(local.model_file)
    with local_server(model_path, teacher.model, local.threads, local.ctx, local.startup_timeout, on_log) as base_url:
        yield base_url, teacher.model


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(
    model_path: Path, alias: str, port: int, threads: int, ctx: int, extra_args: Sequence[str] = ()
) -> list[str]:
    """The llama_cpp.server command line; `extra_args` are more of its options (e.g. --n_ubatch 256)."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(ctx),
        *extra_args,
    ]


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: `env` as given, or ours with OMP_WAIT_POLICY=PASSIVE unless
    it is set. llama.cpp's OpenMP threads otherwise spin while they wait, and beside any
    other CPU work the teacher ran 6x slower (43.5 against 7.0 s per annotation call on
    a shared machine; docs/benchmarks.md, "The local teacher's options")."""
    if env is not None:
        return dict(env)
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY") or "PASSIVE"}


@contextmanager
def local_server(
    model_path: Path,
    alias: str,
    threads: int,
    ctx: int,
    startup_timeout: float,
    on_log: Callable[[Callable[[], str]], None] | None = None,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run llama_cpp.server on a free loopback port; yield its /v1 base URL.
    `on_log` gets a reader of the server's log (see teacher_endpoint); `extra_args`
    go on its command line and `env` replaces its environment (`server_env`)."""
    _require_llama_cpp()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with (
        tempfile.NamedTemporaryFile(mode="w+b", prefix="baldistill-teacher-", suffix=".log") as log,
        _sigterm_as_exit(),
    ):
        process = subprocess.Popen(
            server_command(model_path, alias, port, threads, ctx, extra_args),
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            _wait_until_ready(process, base_url, startup_timeout, log)
            if on_log is not None:
                on_log(lambda: _read_log(log.name))
            try:
                yield base_url
            except Exception as exc:
                if process.poll() is None:
                    raise
                # The client saw only "connection error"; the server's end says why.
                raise BaldistillError(
                    f"local teacher server died ({_ended(process.returncode)}) while serving: {_tail(log)}"
                ) from exc
        finally:
            stop(process)


def _require_llama_cpp() -> None:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        raise BaldistillError(
            "teacher.base_url is 'local' but llama-cpp-python[server] is not installed; "
            "run pip install 'baldistill[local]' or set teacher.base_url to an OpenAI-compatible URL"
        ) from None


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_ready(process: subprocess.Popen, base_url: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BaldistillError(
                f"local teacher server exited with code {process.returncode} during startup: {_tail(log)}"
            )
        if _answers(base_url + "/models"):
            return
        time.sleep(0.25)
    raise BaldistillError(
        f"local teacher server did not answer {base_url}/models within "
        f"teacher.local.startup_timeout={timeout:g}s: {_tail(log)}"
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _ended(returncode: int) -> str:
    """ "exit code 1", or "signal SIGILL" for a process a signal killed."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def _read_log(path: str) -> str:
    # A separate open file: seeking the server's own handle would move its write offset.
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def _tail(log, lines: int = 5) -> str:
    """The server's last output lines, joined into one line for the error message."""
    text = _read_log(log.name)
    last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(last) or "(no output)"


def stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While the server runs, SIGTERM raises SystemExit so `finally` blocks stop it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
