"""The OpenAI Batch API (teacher.mode: batch): a step's cache misses as one job, at teacher.price x batch_factor.

The misses are uploaded as one JSONL file (/v1/files, purpose "batch"), one
line per request: {"custom_id": its cache key, "method": "POST", "url":
"/v1/chat/completions", "body": its chat-completion body}, the format vLLM's
`python -m vllm.entrypoints.openai.run_batch` reads too. A job is created for
the file (/v1/batches, completion window 24h) and its id is recorded in the
cache's SQLite before anything waits on it, so a step killed while the job
runs polls the same job when run again: no second job, nothing paid twice.
(Only the instant between the server creating the job and that fsynced write
is not covered: a kill there leaves a job the re-run does not know of.)

The job is polled every teacher.batch_poll_seconds. When it ends, each line of
its output file is stored in the response cache, with its payment journalled,
exactly as a synchronous answer is (client.py). Lines in its error file, and
requests a failed or expired job never answered, go again in a new job of
their own, at most teacher.max_retries times; answered ones never do.

Under budget.max_usd every request of a job reserves its worst case (at batch
price) before the file is uploaded, and a job that would pass the cap is
refused whole, with one line; each reservation settles to the real cost when
its answer arrives.

With $BALDISTILL_BATCH_EXPORT set to a path, the step writes the JSONL it
would upload there and stops, sending nothing: run it elsewhere (vLLM
run_batch on a GPU machine), load the output with `baldistill batch import`,
and run the step again (README).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
from tqdm import tqdm

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl
from baldistill.teacher.cache import Payment, RequestCache, key_material, request_key
from baldistill.teacher.spending import DollarCap, Price, worst_case_usd
from baldistill.teacher.transport import FATAL_HINTS, Transient, parse_answer, scrub
from baldistill.teacher.usage import Usage

if TYPE_CHECKING:
    from baldistill.teacher.client import Request

ENDPOINT = "/v1/chat/completions"
EXPORT_ENV = "BALDISTILL_BATCH_EXPORT"
TERMINAL = ("completed", "failed", "expired", "cancelled")
NO_BATCH_API = (
    "does teacher.base_url serve the Batch API (/v1/files, /v1/batches)? vLLM and llama.cpp servers do not: "
    "use teacher.mode=sync, or vLLM run_batch (README)"
)


def job_line(key: str, body: dict) -> dict:
    """One request of a Batch input file."""
    return {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}


def body_material(body: dict) -> dict:
    """The cache key's input for a chat-completion body (Request.body's inverse: `seed` is the sample)."""
    return key_material(body["model"], body["messages"], body["temperature"], body["max_tokens"], body.get("seed"))


def line_answer(obj: dict) -> tuple[dict | None, str]:
    """(answer fields, "") for an answered output line, else (None, why not); OpenAI's and vLLM's shape."""
    response = obj.get("response") or {}
    status = response.get("status_code")
    if obj.get("error") or status != 200:
        error = obj.get("error") or (response.get("body") or {}).get("error") or {}
        message = error.get("message", error) if isinstance(error, dict) else error
        return None, " ".join(f"HTTP {status}: {message}".split())[:200]
    try:
        return parse_answer(json.dumps(response.get("body"))), ""
    except Transient as exc:
        return None, str(exc)


def parse_results(text: str) -> tuple[dict[str, dict], dict[str, str]]:
    """Answers and failures (why) by custom_id, from a job's output or error file."""
    answers, failures = {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            key = obj["custom_id"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn line answers nothing: its request is asked again
        answer, why = line_answer(obj)
        if answer is None:
            failures[key] = why
        else:
            answers[key] = answer
    return answers, failures


def export_if_asked(missing: dict[str, Request], model: str) -> None:
    """With $BALDISTILL_BATCH_EXPORT set: write the job's input file there and stop the step (nothing sent)."""
    path = os.environ.get(EXPORT_ENV)
    if not path:
        return
    count = write_jsonl(path, (job_line(key, request.body(model)) for key, request in missing.items()))
    raise BaldistillError(
        f"teacher.mode=batch: wrote the {count} request(s) of this step to {path} (${EXPORT_ENV}) and sent nothing; "
        f"run them, load the answers with `baldistill batch import {path} OUTPUT.jsonl`, then run the step again"
    )


def import_results(
    cache: RequestCache, input_path: str | os.PathLike, output_path: str | os.PathLike
) -> tuple[int, int]:
    """Store the answers of a Batch output file (vLLM run_batch's, OpenAI's) for the requests of
    its input file; each custom_id must be the cache key of its body. Returns (stored, unanswered)."""

    def check(obj: dict, where: str) -> tuple[str, dict]:
        try:
            key, material = obj["custom_id"], body_material(obj["body"])
        except (KeyError, TypeError):
            raise BaldistillError(f"{where}: not a Batch request line (custom_id, body)") from None
        if request_key(material) != key:
            raise BaldistillError(f"{where}: custom_id is not the cache key of its body (not written by a step?)")
        return key, material

    requests, output = dict(read_jsonl(input_path, check)), Path(output_path)
    if not output.is_file():
        raise BaldistillError(f"{output}: file not found")
    answers, _ = parse_results(output.read_text(encoding="utf-8"))
    stored = sum(cache.put(key, requests[key], answer) for key, answer in answers.items() if key in requests)
    return stored, len(requests.keys() - answers.keys())


class BatchJobs:
    """Batch jobs for one client's misses; use as `with BatchJobs(...) as jobs: jobs.answer(...)`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        cache: RequestCache,
        model: str,
        price: Price,
        cap: DollarCap,
        payer: str | None,
        poll_seconds: float,
        max_retries: int,
        timeout: float,
        api_key_env: str,
    ):
        self.base_url, self.cache, self.model, self.price, self.cap = base_url, cache, model, price, cap
        self.payer, self.poll_seconds, self.api_key_env = payer, poll_seconds, api_key_env
        self.max_jobs = max_retries + 1  # the first job and a new one per retry of what it left unanswered
        self._api_key = api_key  # only to scrub it from error messages
        # The SDK retries the calls that are safe to repeat (upload, poll, download); creating a
        # job is sent once (`_submit`), since a repeat after a lost reply would pay for two.
        self._sdk = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)

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
        todo = dict(missing)
        for batch_id in self._resumable(todo):
            tqdm.write(f"teacher: resuming Batch job {batch_id}", file=sys.stderr)
            usage.batch_ids.append(batch_id)
            self._finish(batch_id, todo, usage, on_answer, {})
        jobs, why = 0, ""
        while todo and jobs < self.max_jobs:
            reserved = self._reserve(todo)
            batch_id = self._submit(todo, usage, reserved, again=jobs > 0)
            jobs += 1
            why = self._finish(batch_id, todo, usage, on_answer, reserved)
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
        open_jobs = self.cache.open_batches(self.payer, self.base_url)
        return [batch_id for batch_id, keys in open_jobs if todo.keys() & set(keys) and self._known(batch_id)]

    def _known(self, batch_id: str) -> bool:
        """Whether the server still knows a recorded job; one it does not (404) is closed, not polled forever."""
        if self._call("poll the job", functools.partial(self._sdk.batches.retrieve, batch_id), gone=False) is False:
            self.cache.close_batch(batch_id, "unknown to the server")
            return False
        return True

    def _reserve(self, todo: dict[str, Request]) -> dict[str, float]:
        """Each request's worst case held under the cap, all or nothing, before anything is uploaded."""
        worst = {key: worst_case_usd(r.messages, r.max_tokens, self.price) for key, r in todo.items()}
        held = {}
        for key, amount in worst.items():
            if not self.cap.reserve(amount):
                self._release(held)
                total = sum(worst.values())
                raise BaldistillError(
                    f"budget.max_usd: a Batch job of {len(todo)} teacher request(s) may cost up to ${total:.6f} "
                    f"at batch price and ${self.cap.spent:.6f} of the ${self.cap.limit:.6f} cap is spent; "
                    "raise budget.max_usd (answers paid so far are kept)"
                )
            held[key] = amount
        return held

    def _release(self, held: dict[str, float]) -> None:
        for amount in held.values():
            self.cap.release(amount)
        held.clear()

    def _submit(self, todo: dict[str, Request], usage: Usage, reserved: dict[str, float], *, again: bool) -> str:
        """Upload `todo` and create its job; the job is recorded durably before this returns."""
        lines = "".join(json.dumps(job_line(key, r.body(self.model))) + "\n" for key, r in todo.items())
        try:
            upload = self._call(
                "upload the requests",
                functools.partial(self._sdk.files.create, file=("batch_in.jsonl", lines.encode()), purpose="batch"),
            )
            create = self._sdk.with_options(max_retries=0).batches.create
            job = self._call(
                "create the job",
                functools.partial(create, input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"),
            )
        except BaseException:
            self._release(reserved)  # nothing was submitted: nothing will be paid
            raise
        self.cache.add_batch(job.id, self.payer or "", self.base_url, todo)
        usage.batch_ids.append(job.id)
        usage.http_attempts += len(todo)
        usage.retries += len(todo) if again else 0
        tqdm.write(f"teacher: Batch job {job.id} submitted with {len(todo)} request(s)", file=sys.stderr)
        return job.id

    def _finish(
        self,
        batch_id: str,
        todo: dict[str, Request],
        usage: Usage,
        on_answer: Callable[[str, dict], None],
        reserved: dict[str, float],
    ) -> str:
        """Wait for the job, store its answers to `todo` (removing them), release what it left
        unanswered; returns why the first request it did not answer failed."""
        try:
            job = self._wait(batch_id)
            answers, failures = self._results(job)
            for key, answer in answers.items():
                if key in todo:
                    on_answer(key, self._store(key, todo.pop(key), answer, usage, reserved.pop(key, None)))
        finally:
            self._release(reserved)
        self.cache.close_batch(batch_id, job.status)
        return next(iter(failures.values()), None) or _job_trouble(job)

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
                time.sleep(self.poll_seconds)

    def _results(self, job: Any) -> tuple[dict[str, dict], dict[str, str]]:
        """The job's answers and failures from its output and error files."""
        answers, failures = {}, {}
        for file_id in (job.output_file_id, job.error_file_id):
            if file_id:
                content = self._call("read the job's results", functools.partial(self._sdk.files.content, file_id))
                got, failed = parse_results(content.content.decode("utf-8"))
                answers.update(got)
                failures.update(failed)
        return answers, failures

    def _store(self, key: str, request: Request, answer: dict, usage: Usage, worst: float | None) -> dict:
        """Store one answer with its payment (at batch price) and count it, as client.py does for sync answers."""
        cost = self.price.cost(answer["prompt_tokens"], answer["completion_tokens"])
        payment = Payment(self.payer or "", self.model, answer["prompt_tokens"], answer["completion_tokens"], cost)
        if not self.cache.put(key, request.material(self.model), answer, payment):
            answer = self.cache.get(key) or answer  # another process stored one first: it wins
        usage.paid(answer, cost)
        if worst is None:  # a resumed job: a killed run's reservation died with it
            self.cap.spent += cost
        else:
            self.cap.settle(worst, cost)
        return answer

    def _call(self, what: str, call: Callable[[], Any], gone: Any = None) -> Any:
        """One SDK call; its failures become one line without the API key (`gone`, if given: returned on a 404)."""
        try:
            return call()
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 404 and gone is not None:
                return gone
            hint = NO_BATCH_API if status == 404 else FATAL_HINTS.get(status, "the server refused the request")
            detail = " ".join(str(_server_message(exc)).split())[:200]
            message = f"teacher Batch API: cannot {what}: HTTP {status} from {self.base_url}: {detail} ({hint})"
        except openai.APIConnectionError as exc:
            message = f"teacher Batch API: cannot {what}: no answer from {self.base_url} ({type(exc).__name__}: {exc})"
        raise BaldistillError(scrub(message.replace("${env}", f"${self.api_key_env}"), self._api_key))


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
