"""Budgeted, retrying, caching client for an OpenAI-compatible teacher.

Why not the `openai` package's own retries: we must count every distinct
request against a hard budget, retry on failures the SDK treats as success
(malformed JSON, empty content), honour Retry-After dates, and store each
answer durably before it counts as done. So the SDK runs with max_retries=0
and this module owns the loop.

Budget: a client made with `budget=N` issues at most N distinct request keys
(cache hits included: they are "budgeted, not paid"); a retry of the same
request is the same call. A batch that would go over is refused before any
request of it is sent, so a step never half-spends past its allowance.

The API key comes only from the environment variable named by
teacher.api_key_env and lives only inside the SDK client object; it is never
stored in the cache, a report, a log line, an error message or a repr.

Use `open_client(params, budget)` (a sync context manager) in stage scripts:

    with open_client(params, budget=quota) as client:
        rows, report = annotate(rows, stage, params, info, client)
        client.export_used("teacher-responses.jsonl")
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import openai
from tqdm import tqdm

from .cache import RequestCache, key_material, request_key
from .errors import BaldistillError
from .server import LOCAL, teacher_endpoint

FATAL_HINTS = {
    400: "the server rejected the request; check teacher.model and teacher.max_tokens",
    401: "check the API key in ${env}",
    403: "the API key in ${env} is not allowed to use this model",
    404: "check teacher.base_url and teacher.model",
}
MAX_RETRY_AFTER = 300.0
LOCAL_KEY = "sk-local-no-key"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class Request:
    """One chat completion; `sample` tells apart repeated draws of a sampled prompt."""

    messages: tuple[dict, ...]
    temperature: float
    max_tokens: int
    sample: int | None = None

    @classmethod
    def user(cls, prompt: str, temperature: float, max_tokens: int, sample: int | None = None) -> "Request":
        return cls(({"role": "user", "content": prompt},), temperature, max_tokens, sample)


@dataclass(frozen=True)
class Response:
    key: str
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool


@dataclass
class Usage:
    """The step's ledger of teacher calls; `estimated_cost_usd` uses teacher.price."""

    calls_budgeted: int = 0
    calls_paid: int = 0
    cached: int = 0
    failed: int = 0
    http_attempts: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    @property
    def estimated_cost_usd(self) -> float:
        return (self.prompt_tokens * self.input_per_1m + self.completion_tokens * self.output_per_1m) / 1e6

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        price = {"input_per_1m": data.pop("input_per_1m"), "output_per_1m": data.pop("output_per_1m")}
        return {**data, "estimated_cost_usd": round(self.estimated_cost_usd, 6), "price": price}

    def snapshot(self) -> "Usage":
        return Usage(**asdict(self))

    def __sub__(self, before: "Usage") -> "Usage":
        counts = {f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self) if f.name not in (
            "input_per_1m", "output_per_1m")}
        return Usage(**counts, input_per_1m=self.input_per_1m, output_per_1m=self.output_per_1m)


