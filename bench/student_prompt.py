"""What the student prompt costs and does: tokens per row, and the zero-shot student on validation rows.

For the prompts of the package on PYTHONPATH (run it once per prompt version, from a
project whose data/prepared/ exists): prompt and target tokens per training row
(the rows of --train, encoded as training encodes them), and the base student's
validation macro, answer-sentence rate, valid-label rate and seconds
(student.evaluation.evaluate, evaluate.max_new_tokens from params.yaml); the
label counts read only the student's own answer sentences, never a second pass.

    PYTHONPATH=src python bench/student_prompt.py --train train.jsonl --json after.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import read_json
from baldistill.core.params import load_params
from baldistill.core.rows import read_rows
from baldistill.prompts import load_prompts
from baldistill.student.evaluation import evaluate
from baldistill.student.model import load_tokenizer
from baldistill.student.training import encode_example


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="training rows (JSONL) to count tokens on")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    params, info = load_params(), DatasetInfo.load(layout.INFO)
    tokenizer = load_tokenizer(params.student.model)
    prompts = load_prompts(info.task, info.labels)
    examples = [encode_example(r, tokenizer, prompts, params.student) for r in read_rows(args.train)]
    prompt_tokens = [sum(label == -100 for label in e.labels) for e in examples]
    target_tokens = [len(e.labels) - p for e, p in zip(examples, prompt_tokens)]
    rows = read_rows(layout.scored_rows("validation"))
    started = time.perf_counter()
    metrics, predictions = evaluate(
        rows, params.evaluate, params.student, info.head_threshold, info.task, info.labels,
        read_json(layout.COUNTS), None,
    )  # fmt: skip
    result = {
        "prompt_tokens_mean": round(statistics.mean(prompt_tokens), 1),
        "target_tokens_mean": round(statistics.mean(target_tokens), 1),
        "validation_rows": len(rows),
        "zero_shot_macro": round(metrics["macro"], 4),
        "zero_shot_answer_sentence_rate": round(metrics["answer_sentence_rate"], 3),
        # the student's own answer sentence names one of the labels / the gold one
        "zero_shot_own_valid_label": sum(
            p["route"] == "answer_sentence" and p["pred"] in info.labels for p in predictions
        ),
        "zero_shot_own_answer_right": sum(p["route"] == "answer_sentence" and p["score"] > 0 for p in predictions),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
