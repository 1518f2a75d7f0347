"""TeacherClient: the one way the pipeline asks the teacher.

`run_batch(requests, desc) -> (responses, usage)` answers a batch in order.
The batch's distinct requests are reserved against the budget first (all or
nothing, before anything is sent: budget.py); cache hits return at once;
misses go to the teacher `concurrency` at a time (transport.py), each after
reserving its worst-case cost under the dollar cap (spending.py), and each
answer is stored durably in the cache, with its payment journalled, before
it counts as done, so a killed step loses no paid answer and a re-run
resumes (and counts what its killed run paid as paid, once). `usage` is what
this batch did (usage.py). With mode "batch" the misses go instead as OpenAI
Batch jobs, at price x batch_factor (batch.py).

The endpoint is reached only at the first cache miss (`connect`), so a run
answered wholly from the cache starts no server and needs no key. Stage
scripts open a client with `baldistill.teacher.endpoint.open_client`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from baldistill.teacher.batch import BatchJobs, export_if_asked
from baldistill.teacher.budget import CallBudget
from baldistill.teacher.cache import Claim, Claimant, Payment, RequestCache, key_material, request_key
from baldistill.teacher.rate_limit import RateLimiter
from baldistill.teacher.server_log import throughput
from baldistill.teacher.spending import DollarCap, Price, worst_case_usd
from baldistill.teacher.transport import RetryPolicy, Transport
from baldistill.teacher.usage import Usage

CLAIM_POLL_SECONDS = 0.2  # how often a request another process is asking checks for its answer


@dataclass(frozen=True)
class Request:
    """One chat completion; `sample` tells apart repeated draws of a sampled prompt."""

    messages: tuple[dict, ...]
    temperature: float
    max_tokens: int
    sample: int | None = None

    @classmethod
    def user(cls, prompt: str, temperature: float, max_tokens: int, sample: int | None = None) -> Request:
        return cls(({"role": "user", "content": prompt},), temperature, max_tokens, sample)

    def material(self, model: str) -> dict:
        """What the answer depends on: the cache key's input, stored beside the answer."""
        return key_material(model, list(self.messages), self.temperature, self.max_tokens, self.sample)

    def body(self, model: str) -> dict:
        """The chat-completion request body sent on the wire."""
        # A sampled request carries its sample index as the seed: servers that honour
        # `seed` (OpenAI, vLLM, llama.cpp) then make synthesis reproducible, and
        # repeated draws of one prompt stay distinct requests on the wire too.
        seed = {} if self.sample is None else {"seed": self.sample}
        return {
            "model": model,
            "messages": list(self.messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **seed,
        }


@dataclass(frozen=True)
class Response:
    key: str
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool

    @classmethod
    def of(cls, key: str, answer: dict, *, cached: bool) -> Response:
        return cls(
            key=key,
            content=answer["content"],
            finish_reason=answer.get("finish_reason"),
            prompt_tokens=int(answer.get("prompt_tokens", 0)),
            completion_tokens=int(answer.get("completion_tokens", 0)),
            cached=cached,
        )


class TeacherClient:
    """Budgeted, retrying, caching client; `connect()` returns (base_url, api_key)
    and is called once, at the first cache miss."""

    def __init__(
        self,
        *,
        connect: Callable[[], tuple[str, str]],
        model: str,
        cache: RequestCache,
        budget: int,
        concurrency: int = 1,
        timeout: float = 120.0,
        max_retries: int = 6,
        price: tuple[float, float] = (0.0, 0.0),
        api_key_env: str = "OPENAI_API_KEY",
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        server_log: Callable[[], str | None] | None = None,
        cap: DollarCap | None = None,
        payer: str | None = None,
        rate_limits: tuple[int | None, int | None] = (None, None),
        mode: str = "sync",
        batch_poll_seconds: float = 30.0,
        batch_factor: float = 0.5,
    ):
        self.model, self.cache, self.budget = model, cache, CallBudget(budget)
        self.concurrency, self.timeout, self.price, self.api_key_env = concurrency, timeout, Price(*price), api_key_env
        # Batch mode pays price x batch_factor for every answer: reservations, payments and usage alike.
        self.mode, self.batch_poll_seconds = mode, batch_poll_seconds
        if mode == "batch":
            self.price = Price(self.price.input_per_1m * batch_factor, self.price.output_per_1m * batch_factor)
        # The dollar cap (none by default) and who pays: the run step, so that a
        # re-run of a killed step can tell its own earlier payments (cache.py);
        # None: an anonymous client, whose payments no later client claims.
        self.cap, self.payer = cap or DollarCap(None), payer
        self._paid_keys: set[str] = set()  # counted as paid by this client: never again
        # (teacher.rpm, teacher.tpm), None: no limit; with none it still follows the
        # server's signals. One per client: a pause outlives the batch that met it.
        self.limiter = RateLimiter(*rate_limits)
        self.retry = RetryPolicy(max_retries, backoff, max_backoff)
        # Sync mode claims each miss before asking (cache.py), so a parallel run sharing
        # the cache waits for the answer instead of paying again. The lease bounds a
        # claim only where liveness cannot be checked (a claimant on another host).
        self._claimant = Claimant.this_process()
        self._claim_lease = (timeout + max_backoff) * (max_retries + 1)
        self._connect = connect
        self._server_log = server_log  # the local server's log so far (None: no such log)
        self.base_url: str | None = None  # None until the first cache miss reached the endpoint
        self._api_key: str | None = None

    def __repr__(self) -> str:
        return f"TeacherClient(base_url={self.base_url!r}, model={self.model!r}, budget={self.budget.limit})"

    def key(self, request: Request) -> str:
        return request_key(request.material(self.model))

    def run_batch(self, requests: Sequence[Request], desc: str = "teacher") -> tuple[list[Response], Usage]:
        """Answer `requests` in order, with a progress bar; returns (responses, this batch's usage).

        Raises BaldistillError if the batch would exceed the budget (nothing is
        sent) or at the first request that fails for good (the rest is
        cancelled; answers already stored stay stored, so a re-run resumes).
        """
        keys = [self.key(request) for request in requests]
        usage = Usage(input_per_1m=self.price.input_per_1m, output_per_1m=self.price.output_per_1m)
        usage.calls_budgeted = self.budget.reserve(keys)
        unique = dict(zip(keys, requests, strict=True))
        if not unique:
            return [], usage
        with tqdm(total=len(unique), desc=desc, unit="call") as bar:
            done = self._from_cache(unique, usage)
            bar.update(len(done))
            missing = {key: request for key, request in unique.items() if key not in done}
            if missing:
                started = time.perf_counter()
                if self.mode == "batch":
                    self._fetch_as_jobs(missing, done, usage, bar)
                else:
                    asyncio.run(self._fetch_all(missing, self._endpoint(), done, usage, bar))
                usage.seconds = time.perf_counter() - started
                log = self._server_log() if self._server_log else None
                usage.server = throughput(log) if log else None
        return [done[key] for key in keys], usage

    def export_used(self, path: str | os.PathLike) -> int:
        """Write every cache entry this client used, in first-use order, as JSONL (a DVC output)."""
        return self.cache.export_jsonl(path, self.budget.used_keys)

    def close_payments(self) -> None:
        """The step's outputs are written: what it paid is settled for good (a later run pays anew)."""
        if self.payer is not None:
            self.cache.close_payments(self.payer)

    def _from_cache(self, unique: dict[str, Request], usage: Usage) -> dict[str, Response]:
        """Cache hits; those this step paid for in a run that was killed count as paid, not cached."""
        own = {}
        if self.payer is not None:
            own = {k: p for k, p in self.cache.open_payments(self.payer, unique).items() if k not in self._paid_keys}
        self._paid_keys.update(own)
        done = {}
        for key in unique:
            hit = self.cache.get(key)
            if hit is None:
                continue
            done[key] = Response.of(key, hit, cached=key not in own)
            if key in own:
                usage.paid(hit, own[key].usd)
                self.cap.spent += own[key].usd
            else:
                self._count_cached(hit, usage)
        return done

    def _count_cached(self, answer: dict, usage: Usage) -> None:
        """An answer someone else paid for: used by this run (its price), not paid."""
        usage.cached += 1
        usage.used(self.price.cost(int(answer.get("prompt_tokens", 0)), int(answer.get("completion_tokens", 0))))

    def _endpoint(self) -> tuple[str, str]:
        """(base_url, api_key), reaching the endpoint on the first call."""
        if self.base_url is None:
            self.base_url, self._api_key = self._connect()
        return self.base_url, self._api_key

    def _fetch_as_jobs(self, missing: dict[str, Request], done: dict[str, Response], usage: Usage, bar: tqdm) -> None:
        """Batch mode: the misses as OpenAI Batch jobs (batch.py), each answer stored as it is read."""
        export_if_asked(missing, self.model)  # before the endpoint: an export needs none

        def arrived(key: str, answer: dict) -> None:
            done[key] = Response.of(key, answer, cached=False)
            self._paid_keys.add(key)
            bar.update(1)

        base_url, api_key = self._endpoint()
        with BatchJobs(
            base_url,
            api_key,
            cache=self.cache,
            model=self.model,
            price=self.price,
            cap=self.cap,
            payer=self.payer,
            poll_seconds=self.batch_poll_seconds,
            max_retries=self.retry.max_retries,
            timeout=self.timeout,
            api_key_env=self.api_key_env,
        ) as jobs:
            jobs.answer(missing, usage, arrived)

    async def _fetch_all(
        self, missing: dict[str, Request], endpoint: tuple[str, str], done: dict[str, Response], usage: Usage, bar: tqdm
    ) -> None:
        base_url, api_key = endpoint
        transport = Transport(
            base_url,
            api_key,
            concurrency=self.concurrency,
            timeout=self.timeout,
            retry=self.retry,
            api_key_env=self.api_key_env,
            limiter=self.limiter,
        )
        room = asyncio.Condition()  # woken when a reservation settles: a waiting request may now fit
        self._asking, self._claimed = len(missing), usage.calls_paid  # for the cap's refusal message
        # Every miss is claimed before any is sent, in order, so requests still go
        # out in the batch's order (one at a time at concurrency 1).
        claims = self.cache.claim_many(missing, self._claimant, self._claim_lease)
        async with transport:
            tasks = [
                asyncio.ensure_future(self._fetch(transport, key, request, usage, room, claims[key]))
                for key, request in missing.items()
            ]
            try:
                for finished in asyncio.as_completed(tasks):
                    response = await finished
                    done[response.key] = response
                    bar.update(1)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for key in missing.keys() - done.keys():  # unanswered: another process may ask
                    self.cache.release(key, self._claimant)
                raise

    async def _fetch(
        self, transport: Transport, key: str, request: Request, usage: Usage, room: asyncio.Condition, claim: Claim
    ) -> Response:
        """One miss: asked and paid for here once `claim` is granted; while another
        process sharing the cache holds it, that process's answer, counted as cached."""
        while not claim.granted and claim.answer is None:
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            claim = await asyncio.to_thread(self.cache.claim, key, self._claimant, self._claim_lease)
        if claim.answer is None:
            return await self._ask(transport, key, request, usage, room)
        self._count_cached(claim.answer, usage)
        return Response.of(key, claim.answer, cached=True)

    async def _ask(
        self, transport: Transport, key: str, request: Request, usage: Usage, room: asyncio.Condition
    ) -> Response:
        worst = worst_case_usd(request.messages, request.max_tokens, self.price)
        async with room:
            while not self.cap.reserve(worst):
                if not self.cap.holding:  # nothing in flight can free room
                    raise self.cap.refusal(worst, usage.calls_paid - self._claimed, self._asking)
                await room.wait()
        try:
            answer = await transport.ask(request.body(self.model), usage)
        except BaseException:
            self.cap.release(worst)
            async with room:
                room.notify_all()
            raise
        cost = self.price.cost(answer["prompt_tokens"], answer["completion_tokens"])
        payment = Payment(self.payer or "", self.model, answer["prompt_tokens"], answer["completion_tokens"], cost)
        # The answer and its payment are on disk before the reservation is settled:
        # until then no other request can be refused (and the batch torn down) with
        # this paid answer still in memory. The fsynced write runs in a worker thread
        # so it does not stall the event loop; a cancelled wait does not cancel it.
        if not await asyncio.to_thread(self.cache.put, key, request.material(self.model), answer, payment):
            answer = self.cache.get(key) or answer  # another process stored one first: it wins
        usage.paid(answer, cost)
        self._paid_keys.add(key)
        self.cap.settle(worst, cost)
        async with room:
            room.notify_all()
        return Response.of(key, answer, cached=False)
