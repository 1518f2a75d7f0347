"""What every stage script shares: load params, turn errors into one line and
exit code 2 (never a traceback for a user's mistake)."""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from baldistill.core.errors import BaldistillError

F = TypeVar("F", bound=Callable[..., object])


def entry_point(func: F) -> F:
    """Wrap a stage's main(): BaldistillError -> one stderr line, exit 2;
    Ctrl-C -> exit 130 (after the callee's cleanup ran); a quick exit after."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        # At exit, Python's shutdown runs full garbage collections over all that
        # torch, transformers and sympy brought in: 1.1-1.4 s per student step
        # here, 0.2 s with those objects frozen out of the collector first
        # (bench/step_exit.py). Frozen at exit only, so that a caller that goes
        # on running keeps its collector.
        atexit.register(gc.freeze)
        try:
            return func(*args, **kwargs)
        except BaldistillError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def stage_command(*arguments: str) -> Callable[[F], F]:
    """A stage script's main(): a click command taking `arguments` (e.g. STAGE
    PREVIOUS) positionally, wrapped in `entry_point`."""

    def wrap(func: F) -> F:
        command = entry_point(func)
        for name in reversed(arguments):
            command = click.argument(name)(command)
        return click.command()(command)

    return wrap
