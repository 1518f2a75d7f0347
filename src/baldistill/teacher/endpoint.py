"""The lazy endpoint: the teacher is reached at a step's first cache miss, not before.

`open_client(teacher, budget)` (a sync context manager, given the params
`teacher` section) opens the request cache and yields a TeacherClient. Only
when an answer is missing from the cache does it reach the endpoint: the
local llama.cpp server (teacher.base_url: local) then starts and lives until
the end of the `with` block; a remote URL then needs its API key. A run
answered wholly from the cache starts no server and needs no key:

    with open_client(params.teacher, budget=len(rows)) as client:
        rows, report = annotate(rows, stage, params.teacher, params.data.max_input_chars, info, client)
        client.export_used(here.teacher_responses("annotate"))

`max_usd` (budget.max_usd) caps dollars over the whole run; `spent_usd` is
what the run's earlier steps paid or may have paid (usage.py `usd_spent`),
and `payer` names this run step (journal.py `step_payer`) so that its
attempts are journalled under it and a re-run of a killed step counts them
once. They are closed, for good, when the block exits without an error:
write the step's outputs inside it.

The API key comes only from the environment variable named by
teacher.api_key_env and lives only in the client and its SDK object; it is
never stored in the cache, a report, a log line, an error message or a repr.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlparse

from baldistill.core.errors import BaldistillError
from baldistill.core.params import Teacher
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import TeacherClient
from baldistill.teacher.options import ClientOptions
from baldistill.teacher.server import LOCAL, teacher_endpoint
from baldistill.teacher.spending import DollarCap

LOCAL_KEY = "sk-local-no-key"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@contextmanager
def open_client(
    teacher: Teacher,
    budget: int,
    *,
    cache: RequestCache | None = None,
    backoff: float = 0.5,
    max_usd: float | None = None,
    spent_usd: float = 0.0,
    payer: str | None = None,
) -> Iterator[TeacherClient]:
    """A TeacherClient allowed `budget` distinct calls, reaching the endpoint at its first cache miss.

    `cache` defaults to the RequestCache at $BALDISTILL_TEACHER_CACHE or
    .baldistill/teacher-cache; `backoff` is the first retry delay in seconds
    (doubling, jittered).
    """
    with ExitStack() as stack:
        if cache is None:
            cache = stack.enter_context(RequestCache())
        log_reader: list = []  # the local server's log reader, once it runs

        def connect() -> tuple[str, str]:
            """Start (or reach) the endpoint, for the rest of the block."""
            if teacher.mode == "batch" and teacher.base_url == LOCAL:
                raise BaldistillError(
                    "teacher.mode: batch needs a Batch API (/v1/files, /v1/batches) and the local llama.cpp server "
                    "has none; use teacher.mode=sync, or export the requests for vLLM run_batch (README)"
                )
            base_url, _ = stack.enter_context(teacher_endpoint(teacher, on_log=log_reader.append))
            return base_url, _api_key(teacher, base_url)

        client = TeacherClient(
            connect=connect,
            cache=cache,
            budget=budget,
            options=ClientOptions.from_teacher(teacher, backoff=backoff),
            cap=DollarCap(max_usd, spent_usd),
            payer=payer,
            server_log=lambda: log_reader[0]() if log_reader else None,
        )
        yield client
        client.close_payments()


def _api_key(teacher: Teacher, base_url: str) -> str:
    # Our own llama.cpp server ignores keys: never hand it a real one from the environment.
    return LOCAL_KEY if teacher.base_url == LOCAL else resolve_api_key(teacher.api_key_env, base_url)


def resolve_api_key(env_name: str, base_url: str) -> str:
    """The key from $env_name; a dummy for loopback servers (which ignore it)."""
    key = os.environ.get(env_name)
    if key:
        return key
    if (urlparse(base_url).hostname or "") in _LOOPBACK:
        return LOCAL_KEY
    raise BaldistillError(f"teacher.api_key_env: environment variable {env_name} is not set (needed for {base_url})")
