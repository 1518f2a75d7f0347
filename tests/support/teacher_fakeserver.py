"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions
protocol, with faults injected at the HTTP level (status codes, Retry-After,
slow answers, malformed JSON, empty content, finish_reason "length" with no
text, a socket closed mid-response).

It bills like a provider: every attempt that reaches its "model" (any answer
but an error status) is billed at its usage (a word is a token), whether the
client reads it or not: an answer sent after the client's timeout, or into a
dropped connection, is billed too. `bill(price)` is what it would charge.

Tests script it with `plan(key, attempt) -> Action`, where `key` identifies
the request by its body (model, messages, temperature, max_tokens) and
`attempt` counts how often the server has seen that key (0 = first time).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Action:
    kind: str = "ok"  # ok | status | malformed | empty | length (max_tokens spent, no text) | no_usage | drop
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    content: str | None = None


@dataclass
class Seen:
    key: str
    body: dict
    authorization: str
    started: float
    answered: bool = False
    billed: tuple[int, int] | None = None  # (prompt, completion) tokens the server charged for this attempt


def body_key(body: dict) -> str:
    """How the server tells requests apart (what the client's cache key covers; `sample` travels as `seed`)."""
    core = {k: body.get(k) for k in ("model", "messages", "temperature", "max_tokens", "seed")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def default_content(body: dict) -> str:
    """Echo back a gold label when the prompt states one, so annotation agrees."""
    prompt = body["messages"][-1]["content"]
    for marker in ("The topic of this story is ", "The correct choice is ", "Answer: ", "Answer "):
        if marker in prompt:
            label = prompt.split(marker, 1)[1].split("\n", 1)[0].split(". ", 1)[0].strip().rstrip(".")
            return f"Step by step, the text fits. The answer is {label}."
    return "Input: A short story.\nRationale: It fits. The answer is unknown."


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 refuses bursts of new connections

    def handle_error(self, request, client_address):
        """A client that timed out and hung up is expected here, not an error."""


class FakeTeacher:
    """Start with `with FakeTeacher(plan) as server:`; `server.base_url` ends in /v1."""

    def __init__(self, plan: Callable[[str, int, dict], Action] | None = None, delay: float = 0.0):
        self.plan = plan or (lambda key, attempt, body: Action())
        self.delay = delay
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        # A short poll interval makes shutdown() quick (the default 0.5 s adds up over many tests).
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def keys(self) -> list[str]:
        with self.lock:
            return [s.key for s in self.seen]

    def answered(self) -> set[str]:
        with self.lock:
            return {s.key for s in self.seen if s.answered}

    def bill(self, price) -> float:
        """What a provider would charge for every attempt it billed, at `price` (spending.Price)."""
        with self.lock:
            return sum(price.cost(*s.billed) for s in self.seen if s.billed)

    def _record(self, body: dict, authorization: str) -> tuple[Seen, int]:
        key = body_key(body)
        with self.lock:
            attempt = sum(1 for s in self.seen if s.key == key)
            seen = Seen(key, body, authorization, time.monotonic())
            self.seen.append(seen)
        return seen, attempt

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else a 40 ms delayed ACK per answer

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                seen, attempt = server._record(body, self.headers.get("Authorization", ""))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(seen, server.plan(seen.key, attempt, body), body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, seen: Seen, action: Action, body: dict):
                if action.kind != "status":  # the model runs: billed, whatever reaches the client
                    usage = completion(body, self._content(action, body))["usage"]
                    if action.kind == "length":
                        usage["completion_tokens"] = body.get("max_tokens") or 16
                    with server.lock:
                        seen.billed = (usage["prompt_tokens"], usage["completion_tokens"])
                time.sleep(server.delay + action.delay)
                if action.kind == "drop":
                    self._drop()
                    return
                if action.kind == "status":
                    text = (action.content or f"injected {action.status}").replace(
                        "{auth}", self.headers.get("Authorization", "")
                    )
                    message = {"error": {"message": text, "type": "test"}}
                    self._send(action.status, message, action.headers)
                    return
                if action.kind == "malformed":
                    self._send_raw(200, b'{"id": "x", "choices": [{"message": {"content": "trunc')
                else:
                    answer = completion(body, self._content(action, body))
                    if action.kind == "length":
                        answer["choices"][0]["finish_reason"] = "length"
                        answer["usage"]["completion_tokens"] = seen.billed[1]
                    if action.kind == "no_usage":  # billed, but the body does not say what
                        del answer["usage"]
                    self._send(200, answer, action.headers)
                with server.lock:
                    seen.answered = True

            @staticmethod
            def _content(action: Action, body: dict) -> str:
                return "" if action.kind in ("empty", "length") else (action.content or default_content(body))

            def _send(self, status: int, obj: dict, headers: dict | None = None):
                self._send_raw(status, json.dumps(obj).encode(), headers)

            def _send_raw(self, status: int, data: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _drop(self):
                """Send a status line and half the headers, then reset the connection."""
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Le")
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                self.close_connection = True

        return Handler


def completion(body: dict, content: str) -> dict:
    """A chat completion; a word is a token, and max_tokens cuts the answer as a real server does."""
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    finish, limit = "stop", body.get("max_tokens")
    if limit is not None and len(content.split()) > limit:
        content, finish = " ".join(content.split()[:limit]), "length"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content.split()),
            "total_tokens": prompt_tokens + len(content.split()),
        },
    }