class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's wish in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class TeacherClient:
    """Async client: bounded concurrency, per-request timeout, retries, cache, budget."""

    def __init__(
        self,
        *,
        base_url: str | None,
        model: str,
        api_key: str | None,
        cache: RequestCache,
        budget: int,
        concurrency: int = 1,
        timeout: float = 120.0,
        max_retries: int = 6,
        price: tuple[float, float] = (0.0, 0.0),
        api_key_env: str = "OPENAI_API_KEY",
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        connect: Callable[[], tuple[str, str]] | None = None,
    ):
        """`connect`, if given, returns (base_url, api_key) on the first cache
        miss: a run answered wholly from the cache starts no server and needs no key."""
        self.base_url, self.model, self.cache = base_url, model, cache
        self._connect = connect
        self.budget, self.concurrency, self.timeout, self.max_retries = budget, concurrency, timeout, max_retries
        self.api_key_env, self.backoff, self.max_backoff = api_key_env, backoff, max_backoff
        self._api_key = api_key
        self.usage = Usage(input_per_1m=price[0], output_per_1m=price[1])
        self._budgeted: set[str] = set()
        self.used_keys: list[str] = []  # in first-use order, for export_used

    def __repr__(self) -> str:
        return f"TeacherClient(base_url={self.base_url!r}, model={self.model!r}, budget={self.budget})"

    # ---- keys and budget -------------------------------------------------

    def material(self, request: Request) -> dict:
        return key_material(self.model, list(request.messages), request.temperature, request.max_tokens, request.sample)

    def key(self, request: Request) -> str:
        return request_key(self.material(request))

    def reserve(self, keys: Sequence[str]) -> None:
        """Count `keys` against the budget, all or nothing."""
        new = [k for k in dict.fromkeys(keys) if k not in self._budgeted]
        if len(self._budgeted) + len(new) > self.budget:
            raise BaldistillError(
                f"teacher budget exceeded: {len(new)} new call(s) requested, {len(self._budgeted)} of "
                f"{self.budget} already used; raise budget.total or lower the quota"
            )
        self._budgeted.update(new)
        self.used_keys.extend(new)
        self.usage.calls_budgeted += len(new)

    def export_used(self, path: str | os.PathLike) -> int:
        """Write every cache entry this client used as JSONL (for a DVC output)."""
        return self.cache.export_jsonl(path, self.used_keys)

    # ---- running a batch -------------------------------------------------

    async def run(
        self, requests: Sequence[Request], on_done: Callable[[Response], None] | None = None
    ) -> list[Response]:
        """Answer `requests` in order; each answer is cached as soon as it arrives.

        Cache hits return at once; misses go out `concurrency` at a time. The
        first non-retryable failure cancels the rest and raises (answers already
        stored stay stored, so a re-run resumes).
        """
        keys = [self.key(r) for r in requests]
        self.reserve(keys)
        unique = dict(zip(keys, requests, strict=True))
        done: dict[str, Response] = {}
        for key in unique:
            hit = self.cache.get(key)
            if hit is not None:
                done[key] = _response(key, hit, cached=True)
                self.usage.cached += 1
                if on_done:
                    on_done(done[key])
        missing = [k for k in unique if k not in done]
        if missing:
            await self._fetch_all(missing, unique, done, on_done)
        return [done[k] for k in keys]

    async def _fetch_all(self, missing, unique, done, on_done) -> None:
        if self.base_url is None and self._connect is not None:
            self.base_url, self._api_key = self._connect()
        semaphore = asyncio.Semaphore(self.concurrency)
        sdk = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout)
        try:
            tasks = [asyncio.ensure_future(self._fetch(sdk, semaphore, k, unique[k])) for k in missing]
            try:
                for finished in asyncio.as_completed(tasks):
                    response = await finished
                    done[response.key] = response
                    if on_done:
                        on_done(response)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await sdk.close()

    async def _fetch(self, sdk, semaphore, key: str, request: Request) -> Response:
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.usage.retries += 1
            try:
                async with semaphore:
                    self.usage.http_attempts += 1
                    body = await asyncio.wait_for(self._post(sdk, request), self.timeout)
                answer = _parse(body)
            except (_Transient, asyncio.TimeoutError) as exc:
                transient = isinstance(exc, _Transient)
                last = str(exc) if transient else f"no answer within teacher.timeout={self.timeout:g}s"
                if attempt < self.max_retries:
                    await asyncio.sleep(self._delay(attempt, exc.retry_after if transient else None))
                continue
            # The fsynced write runs in a worker thread so it does not stall the event
            # loop (and every other call in flight); the call still counts as done only
            # once its answer is on disk, and a cancelled wait does not cancel the write.
            if not await asyncio.to_thread(self.cache.put, key, self.material(request), answer):
                answer = self.cache.get(key) or answer  # another process stored one first: it wins
            self.usage.calls_paid += 1
            self.usage.prompt_tokens += answer["prompt_tokens"]
            self.usage.completion_tokens += answer["completion_tokens"]
            return _response(key, answer, cached=False)
        self.usage.failed += 1
        raise BaldistillError(
            f"teacher request failed after {self.max_retries + 1} attempt(s) at {self.base_url}: {self._scrub(last)}"
        )

    async def _post(self, sdk, request: Request) -> str:
        """One HTTP attempt; returns the raw body, or raises _Transient / BaldistillError."""
        try:
            # A sampled request carries its sample index as the seed: servers that honour
            # `seed` (OpenAI, vLLM, llama.cpp) then make synthesis reproducible, and
            # repeated draws of one prompt stay distinct requests on the wire too.
            extra = {} if request.sample is None else {"seed": request.sample}
            raw = await sdk.chat.completions.with_raw_response.create(
                model=self.model,
                messages=list(request.messages),
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                **extra,
            )
            return raw.text
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in (408, 409, 429) or status >= 500:
                retry_after = retry_after_seconds(exc.response.headers.get("retry-after"))
                raise _Transient(f"HTTP {status}", retry_after) from None
            self.usage.failed += 1
            raise BaldistillError(self._fatal_message(status, exc)) from None
        except openai.APIConnectionError as exc:  # includes the SDK's own timeout
            raise _Transient(f"connection error ({type(exc).__name__}: {exc})") from None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After if the server gave one, else exponential backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _fatal_message(self, status: int, exc: openai.APIStatusError) -> str:
        hint = FATAL_HINTS.get(status, "the server refused the request").replace("${env}", f"${self.api_key_env}")
        detail = " ".join(_server_message(exc).split())[:200]
        return self._scrub(f"teacher refused the request: HTTP {status} from {self.base_url}: {detail} ({hint})")

    def _scrub(self, text: str) -> str:
        text = " ".join(str(text).split())
        return text.replace(self._api_key, "***") if self._api_key else text


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return str(body or exc.message)


