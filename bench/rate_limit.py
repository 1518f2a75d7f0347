"""The client against a server that rate-limits: sustained rate and 429s, with and without teacher.rpm.

A loopback OpenAI-style server answers at most LIMIT requests per WINDOW seconds
(a sliding window, as providers count) and 429 beyond it, with or without a
retry-after header. The real TeacherClient sends REQUESTS distinct requests at
concurrency 8 through it, in separate caches, under each setting:

    python bench/rate_limit.py                 # LIMIT 20 per 10 s = 120 a minute, 80 requests
    python bench/rate_limit.py --limit 30 --window 10 --requests 120

Prints one row per setting: wall time, answers per minute, 429s received, attempts.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import Request, TeacherClient
from baldistill.teacher.options import ClientOptions


class LimitedServer:
    """At most `limit` answers in any `window` seconds; 429 (with retry-after if asked) beyond."""

    def __init__(self, limit: int, window: float, retry_after: bool):
        self.limit, self.window, self.retry_after = limit, window, retry_after
        self.accepted: collections.deque[float] = collections.deque()
        self.refused = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    def admit(self) -> float | None:
        """None if the request may be answered now, else seconds until a slot frees."""
        now = time.monotonic()
        with self.lock:
            while self.accepted and now - self.accepted[0] >= self.window:
                self.accepted.popleft()
            if len(self.accepted) < self.limit:
                self.accepted.append(now)
                return None
            self.refused += 1
            return self.window - (now - self.accepted[0])

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                wait = server.admit()
                if wait is None:
                    answer = {
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "The answer is x."}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                        "model": body.get("model"),
                    }
                    self._send(200, answer, {})
                else:
                    headers = {"retry-after": f"{wait:.2f}"} if server.retry_after else {}
                    self._send(429, {"error": {"message": "rate limit reached"}}, headers)

            def _send(self, status: int, obj: dict, headers: dict):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> LimitedServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def run(setting: str, args: argparse.Namespace, rpm: int | None, retry_after: bool) -> dict:
    requests = [Request.user(f"question {i}", 0.0, 8) for i in range(args.requests)]
    with LimitedServer(args.limit, args.window, retry_after) as server, tempfile.TemporaryDirectory() as cache_dir:
        client = TeacherClient(
            connect=lambda: (server.base_url, "sk-bench"),
            cache=RequestCache(Path(cache_dir)),
            budget=args.requests,
            options=ClientOptions(model="bench", concurrency=8, timeout=30, max_retries=12, rpm=rpm),
        )
        started = time.perf_counter()
        _, usage = client.run_batch(requests, desc=setting)
        wall = time.perf_counter() - started
    return {
        "setting": setting,
        "wall_s": round(wall, 1),
        "answers_per_min": round(usage.calls_paid / wall * 60, 1),
        "429s": usage.rate_limited,
        "attempts": usage.http_attempts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="answers allowed per window")
    parser.add_argument("--window", type=float, default=10.0, help="window in seconds")
    parser.add_argument("--requests", type=int, default=80)
    args = parser.parse_args()
    per_minute = int(args.limit * 60 / args.window)
    settings = [
        ("no limits, server sends retry-after", None, True),
        ("no limits, no retry-after (backoff only)", None, False),
        (f"teacher.rpm={per_minute} (the server's rate)", per_minute, True),
    ]
    print(f"server: {args.limit} answers per {args.window:g} s ({per_minute}/min); {args.requests} requests, 8 at once")
    print("| setting | wall s | answers/min | 429s | HTTP attempts |")
    print("|---|---|---|---|---|")
    for name, rpm, retry_after in settings:
        row = run(name, args, rpm, retry_after)
        print(f"| {row['setting']} | {row['wall_s']} | {row['answers_per_min']} | {row['429s']} | {row['attempts']} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
