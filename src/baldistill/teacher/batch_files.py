"""The files of the Batch API (teacher.mode: batch): a job's input lines, its result lines, and
the offline round trip through vLLM's `run_batch` ($BALDISTILL_BATCH_EXPORT, `baldistill batch import`).

One input line per request: {"custom_id": its cache key, "method": "POST",
"url": "/v1/chat/completions", "body": its chat-completion body}, the format
vLLM's `python -m vllm.entrypoints.openai.run_batch` reads too. A result line
(OpenAI's and vLLM's shape) carries the custom_id and the response.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl
from baldistill.teacher.answers import key_material, request_key
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.messages import Request, unusable
from baldistill.teacher.transport import Unreadable, read_completion

ENDPOINT = "/v1/chat/completions"
EXPORT_ENV = "BALDISTILL_BATCH_EXPORT"


class LineResult(NamedTuple):
    """One result line: the answer (None: none) and whether its usage came with it, or why not.
    `billed_maybe`: a 200 whose body could not be read (it may have been billed)."""

    answer: dict | None
    priced: bool
    why: str
    billed_maybe: bool = False


def job_line(key: str, body: dict) -> dict:
    """One request of a Batch input file."""
    return {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}


def body_material(body: dict) -> dict:
    """The cache key's input for a chat-completion body (Request.body's inverse: `seed` is the sample)."""
    return key_material(body["model"], body["messages"], body["temperature"], body["max_tokens"], body.get("seed"))


def line_result(obj: dict) -> LineResult:
    """What one output or error line says; an error line (status not 200) was not billed."""
    response = obj.get("response") or {}
    status = response.get("status_code")
    if obj.get("error") or status != 200:
        error = obj.get("error") or (response.get("body") or {}).get("error") or {}
        message = error.get("message", error) if isinstance(error, dict) else error
        return LineResult(None, False, " ".join(f"HTTP {status}: {message}".split())[:200])
    try:
        answer, priced = read_completion(json.dumps(response.get("body")))
    except Unreadable as exc:
        return LineResult(None, False, str(exc), billed_maybe=True)
    return LineResult(answer, priced, unusable(answer) or "")


def parse_results(text: str) -> dict[str, LineResult]:
    """Each line's result by custom_id, from a job's output or error file."""
    results = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            key = obj["custom_id"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn line answers nothing: its request is asked again
        results[key] = line_result(obj)
    return results


def export_if_asked(missing: Mapping[str, Request], model: str) -> None:
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
    """Store the answers with text of a Batch output file (vLLM run_batch's, OpenAI's) for the requests
    of its input file; each custom_id must be the cache key of its body. Returns (stored, unanswered)."""

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
    results = parse_results(output.read_text(encoding="utf-8"))
    answers = {key: r.answer for key, r in results.items() if r.answer is not None and not r.why}
    stored = sum(cache.put(key, requests[key], answer) for key, answer in answers.items() if key in requests)
    return stored, len(requests.keys() - answers.keys())
