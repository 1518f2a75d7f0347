"""Are the teacher's rationales whole, and worth learning from? Measured on real R52 pool rows.

Sends the project's own annotation prompts (teacher.gold_in_prompt true and
false) and synthesis prompts, rendered by teacher.annotation and
teacher.synthesis, through the project's own client and local llama.cpp
server (teacher.server) at temperature 0 (synthesis at
teacher.synth_temperature), on a fixed sample of pool rows, one per domain
over as many domains as asked. For each setting it reports:

- finish_reason counts ("stop": the answer ended by itself; "length": cut);
- answer-sentence rate: the rationale states "The answer is ..." itself;
- label-only rate: core.answers.restates_label (no reasoning beyond the label);
- gold agreement: its stated answer is the gold label (extract_answer);
- completion tokens p50/p95 (the teacher's tokenizer, from usage);
- student-tokenizer length p50/p95 of the rationale as the student would
  learn it (before student.max_rationale_tokens cuts it);
- seconds per call and the server's prompt/generation tokens per second.

Quality numbers at temperature 0 do not depend on machine load; times do.

    python bench/rationales.py --rows 30 --out docs/results/rationales-1.5b
    python bench/rationales.py --model-file qwen2.5-coder-0.5b --model qwen2.5-coder-0.5b-instruct --rows 30 ...
    python bench/rationales.py --combine docs/results/prompts/*.json   # one table of earlier runs

Set BALDISTILL_TEACHER_CACHE to a directory of your own: answers are cached
there, so a re-run with the same prompts pays nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from baldistill.core.answers import ANSWER_SENTENCE, answers_match, extract_answer, restates_label
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import load_params
from baldistill.core.rows import Row, write_rows
from baldistill.data import datasets
from baldistill.prompts import load_prompts
from baldistill.student.model import load_tokenizer
from baldistill.teacher.annotation import annotate, annotation_request, annotation_requests
from baldistill.teacher.endpoint import open_client
from baldistill.teacher.synthesis import parse_synthetic, synthesis_calls


def sample_rows(pool: list[Row], count: int, seed: int) -> list[Row]:
    """`count` rows, one per domain in a seeded order of the domains (then a second round)."""
    rng = random.Random(seed)
    by_domain: dict[str, list[Row]] = {}
    for row in sorted(pool, key=lambda r: r.id):
        by_domain.setdefault(row.domain, []).append(row)
    domains = sorted(by_domain)
    rng.shuffle(domains)
    for rows in by_domain.values():
        rng.shuffle(rows)
    picked: list[Row] = []
    round_ = 0
    while len(picked) < count and any(len(rows) > round_ for rows in by_domain.values()):
        picked += [by_domain[d][round_] for d in domains if len(by_domain[d]) > round_][: count - len(picked)]
        round_ += 1
    return picked


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 100)) - 1))]


def summarize(name: str, rationales: list[str], labels: list[str], responses, usage, tokenizer, info) -> dict:
    n = len(responses)
    finish: dict[str, int] = {}
    for response in responses:
        finish[response.finish_reason or "unknown"] = finish.get(response.finish_reason or "unknown", 0) + 1
    stated = [bool(ANSWER_SENTENCE.search(text)) for text in rationales]
    answers = [extract_answer(text, info.task, info.labels or None) for text in rationales]
    completion = [r.completion_tokens for r in responses]
    student_len = [len(tokenizer(text.strip(), add_special_tokens=False).input_ids) for text in rationales]
    paid = [r for r in responses if not r.cached]
    seconds = usage.get("seconds") or 0.0
    server = usage.get("server") or {}
    return {
        "setting": name,
        "calls": n,
        "finish_reasons": dict(sorted(finish.items())),
        "stop_rate": round(finish.get("stop", 0) / n, 3) if n else None,
        "stop_with_answer_sentence": sum(r.finish_reason == "stop" and s for r, s in zip(responses, stated)),
        "answer_sentence_rate": round(sum(stated) / n, 3) if n else None,
        "label_only": sum(restates_label(t, g) for t, g in zip(rationales, labels)),
        "gold_agreement": round(sum(answers_match(a, g, info.task) for a, g in zip(answers, labels)) / n, 3)
        if n
        else None,
        "completion_tokens_p50": percentile(completion, 50),
        "completion_tokens_p95": percentile(completion, 95),
        "completion_tokens_max": max(completion, default=None),
        "student_tokens_p50": percentile(student_len, 50),
        "student_tokens_p95": percentile(student_len, 95),
        "student_tokens_max": max(student_len, default=None),
        "calls_paid": len(paid),
        "seconds_per_paid_call": round(seconds / len(paid), 2) if paid else None,
        "server_prompt_tokens_per_s": server.get("prompt_tokens_per_s"),
        "server_generation_tokens_per_s": server.get("generation_tokens_per_s"),
    }


def annotate_setting(rows, teacher, params, info, tokenizer, gold: bool, template: Path | None = None):
    """(summary, examples) of annotating `rows`; `template` replaces the prompts' `annotate` (e.g. an older one)."""
    teacher = teacher.model_copy(update={"gold_in_prompt": gold})
    if template is None:
        requests = annotation_requests(rows, teacher, params.data.max_input_chars, info)
    else:
        prompts = replace(load_prompts(info.task), annotate=yaml.safe_load(template.read_text())["annotate"])
        cut = params.data.max_input_chars
        requests = [annotation_request(prompts, teacher.max_tokens, cut, info, row) for row in rows]
    with open_client(teacher, budget=len(requests)) as client:
        responses, usage = client.run_batch(requests, desc=f"annotate gold={gold}")
    texts = [r.content.strip() for r in responses]
    name = f"annotate, gold {'given' if gold else 'withheld'}, max_tokens {teacher.max_tokens}"
    name += f", annotate from {template}" if template else ""
    summary = summarize(name, texts, [r.label for r in rows], responses, usage.as_dict(), tokenizer, info)
    examples = [
        {"id": row.id, "label": row.label, "finish_reason": resp.finish_reason, "rationale": text}
        for row, resp, text in zip(rows, responses, texts)
    ]
    return summary, examples


