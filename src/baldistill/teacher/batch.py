"""The OpenAI Batch API (teacher.mode: batch): a step's cache misses as one job, at teacher.price x batch_factor.

The misses are uploaded as one JSONL file (/v1/files, purpose "batch";
batch_files.py) and a job is created for it (/v1/batches, completion window
24h). Before the job is created, each of its requests is an attempt reserved
under budget.max_usd at its worst case (at batch price; a job that would pass
the cap is refused whole, with one line, before the upload) and journalled as
unknown, fsynced (payments.py): from then on a kill -9 leaves them counted.

Creating a job is the one call that would pay twice if repeated blindly. An
answer that proves no job was made (429, like 408 and 409) is retried after
its Retry-After, at most teacher.max_retries times. An ambiguous failure (a
5xx, a dropped connection) first looks the job up by its metadata, which
names the step's content key (the sha256 of its request keys) and the file
uploaded, and only creates another when the server has none: never two jobs
for the same requests. The job's id is recorded in the cache before anything
waits on it, so a step killed while the job runs polls the same job when run
again (only the instant between the server creating the job and that fsynced
write is not covered: a kill there leaves a job the re-run does not know of;
its requests stay journalled at their worst case).

The job is polled every teacher.batch_poll_seconds. When it ends, each line of
its output file is stored in the response cache with its bill, exactly as a
synchronous answer is (payments.py); an answer without text is asked once
more, then kept as it is (messages.py). Lines in its error file, and requests
a failed or expired job never answered, were not billed and go again in a new
job of their own, at most teacher.max_retries times; answered ones never do.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import openai
from tqdm import tqdm

from baldistill.core.errors import BaldistillError
from baldistill.teacher.batch_files import ENDPOINT, EXPORT_ENV, LineResult, job_line, parse_results
from baldistill.teacher.messages import Request
from baldistill.teacher.options import ClientOptions
from baldistill.teacher.payments import Attempt, Payments
from baldistill.teacher.spending import worst_case_usd
from baldistill.teacher.transport import FATAL_HINTS, retry_after_seconds, scrub
from baldistill.teacher.usage import Usage

__all__ = ["EXPORT_ENV", "BatchJobs"]
TERMINAL = ("completed", "failed", "expired", "cancelled")
METADATA_KEY = "baldistill_requests"  # the job's content key: which requests it carries
NO_JOB_MADE = (408, 409, 429)  # answers to a create that prove no job was made: safe to retry
NO_BATCH_API = (
    "does teacher.base_url serve the Batch API (/v1/files, /v1/batches)? vLLM and llama.cpp servers do not: "
    "use teacher.mode=sync, or vLLM run_batch (README)"
)


def content_key(keys: list[str]) -> str:
    """What names a job's requests, whatever their order."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