def _parse(text: str) -> dict:
    """The answer fields of a chat-completion body; malformed or empty is transient."""
    try:
        obj = json.loads(text)
        choice = obj["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Transient("malformed JSON in the response") from None
    if not isinstance(content, str) or not content.strip():
        raise _Transient("empty content in the response")
    usage = obj.get("usage") or {}
    return {
        "content": content,
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def _response(key: str, answer: dict, *, cached: bool) -> Response:
    return Response(
        key=key,
        content=answer["content"],
        finish_reason=answer.get("finish_reason"),
        prompt_tokens=int(answer.get("prompt_tokens", 0)),
        completion_tokens=int(answer.get("completion_tokens", 0)),
        cached=cached,
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110); None if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def run_requests(client: TeacherClient, requests: Sequence[Request], desc: str = "teacher") -> list[Response]:
    """Sync wrapper: run a batch with a tqdm bar; answers are cached as they arrive."""
    with tqdm(total=len(set(map(client.key, requests))), desc=desc, unit="call", disable=False) as bar:
        return asyncio.run(client.run(requests, on_done=lambda _response: bar.update(1)))


def resolve_api_key(env_name: str, base_url: str) -> str:
    """The key from $env_name; a dummy for loopback servers (which ignore it)."""
    key = os.environ.get(env_name)
    if key:
        return key
    if (urlparse(base_url).hostname or "") in _LOOPBACK:
        return LOCAL_KEY
    raise BaldistillError(f"teacher.api_key_env: environment variable {env_name} is not set (needed for {base_url})")


@contextmanager
def open_client(
    params, budget: int, *, cache: RequestCache | None = None, backoff: float = 0.5
) -> Iterator[TeacherClient]:
    """Open the cache and yield a TeacherClient that reaches the teacher endpoint
    on its first cache miss.

    Sync context manager; the local llama.cpp server (teacher.base_url: local)
    starts at the first miss and lives until the end of the `with` block. `cache` defaults to the
    RequestCache at $BALDISTILL_TEACHER_CACHE or .baldistill/teacher-cache;
    `backoff` is the first retry delay in seconds (doubling, jittered).
    """
    teacher = params.teacher
    own_cache = cache is None
    with ExitStack() as endpoint:

        def connect() -> tuple[str, str]:
            """Start (or reach) the endpoint on the first cache miss, for the rest of the block."""
            base_url, _ = endpoint.enter_context(teacher_endpoint(teacher))
            # Our own llama.cpp server ignores keys: never hand it a real one from the environment.
            return base_url, LOCAL_KEY if teacher.base_url == LOCAL else resolve_api_key(teacher.api_key_env, base_url)

        cache = cache or RequestCache()
        try:
            yield TeacherClient(
                base_url=None,
                model=teacher.model,
                api_key=None,
                connect=connect,
                cache=cache,
                budget=budget,
                concurrency=teacher.concurrency,
                timeout=teacher.timeout,
                max_retries=teacher.max_retries,
                price=(teacher.price.input_per_1m, teacher.price.output_per_1m),
                api_key_env=teacher.api_key_env,
                backoff=backoff,
            )
        finally:
            if own_cache:
                cache.close()