def synthesize_setting(pool, rows, calls_wanted, teacher, params, info, tokenizer) -> tuple[dict, list[dict]]:
    """One synthesis call per sampled row's domain (demonstrations drawn from the whole pool)."""
    quota: dict[str, int] = {}
    for row in rows[:calls_wanted]:
        quota[row.domain] = quota.get(row.domain, 0) + 1
    calls = synthesis_calls(pool, quota, 0, teacher, params.policy.seed, params.data.max_input_chars, info)
    with open_client(teacher, budget=len(calls)) as client:
        responses, usage = client.run_batch([c.request for c in calls], desc="synthesize")
    prompts = load_prompts(info.task)
    parsed = [
        parse_synthetic(resp, c.domain, c.i, 0, info, prompts, [], c.demonstrations)
        for c, resp in zip(calls, responses)
    ]
    # The rationale as the synthesize step keeps it; a dropped row is measured on its raw text.
    texts = [row.rationale if row else resp.content for (row, _), resp in zip(parsed, responses)]
    name = f"synthesize, max_tokens {teacher.synth_max_tokens}, T {teacher.synth_temperature}"
    summary = summarize(name, texts, [c.domain for c in calls], responses, usage.as_dict(), tokenizer, info)
    dropped: dict[str, int] = {}
    for row, reason in parsed:
        if row is None:
            dropped[reason] = dropped.get(reason, 0) + 1
    summary["kept"] = sum(row is not None for row, _ in parsed)
    summary["dropped"] = dict(sorted(dropped.items()))
    examples = [
        {
            "domain": c.domain,
            "finish_reason": resp.finish_reason,
            "kept": row is not None,
            "reason": reason,
            "text": resp.content,
        }
        for c, resp, (row, reason) in zip(calls, responses, parsed)
    ]
    return summary, examples


COLUMNS = [
    ("setting", "setting"),
    ("calls", "calls"),
    ("stop_rate", "stop"),
    ("answer_sentence_rate", "answer sentence"),
    ("label_only", "label only"),
    ("gold_agreement", "gold agreement"),
    ("completion_tokens_p50", "completion p50"),
    ("completion_tokens_p95", "completion p95"),
    ("student_tokens_p50", "student tok p50"),
    ("student_tokens_p95", "student tok p95"),
    ("seconds_per_paid_call", "s/call"),
    ("server_prompt_tokens_per_s", "prompt tok/s"),
    ("server_generation_tokens_per_s", "gen tok/s"),
]


