"""Which local teacher, asked for how many tokens? Replays a finished run's real
annotation requests against each (teacher, max_tokens) setting, side by side
in one run, and prints per setting: seconds per call, completion tokens per
call, the share of rationales cut by max_tokens before their answer sentence,
the share whose answer agrees with the gold label (read as the annotate step
reads them: a rationale cut before its answer sentence gets the gold one
appended, so only an answer actually stated wrong disagrees),
dollars per 1,000 calls at teacher.price, and the server's own prompt and
generation tokens/s from its log.

    python bench/teacher_choice.py --rows 30 --setting qwen2.5-coder-1.5b:160 \
        --setting qwen2.5-coder-1.5b:64 --setting qwen2.5-coder-0.5b:64

Requests come from data/stages/*/annotate_responses.jsonl (the prompts a run
really sent); every call is sent fresh (no cache). Run it alone: the teacher
wants every core.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shlex
import sys
import time


def recorded_requests(rows: int, seed: int) -> list[dict]:
    requests = []
    for path in sorted(glob.glob("data/stages/*/annotate_responses.jsonl")):
        with open(path) as handle:
            requests += [json.loads(line)["request"] for line in handle]
    return random.Random(seed).sample(requests, min(rows, len(requests)))


def gold_of(request: dict) -> str:
    import re

    text = request["messages"][-1]["content"]
    return re.search(r"The correct topic is (\S+?)\.\n", text).group(1)


def run_setting(model_file: str, max_tokens: int, requests: list[dict], threads: int, price) -> dict:
    import openai

    from baldistill.core import assets
    from baldistill.core.answers import ANSWER_SENTENCE, extract_answer
    from baldistill.core.dataset_info import DatasetInfo
    from baldistill.core.layout import INFO
    from baldistill.teacher.server import local_server
    from baldistill.teacher.server_log import throughput

    labels = DatasetInfo.load(INFO).labels
    reader: list = []
    calls = []
    with local_server(assets.path_of(model_file), "teacher", threads, 4096, 300, reader.append) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-local-no-key", max_retries=0, timeout=600)
        for request in requests:
            started = time.perf_counter()
            answer = client.chat.completions.create(
                model="teacher", messages=request["messages"], temperature=0.0, max_tokens=max_tokens
            )
            seconds = time.perf_counter() - started
            choice = answer.choices[0]
            text = choice.message.content or ""
            # As the annotate step reads it: cut before its answer sentence is not a disagreement.
            cut = choice.finish_reason == "length" and not ANSWER_SENTENCE.search(text)
            agrees = cut or extract_answer(text, "classification", labels) == gold_of(request)
            calls.append((seconds, answer.usage.prompt_tokens, answer.usage.completion_tokens, cut, agrees))
        server = throughput(reader[0]())
    n = len(calls)
    prompt, completion = sum(c[1] for c in calls), sum(c[2] for c in calls)
    return {
        "teacher": model_file,
        "max_tokens": max_tokens,
        "calls": n,
        "s_per_call": round(sum(c[0] for c in calls) / n, 2),
        "completion_tokens_per_call": round(completion / n, 1),
        "cut": round(sum(c[3] for c in calls) / n, 3),
        "agrees_with_gold": round(sum(c[4] for c in calls) / n, 3),
        "usd_per_1000_calls": round((prompt * price[0] + completion * price[1]) / 1e6 / n * 1000, 4),
        "prompt_tok_s": server and server["prompt_tokens_per_s"],
        "gen_tok_s": server and server["generation_tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", required=True, help="MODEL_FILE:MAX_TOKENS")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--price", type=float, nargs=2, default=[0.15, 0.60], help="USD per 1M input, output tokens")
    args = parser.parse_args()
    requests = recorded_requests(args.rows, args.seed)
    results = []
    for setting in args.setting:
        model_file, max_tokens = setting.rsplit(":", 1)
        results.append(run_setting(model_file, int(max_tokens), requests, args.threads, args.price))
        print(json.dumps(results[-1]), file=sys.stderr)
    cols = list(results[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"\nprice {args.price[0]}/{args.price[1]} USD per 1M input/output tokens (the local default is free)")
    print(f"load average {os.getloadavg()[0]:.2f}; command: python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
