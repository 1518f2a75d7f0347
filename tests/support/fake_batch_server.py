"""A real HTTP server on 127.0.0.1 that speaks the OpenAI Batch API: POST /v1/files
(the SDK's multipart upload), GET /v1/files/{id}/content, POST /v1/batches and
GET /v1/batches/{id}.

A job moves one step per poll: validating -> in_progress -> finalizing -> its end
(completed unless `job_end(job_index)` says "failed" or "expired"); while
`release` is cleared it stays in_progress. Each input line is answered as the
sync fake does (a word is a token), unless `line_fate(job_index, custom_id, body)`
says "error" (a line of the error file) or "missing" (left out: a failed or
expired job's unanswered request). Jobs, polls and every Authorization header
are recorded for the tests.

`create_faults` scripts the answers to POST /v1/batches, one per call, in order:
"429" (Retry-After 0, no job made), "500" (no job made), "500_after" and
"drop_after" (the job is made, then the answer is an error or a dropped
connection: the ambiguous failures); then every create succeeds. GET /v1/batches
lists the jobs with their metadata, as OpenAI's API does.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler

from support.teacher_fakeserver import _QuietServer, completion, default_content

NEXT = {"validating": "in_progress", "in_progress": "finalizing"}


@dataclass
class Job:
    id: str
    input_file_id: str
    lines: list[dict]
    index: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: dict | None = None
    metadata: dict | None = None

    @property
    def custom_ids(self) -> list[str]:
        return [line["custom_id"] for line in self.lines]

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "created_at": int(time.time()),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts": {**self.counts, "total": len(self.lines)},
            "errors": self.errors,
            "metadata": self.metadata,
        }


class FakeBatchServer:
    """Start with `with FakeBatchServer() as server:`; `server.base_url` ends in /v1."""

    def __init__(
        self,
        *,
        answer: Callable[[dict], str] = default_content,
        line_fate: Callable[[int, str, dict], str] | None = None,
        job_end: Callable[[int], str] | None = None,
        refuse_upload: int | None = None,
        create_faults: tuple[str, ...] = (),
    ):
        self.answer, self.refuse_upload = answer, refuse_upload
        self.create_faults = list(create_faults)
        self.creates = 0  # POST /v1/batches received
        self.line_fate = line_fate or (lambda job, custom_id, body: "ok")
        self.job_end = job_end or (lambda job: "completed")
        self.files: dict[str, bytes] = {}
        self.uploads = 0
        self.jobs: list[Job] = []
        self.polls: list[str] = []  # the batch id of every poll, in order
        self.answered: list[str] = []  # custom ids answered, over all jobs
        self.authorizations: set[str] = set()
        self.release = threading.Event()  # cleared: jobs stay in_progress until set
        self.release.set()
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeBatchServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- the API, called by the handler under the lock ----

    def upload(self, content_type: str, data: bytes) -> tuple[int, dict]:
        form = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + data)
        parts = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
        if "file" not in parts or "purpose" not in parts or parts["purpose"].get_content().strip() != "batch":
            return 400, {"error": {"message": "a file with purpose batch is required"}}
        file_id = self._new_file(parts["file"].get_payload(decode=True))
        self.uploads += 1
        return 200, self._file_object(file_id, parts["file"].get_filename() or "upload.jsonl")

    def create(self, body: dict) -> tuple[int, dict]:
        data = self.files.get(body.get("input_file_id", ""))
        if data is None or body.get("endpoint") != "/v1/chat/completions":
            return 400, {"error": {"message": "unknown input_file_id or endpoint"}}
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
        job = Job(
            f"batch_{len(self.jobs)}", body["input_file_id"], lines, len(self.jobs), metadata=body.get("metadata")
        )
        self.jobs.append(job)
        return 200, job.as_dict()

    def listing(self) -> tuple[int, dict]:
        data = [job.as_dict() for job in reversed(self.jobs)]  # newest first, as OpenAI lists them
        return 200, {"object": "list", "data": data, "has_more": False}

    def poll(self, batch_id: str) -> tuple[int, dict]:
        job = next((j for j in self.jobs if j.id == batch_id), None)
        if job is None:
            return 404, {"error": {"message": f"no batch {batch_id}"}}
        self.polls.append(batch_id)
        if job.status == "finalizing":
            self._end(job)
        elif job.status in NEXT and (job.status != "in_progress" or self.release.is_set()):
            job.status = NEXT[job.status]
        return 200, job.as_dict()

    def _end(self, job: Job) -> None:
        job.status = self.job_end(job.index)
        if job.status == "failed":  # failed validation: nothing ran
            job.errors = {"object": "list", "data": [{"code": "invalid", "message": "injected job failure"}]}
            return
        out, errors = [], []
        for i, line in enumerate(job.lines):
            fate = self.line_fate(job.index, line["custom_id"], line["body"])
            if fate == "ok":
                out.append(result_line(job.id, i, line, 200, completion(line["body"], self.answer(line["body"]))))
                self.answered.append(line["custom_id"])
            elif fate == "error":
                errors.append(result_line(job.id, i, line, 500, {"error": {"message": "injected line error"}}))
        job.counts = {"total": len(job.lines), "completed": len(out), "failed": len(errors)}
        job.output_file_id = self._new_file(_jsonl(out)) if out else None
        job.error_file_id = self._new_file(_jsonl(errors)) if errors else None

    def _new_file(self, data: bytes) -> str:
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = data
        return file_id

    def _file_object(self, file_id: str, filename: str) -> dict:
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(self.files[file_id]),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": "batch",
            "status": "processed",
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._record()
                with server.lock:
                    if match := re.fullmatch(r"/v1/files/([^/]+)/content", self.path):
                        data = server.files.get(match.group(1))
                        if data is not None:
                            return self._send_raw(200, data, "application/octet-stream")
                    elif match := re.fullmatch(r"/v1/batches/([^/?]+)", self.path):
                        return self._send(*server.poll(match.group(1)))
                    elif re.fullmatch(r"/v1/batches(\?.*)?", self.path):
                        return self._send(*server.listing())
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self._record()
                with server.lock:
                    if self.path == "/v1/files" and server.refuse_upload:
                        message = f"Incorrect API key provided: {auth}"  # servers do echo keys
                        return self._send(server.refuse_upload, {"error": {"message": message}})
                    if self.path == "/v1/files":
                        return self._send(*server.upload(self.headers.get("Content-Type", ""), data))
                    if self.path == "/v1/batches":
                        return self._create(json.loads(data))
                self._send(404, {"error": {"message": "not found"}})

            def _create(self, body: dict):
                """Under the lock: the next scripted fault, or the job."""
                server.creates += 1
                fault = server.create_faults.pop(0) if server.create_faults else None
                if fault in ("429", "500"):
                    headers = {"Retry-After": "0"} if fault == "429" else {}
                    return self._send(int(fault), {"error": {"message": f"injected {fault}"}}, headers)
                status, job = server.create(body)
                if fault == "500_after":
                    return self._send(500, {"error": {"message": "injected 500 after the job was made"}})
                if fault == "drop_after":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Le")
                    self.wfile.flush()
                    linger = b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.connection.close()
                    self.close_connection = True
                    return None
                return self._send(status, job)

            def _record(self) -> str:
                auth = self.headers.get("Authorization", "")
                with server.lock:
                    server.authorizations.add(auth)
                return auth

            def _send(self, status: int, obj: dict, headers: dict | None = None):
                self._send_raw(status, json.dumps(obj).encode(), "application/json", headers)

            def _send_raw(self, status: int, data: bytes, content_type: str, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        return Handler


def result_line(job_id: str, i: int, line: dict, status: int, body: dict) -> dict:
    """One line of an output or error file, as OpenAI (and vLLM's run_batch) write them."""
    response = {"status_code": status, "request_id": f"req-{job_id}-{i}", "body": body}
    return {"id": f"batch_req_{job_id}_{i}", "custom_id": line["custom_id"], "response": response, "error": None}


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