def markdown(summaries: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(title for _, title in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for s in summaries:
        lines.append("| " + " | ".join("" if s.get(key) is None else str(s[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def combined(paths: list[Path]) -> str:
    """One markdown table of the summaries in several OUT.json files, each row named by its teacher."""
    summaries = []
    for path in paths:
        payload = json.loads(path.read_text())
        teacher = payload["header"].split(" (", 1)[0].removeprefix("Teacher ")
        summaries += [{**s, "setting": f"{teacher}: {s['setting']}"} for s in payload["summaries"]]
    return markdown(summaries, "Combined from " + ", ".join(p.name for p in paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-file", default=None, help="teacher.local.model_file (default: params.yaml's)")
    parser.add_argument("--model", default=None, help="teacher.model alias (default: params.yaml's)")
    parser.add_argument("--rows", type=int, default=30, help="pool rows, one per domain first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gold", choices=["given", "withheld", "both"], default="both")
    parser.add_argument("--max-tokens", type=int, default=None, help="teacher.max_tokens (default: params.yaml's)")
    parser.add_argument("--synth", type=int, default=0, help="synthesis calls (one per sampled row's domain)")
    parser.add_argument("--synth-max-tokens", type=int, default=None)
    parser.add_argument("--annotate-template", type=Path, help="also annotate with this YAML's `annotate` (gold given)")
    parser.add_argument("--train-out", type=Path, help="write the rows as the annotate step keeps them (gold given)")
    parser.add_argument("--out", type=Path, help="writes OUT.json and OUT.md")
    parser.add_argument("--combine", type=Path, nargs="+", help="print one table of these OUT.json files and stop")
    args = parser.parse_args()
    if args.combine:
        print(combined(args.combine))
        return
    if args.out is None:
        parser.error("--out is required")
    params = load_params("params.yaml")
    teacher = params.teacher
    update: dict = {}
    if args.model:
        update["model"] = args.model
    if args.max_tokens:
        update["max_tokens"] = args.max_tokens
    if args.synth_max_tokens:
        update["synth_max_tokens"] = args.synth_max_tokens
    if args.model_file:
        update["local"] = teacher.local.model_copy(update={"model_file": args.model_file})
    teacher = teacher.model_copy(update=update)
    pool, _, _, info_dict = datasets.prepare(params.data)
    info = DatasetInfo(info_dict["name"], info_dict["task"], list(info_dict["labels"]), info_dict["head_threshold"])
    rows = sample_rows(pool, args.rows, args.seed)
    tokenizer = load_tokenizer(params.student.model)
    summaries, examples = [], {}
    for gold in {"given": [True], "withheld": [False], "both": [True, False]}[args.gold]:
        summary, shown = annotate_setting(rows, teacher, params, info, tokenizer, gold)
        summaries.append(summary)
        examples[summary["setting"]] = shown
        print(json.dumps(summary), flush=True)
    if args.train_out:  # the annotate step itself, on the answers just cached: the rows a stage would train on
        with open_client(teacher, budget=len(rows)) as client:
            kept, report = annotate(rows, 0, teacher, params.data.max_input_chars, info, client)
        write_rows(args.train_out, kept)
        print(json.dumps({k: v for k, v in report.items() if k != "teacher"}), flush=True)
    if args.annotate_template:
        summary, shown = annotate_setting(rows, teacher, params, info, tokenizer, True, args.annotate_template)
        summaries.append(summary)
        examples[summary["setting"]] = shown
        print(json.dumps(summary), flush=True)
    if args.synth:
        summary, shown = synthesize_setting(pool, rows, args.synth, teacher, params, info, tokenizer)
        summaries.append(summary)
        examples[summary["setting"]] = shown
        print(json.dumps(summary), flush=True)
    header = (
        f"Teacher {teacher.model} ({teacher.local.model_file}), {len(rows)} R52 pool rows over "
        f"{len({r.domain for r in rows})} domains (seed {args.seed}); command: python {' '.join(sys.argv)}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"header": header, "summaries": summaries, "examples": examples}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(summaries, header))
    print(markdown(summaries, header))


if __name__ == "__main__":
    main()