class BatchJobs:
    """Batch jobs for one client's misses; use as `with BatchJobs(...) as jobs: jobs.answer(...)`."""

    def __init__(self, base_url: str, api_key: str, *, payments: Payments, options: ClientOptions):
        self.base_url, self.payments, self.options = base_url, payments, options
        self.cache, self.model, self.payer = payments.cache, payments.model, payments.payer
        self.max_jobs = options.max_retries + 1  # the first job and a new one per retry of what it left unanswered
        self._api_key = api_key  # only to scrub it from error messages
        # The SDK retries the calls that are safe to repeat (upload, poll, list, download); creating
        # a job is sent once per try (`_create`), since a repeat after a lost reply could pay for two.
        self._sdk = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=options.max_retries, timeout=options.timeout
        )

    def __repr__(self) -> str:
        return f"BatchJobs(base_url={self.base_url!r})"

    def __enter__(self) -> BatchJobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sdk.close()

    def answer(self, missing: dict[str, Request], usage: Usage, on_answer: Callable[[str, dict], None]) -> None:
        """Answer `missing` (key -> request) through Batch jobs, resuming this payer's unfinished ones
        first; `on_answer(key, answer)` follows each stored answer. Raises BaldistillError when the
        cap refuses a job or requests are still unanswered after the last job (answers stay stored)."""
        todo, empties = dict(missing), Counter()
        for batch_id in self._resumable(todo):
            tqdm.write(f"teacher: resuming Batch job {batch_id}", file=sys.stderr)
            usage.batch_ids.append(batch_id)
            resumed = {k: self.payments.resumed_unknown[k].pop(0) for k in todo if self.payments.resumed_unknown.get(k)}
            self._finish(batch_id, todo, usage, on_answer, resumed, empties)
        jobs, why = 0, ""
        while todo and jobs < self.max_jobs:
            attempts = self._reserve(todo)
            batch_id = self._submit(todo, usage, attempts, again=jobs > 0)
            jobs += 1
            why = self._finish(batch_id, todo, usage, on_answer, attempts, empties)
        if todo:
            raise BaldistillError(
                scrub(
                    f"teacher Batch API: {len(todo)} of {len(missing)} request(s) not answered after {jobs} job(s) "
                    f"at {self.base_url} (last: {why}); the answers received are stored, a re-run asks only the rest",
                    self._api_key,
                )
            )

    def _resumable(self, todo: dict[str, Request]) -> list[str]:
        """This payer's recorded jobs that carry requests still missing (a killed run's)."""
        if self.payer is None:  # an anonymous client's jobs are nobody's to resume
            return []
        open_jobs = self.cache.jobs.open(self.payer, self.base_url)
        return [batch_id for batch_id, keys in open_jobs if todo.keys() & set(keys) and self._known(batch_id)]

    def _known(self, batch_id: str) -> bool:
        """Whether the server still knows a recorded job; one it does not (404) is closed, not polled forever."""
        if self._call("poll the job", functools.partial(self._sdk.batches.retrieve, batch_id), gone=False) is False:
            self.cache.jobs.close(batch_id, "unknown to the server")
            return False
        return True

    def _reserve(self, todo: dict[str, Request]) -> dict[str, Attempt]:
        """Each request's worst case held under the cap, all or nothing, then journalled, before the upload."""
        cap, price = self.payments.cap, self.payments.price
        worst = {key: worst_case_usd(r.messages, r.max_tokens, price) for key, r in todo.items()}
        held = []
        for amount in worst.values():
            if not cap.reserve(amount):
                for back in held:
                    cap.release(back)
                raise BaldistillError(
                    f"budget.max_usd: a Batch job of {len(todo)} teacher request(s) may cost up to "
                    f"${sum(worst.values()):.6f} at batch price and ${cap.spent:.6f} of the ${cap.limit:.6f} cap "
                    "is spent; raise budget.max_usd (answers paid so far are kept)"
                )
            held.append(amount)
        try:
            return {a.key: a for a in self.payments.open(list(worst.items()))}
        except BaseException:
            for back in held:
                cap.release(back)
            raise

    def _submit(self, todo: dict[str, Request], usage: Usage, attempts: dict[str, Attempt], *, again: bool) -> str:
        """Upload `todo` and create its job; the job is recorded durably before this returns."""
        lines = "".join(json.dumps(job_line(key, r.body(self.model))) + "\n" for key, r in todo.items())
        try:
            upload = self._call(
                "upload the requests",
                functools.partial(self._sdk.files.create, file=("batch_in.jsonl", lines.encode()), purpose="batch"),
            )
            job = self._create(upload.id, content_key(list(todo)), usage)
        except BaseException:
            self.payments.unbilled(list(attempts.values()), usage)  # nothing was submitted: nothing billed
            attempts.clear()
            raise
        self.cache.jobs.add(job.id, self.payer or "", self.base_url, todo)
        usage.batch_ids.append(job.id)
        usage.http_attempts += len(todo)
        usage.retries += len(todo) if again else 0
        tqdm.write(f"teacher: Batch job {job.id} submitted with {len(todo)} request(s)", file=sys.stderr)
        return job.id

    def _create(self, file_id: str, requests: str, usage: Usage) -> Any:
        """The job for `file_id`: created, or found when an ambiguous failure may have created it."""
        create = functools.partial(
            self._sdk.with_options(max_retries=0).batches.create,
            input_file_id=file_id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={METADATA_KEY: requests, "input_file_id": file_id},
        )
        retry, last = self.options.retry, ""
        for attempt in range(retry.max_retries + 1):
            wait, no_job = None, False
            try:
                return create()
            except openai.APIStatusError as exc:
                if exc.status_code not in NO_JOB_MADE and exc.status_code < 500:
                    raise self._refused("create the job", exc) from None
                last, wait = f"HTTP {exc.status_code}", retry_after_seconds(exc.response.headers.get("retry-after"))
                no_job = exc.status_code in NO_JOB_MADE
                usage.rate_limited += exc.status_code == 429
            except openai.APIConnectionError as exc:
                last = f"no answer ({type(exc).__name__})"
            if not no_job and (found := self._find(requests, file_id)) is not None:
                return found  # the failed create had made it
            if attempt < retry.max_retries:
                time.sleep(retry.delay(attempt, wait))
        raise BaldistillError(
            scrub(
                f"teacher Batch API: cannot create the job: {last} from {self.base_url} after "
                f"{retry.max_retries + 1} attempt(s) (teacher.max_retries); no job was made",
                self._api_key,
            )
        )

    def _find(self, requests: str, file_id: str) -> Any | None:
        """The job a create that failed ambiguously may have made, by its metadata; None: none was."""
        listed = self._call("look the job up", functools.partial(self._sdk.batches.list, limit=100))
        for job in listed.data:
            metadata = job.metadata or {}
            if metadata.get(METADATA_KEY) == requests and job.input_file_id == file_id:
                return job
        return None

    def _finish(
        self,
        batch_id: str,
        todo: dict[str, Request],
        usage: Usage,
        on_answer: Callable[[str, dict], None],
        attempts: dict[str, Attempt],
        empties: Counter,
    ) -> str:
        """Wait for the job, store its answers to `todo` (removing them) with their bills, settle what it
        left unanswered as not billed; returns why the first request it did not answer failed."""
        job = self._wait(batch_id)
        results = self._results(job)
        why = ""
        for key in list(attempts):
            result = results.get(key, LineResult(None, False, ""))
            attempt, request = attempts.pop(key), todo[key]
            if result.answer is not None and result.why and empties[key] < 1 and result.priced:
                empties[key] += 1  # an answer without text: billed, and asked once more
                self.payments.billed(attempt, result.answer, usage)
                why = why or result.why
            elif result.answer is not None:
                stored = self.payments.keep(attempt, request.material(self.model), result.answer, result.priced, usage)
                del todo[key]
                on_answer(key, stored)
            elif result.billed_maybe:
                self.payments.unknown(attempt, usage)
                why = why or result.why
            else:
                self.payments.unbilled([attempt], usage)
                why = why or result.why
        self.cache.jobs.close(batch_id, job.status)
        return why or _job_trouble(job)

    def _wait(self, batch_id: str) -> Any:
        """Poll until the job ends, its request counts on a progress bar."""
        retrieve = functools.partial(self._sdk.batches.retrieve, batch_id)
        with tqdm(desc=f"batch {batch_id}", unit="req", leave=False) as bar:
            while True:
                job = self._call("poll the job", retrieve)
                counts = job.request_counts
                if counts is not None:
                    bar.total, bar.n = counts.total, counts.completed
                    bar.set_postfix(status=job.status, failed=counts.failed)
                if job.status in TERMINAL:
                    return job
                time.sleep(self.options.batch_poll_seconds)

    def _results(self, job: Any) -> dict[str, LineResult]:
        """The job's line results from its output and error files."""
        results = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if file_id:
                content = self._call("read the job's results", functools.partial(self._sdk.files.content, file_id))
                results.update(parse_results(content.content.decode("utf-8")))
        return results

    def _call(self, what: str, call: Callable[[], Any], gone: Any = None) -> Any:
        """One SDK call; its failures become one line without the API key (`gone`, if given: returned on a 404)."""
        try:
            return call()
        except openai.APIStatusError as exc:
            if exc.status_code == 404 and gone is not None:
                return gone
            raise self._refused(what, exc) from None
        except openai.APIConnectionError as exc:
            message = f"teacher Batch API: cannot {what}: no answer from {self.base_url} ({type(exc).__name__}: {exc})"
            raise BaldistillError(scrub(message, self._api_key)) from None

    def _refused(self, what: str, exc: openai.APIStatusError) -> BaldistillError:
        status = exc.status_code
        hint = NO_BATCH_API if status == 404 else FATAL_HINTS.get(status, "the server refused the request")
        detail = " ".join(str(_server_message(exc)).split())[:200]
        message = f"teacher Batch API: cannot {what}: HTTP {status} from {self.base_url}: {detail} ({hint})"
        return BaldistillError(scrub(message.replace("${env}", f"${self.options.api_key_env}"), self._api_key))


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        return error.get("message", error) if isinstance(error, dict) else error
    return body or exc.message


def _job_trouble(job: Any) -> str:
    """Why a job left requests unanswered, from its status and errors."""
    errors = getattr(job.errors, "data", None) or []
    detail = f": {errors[0].message}" if errors and errors[0].message else ""
    return f"job {job.id} {job.status}{detail}"
