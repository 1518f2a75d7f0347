"""Speed of an OpenAI-compatible teacher server on a fixed set of annotation prompts.

Sends the same few greedy annotation prompts (rendered from our own prompt
YAMLs) one at a time, after one warm-up call, and prints seconds per call and
completion tokens per second, so two servers (llama-cpp-python vs
`transformers serve`) can be compared on this machine.

    python bench/teacher_servers.py --base-url http://127.0.0.1:8000/v1 --model NAME [--max-tokens 64]
    python bench/teacher_servers.py --local qwen2.5-coder-0.5b     # starts llama_cpp.server itself
"""

from __future__ import annotations

import argparse
import sys
import time

import openai

from baldistill.core import assets
from baldistill.prompts import load_prompts
from baldistill.teacher.server import local_server

R52_LABELS = "earn, acq, crude, trade, money-fx, interest, ship, sugar, coffee, gold, nat-gas, cpi"
CASES = [
    (
        "classification",
        dict(
            dataset="R52",
            labels=R52_LABELS,
            label="crude",
            input="saudi arabia said it will keep its crude oil output below its opec quota of mln barrels per day "
            "in an effort to support prices, oil industry sources said on monday.",
        ),
    ),
    (
        "classification",
        dict(
            dataset="R52",
            labels=R52_LABELS,
            label="acq",
            input="general corp said it agreed to acquire the outstanding shares of smith industries inc for dlrs "
            "a share in cash, or about mln dlrs, subject to regulatory approval.",
        ),
    ),
    ("math", dict(label="12", input="A rectangle has a perimeter of 36 and a width of 6. What is its length?")),
    (
        "multiple_choice",
        dict(
            label="B", input="Which of these conducts electricity best? (A) wood (B) copper wire (C) glass (D) rubber"
        ),
    ),
]


def prompts() -> list[str]:
    return [load_prompts(task).render("annotate", **values) for task, values in CASES]


def measure(base_url: str, model: str, max_tokens: int) -> list[tuple[float, int, int]]:
    """(seconds, prompt tokens, completion tokens) per prompt, after a warm-up call."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-local", max_retries=0, timeout=900)

    def call(text: str):
        start = time.perf_counter()
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=max_tokens
        )
        usage = reply.usage
        return time.perf_counter() - start, usage.prompt_tokens, usage.completion_tokens, reply

    call("Say OK.")
    results = []
    for text in prompts():
        seconds, prompt_tokens, completion_tokens, reply = call(text)
        print(
            f"  {seconds:6.2f} s  {prompt_tokens:4d}+{completion_tokens:3d} tok  "
            f"{reply.choices[0].message.content[:70]!r}",
            file=sys.stderr,
        )
        results.append((seconds, prompt_tokens, completion_tokens))
    return results


def report(results: list[tuple[float, int, int]]) -> None:
    seconds = sum(r[0] for r in results)
    completion = sum(r[2] for r in results)
    prompt = sum(r[1] for r in results)
    print(
        f"calls {len(results)}  s/call {seconds / len(results):.2f}  "
        f"completion tok/s {completion / seconds:.1f}  (prompt tokens {prompt}, completion tokens {completion})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="teacher")
    parser.add_argument("--local", help="asset name: start llama_cpp.server on it (2 threads)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    if args.local:
        with local_server(assets.path_of(args.local), args.model, args.threads, 4096, 300) as base_url:
            report(measure(base_url, args.model, args.max_tokens))
    else:
        report(measure(args.base_url, args.model, args.max_tokens))


if __name__ == "__main__":
    main()
