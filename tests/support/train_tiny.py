"""Train a tiny student for a few steps; run by tests/test_training.py under
`accelerate launch --cpu --num_processes 2` to prove `train` works multi-process."""

from __future__ import annotations

import json
import sys

from accelerate import PartialState
from tiny_training import tiny_params  # this script's own folder (tests/support) is on sys.path

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.rows import Row
from baldistill.student.training import train


def main(model_dir: str, out_dir: str, live_dir: str, summary_path: str) -> None:
    params = tiny_params(model_dir, micro_batch_size=1, epochs=2)
    labels = ["earn", "acq", "gold", "crude"]
    rows = [
        Row(
            id=str(i),
            domain=d,
            input=f"news {i}: {d} moved today",
            label=d,
            rationale=f"It is about {d}. The answer is {d}.",
        )
        for i, d in enumerate(labels)
    ]
    summary = train(
        rows, params.train, params.student, DatasetInfo("tiny", "classification", labels), out_dir, live_dir
    )
    if PartialState().is_main_process:
        with open(summary_path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle)


if __name__ == "__main__":
    main(*sys.argv[1:5])
