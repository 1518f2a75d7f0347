"""TeacherClient: the one way the pipeline asks the teacher.

`run_batch(requests, desc) -> (responses, usage)` answers a batch in order.
The batch's distinct requests are reserved against the step's call budget
first (all or nothing, before anything is sent: budget.py); cache hits return
at once; misses go to the teacher `concurrency` at a time (transport.py).
Every attempt, a retry included, reserves its worst case under the dollar cap
and is journalled before it is sent, and is settled when its fate is known
(payments.py); each answer is stored durably in the cache in the transaction
that settles its bill, so a killed step loses no paid answer, and a re-run
resumes (and counts what its killed run paid, or may have paid, once). `usage`
is what this batch did (usage.py). With mode "batch" the misses go instead as
OpenAI Batch jobs, at price x batch_factor (batch.py), through the same
payments.

The endpoint is reached only at the first cache miss (`connect`), so a run
answered wholly from the cache starts no server and needs no key. Stage
scripts open a client with `baldistill.teacher.endpoint.open_client`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

from tqdm import tqdm

from baldistill.teacher.batch import BatchJobs
from baldistill.teacher.batch_files import export_if_asked
from baldistill.teacher.budget import CallBudget
from baldistill.teacher.cache import RequestCache, request_key
from baldistill.teacher.claims import Claim, Claimant
from baldistill.teacher.messages import Request, Response
from baldistill.teacher.options import ClientOptions
from baldistill.teacher.payments import Attempt, Payments
from baldistill.teacher.rate_limit import RateLimiter
from baldistill.teacher.server_log import throughput
from baldistill.teacher.spending import DollarCap, worst_case_usd
from baldistill.teacher.transport import Transport
from baldistill.teacher.usage import Usage

__all__ = ["Request", "Response", "TeacherClient"]  # Request and Response live in messages.py

CLAIM_POLL_SECONDS = 0.2  # how often a request another process is asking checks for its answer


class TeacherClient:
    """Budgeted, retrying, caching, paying client; `connect()` returns (base_url, api_key)
    and is called once, at the first cache miss. `budget`: the step's distinct calls;
    `cap`: the dollar cap (none by default); `payer`: who pays (journal.py `step_payer`;
    None: an anonymous client, whose payments no later client claims); `server_log`: the
    local server's log so far (None: no such log)."""

    def __init__(
        self,
        *,
        connect: Callable[[], tuple[str, str]],
        cache: RequestCache,
        budget: int,
        options: ClientOptions,
        cap: DollarCap | None = None,
        payer: str | None = None,
        server_log: Callable[[], str | None] | None = None,
    ):
        self.options, self.model, self.cache, self.budget = options, options.model, cache, CallBudget(budget)
        self.price, self.cap, self.payer = options.paid_price, cap or DollarCap(None), payer
        self.payments = Payments(cache, self.cap, self.price, self.model, payer)
        # (teacher.rpm, teacher.tpm), None: no limit; with none it still follows the
        # server's signals. One per client: a pause outlives the batch that met it.
        self.limiter = RateLimiter(options.rpm, options.tpm)
        # Sync mode claims each miss before asking (claims.py), so a parallel run sharing
        # the cache waits for the answer instead of paying again.
        self._claimant = Claimant.this_process()
        self._connect, self._server_log = connect, server_log
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
        self.payments.resume(usage)
        with tqdm(total=len(unique), desc=desc, unit="call") as bar:
            done = self._from_cache(unique, usage)
            bar.update(len(done))
            missing = {key: request for key, request in unique.items() if key not in done}
            if missing:
                started = time.perf_counter()
                if self.options.mode == "batch":
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
            self.cache.journal.close(self.payer)

    def _from_cache(self, unique: dict[str, Request], usage: Usage) -> dict[str, Response]:
        """Cache hits; those this step paid for in a run that was killed count as paid (their bill
        is in `usage` already: Payments.resume), not cached."""
        done = {}
        for key in unique:
            hit = self.cache.get(key)
            if hit is None:
                continue
            own = key in self.payments.resumed_answers
            self.payments.resumed_answers.discard(key)  # a paid call once, however often asked
            done[key] = Response.of(key, hit, cached=not own)
            if own:
                usage.answered(done[key].failure)
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
            usage.answered(done[key].failure)
            bar.update(1)

        base_url, api_key = self._endpoint()
        with BatchJobs(base_url, api_key, payments=self.payments, options=self.options) as jobs:
            jobs.answer(missing, usage, arrived)

    async def _fetch_all(
        self, missing: dict[str, Request], endpoint: tuple[str, str], done: dict[str, Response], usage: Usage, bar: tqdm
    ) -> None:
        base_url, api_key = endpoint
        options = self.options
        transport = Transport(
            base_url,
            api_key,
            concurrency=options.concurrency,
            timeout=options.timeout,
            retry=options.retry,
            api_key_env=options.api_key_env,
            limiter=self.limiter,
        )
        room = asyncio.Condition()  # woken when a reservation settles: a waiting attempt may now fit
        progress = _Progress(len(missing), usage.calls_paid)  # for the cap's refusal message
        # Every miss is claimed before any is sent, in order, so requests still go
        # out in the batch's order (one at a time at concurrency 1).
        claims = self.cache.claims.claim_many(missing, self._claimant, options.claim_lease)
        async with transport:
            tasks = [
                asyncio.ensure_future(
                    self._fetch(
                        transport, key, request, usage, _Meter(self, key, request, usage, room, progress), claims[key]
                    )
                )
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
                    self.cache.claims.release(key, self._claimant)
                raise

    async def _fetch(
        self, transport: Transport, key: str, request: Request, usage: Usage, meter: _Meter, claim: Claim
    ) -> Response:
        """One miss: asked and paid for here once `claim` is granted; while another
        process sharing the cache holds it, that process's answer, counted as cached."""
        while not claim.granted and claim.answer is None:
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            claim = await asyncio.to_thread(self.cache.claims.claim, key, self._claimant, self.options.claim_lease)
        if claim.answer is not None:
            self._count_cached(claim.answer, usage)
            return Response.of(key, claim.answer, cached=True)
        kept = await transport.ask(request.body(self.model), usage, meter)
        # The answer is on disk, in the transaction that settles its bill, before it counts: the
        # fsynced write runs in a worker thread so other attempts go on meanwhile, and a cancelled
        # wait does not cancel it (a re-run then finds its bill open and counts it: payments.py).
        material = request.material(self.model)
        answer = await asyncio.to_thread(self.payments.write_kept, kept.ticket, material, kept.answer, kept.priced)
        self.payments.count_kept(kept.ticket, kept.answer, kept.priced, usage)
        response = Response.of(key, answer, cached=False)
        usage.answered(response.failure)
        await meter.wake()
        return response


class _Progress:
    """How many of a batch's misses were asked, and the paid calls before it (the cap's refusal says so)."""

    def __init__(self, asking: int, paid_before: int):
        self.asking, self.paid_before = asking, paid_before


class _Meter:
    """One request's attempts (transport.py AttemptMeter): each reserves its worst case under the
    cap, waiting while others in flight may free room, and is journalled before it is sent."""

    def __init__(
        self,
        client: TeacherClient,
        key: str,
        request: Request,
        usage: Usage,
        room: asyncio.Condition,
        progress: _Progress,
    ):
        self.payments, self.key, self.usage, self.room, self.progress = client.payments, key, usage, room, progress
        self.worst = worst_case_usd(request.messages, request.max_tokens, client.price)

    async def before(self) -> Attempt:
        cap = self.payments.cap
        async with self.room:
            while not cap.reserve(self.worst):
                if not cap.holding:  # nothing in flight can free room
                    answered = self.usage.calls_paid - self.progress.paid_before
                    raise cap.refusal(self.worst, answered, self.progress.asking)
                await self.room.wait()
        try:  # durable before it is sent; in a worker thread, so other attempts go on during the fsync
            (attempt,) = await asyncio.to_thread(self.payments.open, [(self.key, self.worst)])
        except BaseException:  # not sent (if the write landed, the journal counts it at its worst case: never less)
            cap.release(self.worst)
            raise
        return attempt

    async def billed(self, attempt: Attempt, answer: dict) -> None:
        await asyncio.to_thread(self.payments.write_billed, attempt, answer)
        self.payments.count_billed(attempt, answer, self.usage)
        await self.wake()

    async def unbilled(self, attempt: Attempt) -> None:
        await asyncio.to_thread(self.payments.write_unbilled, [attempt])
        self.payments.count_unbilled([attempt], self.usage)
        await self.wake()

    async def lost(self, attempt: Attempt) -> None:
        self.unknown(attempt)
        await self.wake()  # it keeps its worst case, but a waiting attempt may now be the only one left

    def unknown(self, attempt: Attempt) -> None:
        self.payments.unknown(attempt, self.usage)

    async def wake(self) -> None:
        async with self.room:
            self.room.notify_all()
