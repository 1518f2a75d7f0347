"""Teacher-client throughput against a loopback OpenAI-protocol server.

The server (a separate process, so it does not share our GIL) answers every
chat completion after a fixed delay, so the ideal
rate at concurrency c is c / delay calls per second; the ratio to that ideal
shows what the whole path costs. The floor is the bare `openai` SDK call at the
same concurrency (no cache, no retry loop, no budget): the ratio of our client
to it is what our own code costs. Every request is a cache miss (fresh cache
per level).

    python bench/teacher_throughput.py [--delay 0.2] [--calls 64] [--levels 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai

from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import Request, TeacherClient
from baldistill.teacher.options import ClientOptions


def serve(delay: float, ports) -> None:
    """Child process: run the delayed server, report its port, serve forever."""
    server = delayed_server(delay)
    ports.put(server.server_address[1])
    server.serve_forever()


def delayed_server(delay: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers+body in two writes cost a 40 ms delayed ACK

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(delay)
            body = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": "bench",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "The answer is 42."},
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the default 5 refuses bursts of new connections

    return Server(("127.0.0.1", 0), Handler)


def measure(base_url: str, concurrency: int, calls: int) -> float:
    """Calls per second for `calls` distinct requests at `concurrency`."""
    with tempfile.TemporaryDirectory() as tmp, RequestCache(tmp) as cache:
        client = TeacherClient(
            connect=lambda: (base_url, "sk-bench"),
            cache=cache,
            budget=calls,
            options=ClientOptions(model="bench", concurrency=concurrency, timeout=30, max_retries=0),
        )
        requests = [Request.user(f"question {concurrency}-{i}", 0.0, 8) for i in range(calls)]
        start = time.perf_counter()
        answers, usage = client.run_batch(requests, desc=f"c={concurrency}")
        elapsed = time.perf_counter() - start
        assert len(answers) == calls and usage.calls_paid == calls
    return calls / elapsed


def measure_floor(base_url: str, concurrency: int, calls: int) -> float:
    """Calls per second of the bare SDK: the same requests, nothing of ours around them."""

    async def run() -> None:
        semaphore = asyncio.Semaphore(concurrency)
        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=30)

        async def one(i: int) -> None:
            async with semaphore:
                await sdk.chat.completions.with_raw_response.create(
                    model="bench",
                    messages=[{"role": "user", "content": f"floor {concurrency}-{i}"}],
                    temperature=0.0,
                    max_tokens=8,
                )

        try:
            await asyncio.gather(*(one(i) for i in range(calls)))
        finally:
            await sdk.close()

    start = time.perf_counter()
    asyncio.run(run())
    return calls / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--calls", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args(argv)
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.delay, ports), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    rows = []
    try:
        for level in args.levels:
            calls = max(args.calls, 2 * level) if level > 1 else min(args.calls, 16)
            # interleaved, so outside load hits both alike
            floor = measure_floor(base_url, level, calls)
            rate = measure(base_url, level, calls)
            rows.append((level, calls, rate, floor, level / args.delay))
    finally:
        server.terminate()
        server.join()
    print(f"\nserver delay {args.delay:g} s per request; command: python {' '.join(sys.argv)}")
    print(
        f"{'concurrency':>11} {'calls':>6} {'calls/s':>8} {'SDK floor':>9} {'ideal':>7} {'vs ideal':>8} {'vs floor':>8}"
    )
    for level, calls, rate, floor, ideal in rows:
        print(
            f"{level:>11} {calls:>6} {rate:>8.2f} {floor:>9.2f} {ideal:>7.2f} {rate / ideal:>8.2f} {rate / floor:>8.2f}"
        )


if __name__ == "__main__":
    main()
