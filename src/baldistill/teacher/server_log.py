"""What the local llama.cpp server's log says about its speed.

llama-cpp-python (verbose, its default) prints each completion's timings:

    llama_perf_context_print: prompt eval time =  1234.56 ms /   300 tokens (...)
    llama_perf_context_print:        eval time =  5678.90 ms /    63 runs   (...)

Prompt tokens the server's prefix cache already held are not evaluated again,
so "prompt tokens" here counts tokens actually processed, which can be fewer
than the API's usage.prompt_tokens. The prompt time is read as total minus eval
time: llama.cpp books the first completion's prompt pass under neither line
(it prints e.g. "0.04 ms / 33 tokens" for it).
"""

from __future__ import annotations

import re

_PROMPT = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
_GENERATION = re.compile(r"(?<!prompt )eval time =\s*([\d.]+) ms /\s*(\d+) runs")
_TOTAL = re.compile(r"total time =\s*([\d.]+) ms /\s*(\d+) tokens")


def throughput(log_text: str) -> dict | None:
    """Prompt and generation tokens per second over every completion in the log; None if it has none."""
    tokens = [int(n) for _, n in _PROMPT.findall(log_text)]
    generation = [(float(ms), int(n)) for ms, n in _GENERATION.findall(log_text)]
    totals = [float(ms) for ms, _ in _TOTAL.findall(log_text)]
    if not generation or not (len(tokens) == len(generation) == len(totals)):
        return None
    prompt = [(max(total - gen[0], 0.0), n) for total, gen, n in zip(totals, generation, tokens)]

    def rate(pairs: list[tuple[float, int]]) -> float | None:
        ms, n = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        return round(n / (ms / 1000), 2) if ms > 0 else None

    return {
        "completions": len(generation),
        "prompt_tokens_evaluated": sum(n for _, n in prompt),
        "prompt_seconds": round(sum(ms for ms, _ in prompt) / 1000, 3),
        "prompt_tokens_per_s": rate(prompt),
        "generated_tokens": sum(n for _, n in generation),
        "generation_seconds": round(sum(ms for ms, _ in generation) / 1000, 3),
        "generation_tokens_per_s": rate(generation),
        "source": "llama.cpp server log",
    }
