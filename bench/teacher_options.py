"""llama.cpp's own options for the local teacher, through teacher/server.py, side by side.

    python bench/teacher_options.py [--quick] [--calls 6] [--repeat 2] [--model-file qwen2.5-coder-1.5b]

Real R52 annotation prompts (the annotate template with the 52 labels and the gold
label, as the annotate step renders them; greedy, max_tokens 64 like teacher.max_tokens)
are sent one at a time to a server started by `teacher.server.local_server` with each
setting in turn; settings alternate per repetition (A B C ..., then ... C B A) so outside
load hits them alike. Per setting: seconds per call (median of the repetitions' means),
prompt and generated tokens/s from the server's own log (teacher.server_log), how many
prompt tokens the server's prefix cache spared (API prompt tokens minus those it
evaluated), and answers identical to the first setting's (temperature 0).
The Q4_0 setting re-quantises the teacher (llama.cpp repacks Q4_0 into its
interleaved CPU layout) into a temporary file first; its answers are compared too.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import openai
from student_common import command

from baldistill.core import assets
from baldistill.data.datasets import load_r52, truncate_input
from baldistill.prompts import load_prompts
from baldistill.teacher.server import local_server
from baldistill.teacher.server_log import throughput


def annotation_prompts(calls: int) -> list[str]:
    loaded = load_r52()
    labels = ", ".join(sorted({r.label for r in loaded.train}))
    rows = random.Random(1).sample(loaded.train, calls)
    templates = load_prompts("classification")
    return [
        templates.render("annotate", dataset="R52", labels=labels, label=r.label, input=truncate_input(r.input, 600))
        for r in rows
    ]


def requantize_q4_0(source: Path, out: Path) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = 2
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {source}")
    return out


def run_setting(model: Path, threads: int, extra: list[str], env: dict, texts: list[str], max_tokens: int):
    """(seconds per call, answers, log throughput, API prompt tokens) for one server start."""
    reader: dict = {}

    def keep(read) -> None:
        reader["log"] = read

    with local_server(model, "teacher", threads, 4096, 300, keep, extra_args=extra, env=env) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-local", max_retries=0, timeout=900)

        def call(text: str):
            return client.chat.completions.create(
                model="teacher", messages=[{"role": "user", "content": text}], temperature=0, max_tokens=max_tokens
            )

        call("Say OK.")  # warm-up: weights paged in, first graph built
        before = len(reader["log"]()) if "log" in reader else 0
        start, answers, api_prompt = time.perf_counter(), [], 0
        for text in texts:
            reply = call(text)
            answers.append(reply.choices[0].message.content)
            api_prompt += reply.usage.prompt_tokens
        seconds = (time.perf_counter() - start) / len(texts)
        log = reader["log"]()[before:] if "log" in reader else ""
    return seconds, answers, throughput(log), api_prompt


def settings(model: Path, q4_0: Path | None) -> dict[str, tuple[Path, int, list[str], dict]]:
    plain = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    passive = {**plain, "OMP_WAIT_POLICY": "PASSIVE"}
    table = {
        "today (2 threads)": (model, 2, [], plain),
        "OMP_WAIT_POLICY=PASSIVE": (model, 2, [], passive),
        "n_batch = n_ubatch = 128": (model, 2, ["--n_batch", "128", "--n_ubatch", "128"], plain),
        "1 thread": (model, 1, [], plain),
    }
    if q4_0 is not None:
        table["Q4_0 (repacked)"] = (q4_0, 2, [], plain)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 calls, 1 repetition, no Q4_0")
    p.add_argument("--calls", type=int, default=6)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model-file", default="qwen2.5-coder-1.5b", help="teacher asset name")
    p.add_argument("--no-q4-0", action="store_true", help="skip the re-quantised Q4_0 setting")
    args = p.parse_args()
    if args.quick:
        args.calls, args.repeat, args.no_q4_0 = 4, 1, True
    model = assets.path_of(args.model_file)
    texts = annotation_prompts(args.calls)
    with tempfile.TemporaryDirectory(prefix="teacher-q4_0-") as tmp:
        q4_0 = None if args.no_q4_0 else requantize_q4_0(model, Path(tmp) / "teacher-q4_0.gguf")
        table = settings(model, q4_0)
        names = list(table)
        results: dict[str, list] = {name: [] for name in names}
        for rep in range(args.repeat):
            for name in names if rep % 2 == 0 else names[::-1]:
                results[name].append(run_setting(*table[name], texts, args.max_tokens))
                print(f"rep {rep + 1} {name}: {results[name][-1][0]:.2f} s/call", flush=True)
    reference = results[names[0]][0][1]
    print(f"\n{args.calls} R52 annotation calls per setting, {args.repeat} repetitions, model {model.name}")
    print(
        f"{'setting':26s} {'s/call':>7s} {'vs today':>8s} {'prompt tok/s':>12s} {'gen tok/s':>9s} "
        f"{'prefix-cached':>13s} {'same answers':>12s}"
    )
    today = statistics.median(r[0] for r in results[names[0]])
    for name in names:
        runs = results[name]
        per_call = statistics.median(r[0] for r in runs)
        logs = [r[2] for r in runs if r[2]]
        prompt_rate = statistics.median(x["prompt_tokens_per_s"] or 0 for x in logs) if logs else float("nan")
        gen_rate = statistics.median(x["generation_tokens_per_s"] or 0 for x in logs) if logs else float("nan")
        spared = runs[0][3] - logs[0]["prompt_tokens_evaluated"] if logs else 0
        same = sum(a == b for a, b in zip(runs[0][1], reference))
        print(
            f"{name:26s} {per_call:7.2f} {today / per_call:7.2f}x {prompt_rate:12.1f} {gen_rate:9.1f} "
            f"{spared:6d}/{runs[0][3]:<6d} {same:>8d}/{len(texts)}"
        )
    print("reproduce:", command())


if __name__ == "__main__":
    main()
