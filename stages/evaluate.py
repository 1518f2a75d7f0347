"""evaluate STAGE: the stage's student on the test set (or, with evaluate.split:
validation, on the validation rows held out of the pool): macro/micro scores on
the test split's own distribution (a capped test set weighted by the full
split's per-domain counts; the validation rows are read as they are), the
balanced reading beside them, per domain and head vs tail, as DVC metrics and plots. Run it under `accelerate
launch` to share the generation between GPUs, processes or machines (params
evaluate.launch); the main process alone writes."""

import sys

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import read_json
from baldistill.core.params import load_params
from baldistill.core.policies import policy_spec
from baldistill.core.rows import read_rows
from baldistill.core.step import stage_command
from baldistill.report.evaluation_files import write_evaluation
from baldistill.student.evaluation import evaluate
from baldistill.student.parallel import Workers


@stage_command("stage")
def main(stage: str) -> None:
    workers = Workers.from_launcher()  # first: it joins the launcher's process group
    params = load_params()
    here = layout.StagePaths(stage)
    info = DatasetInfo.load(layout.INFO)
    threshold = info.head_threshold
    metrics, predictions = evaluate(
        read_rows(layout.scored_rows(params.evaluate.split)),
        params.evaluate,
        params.student,
        threshold,
        info.task,
        info.labels,
        read_json(layout.COUNTS),
        str(here.adapter),
        workers,
        test_counts=info.test_counts if params.evaluate.split == "test" else None,
        # A policy that trains nothing (zeroshot) scores the base student: the Zero-shot CoT
        # baseline, whose method includes its answer-extraction step (as evaluate_zeroshot).
        extraction=not policy_spec(params.policy.name).trains,
    )
    if not workers.is_main:
        return  # every process holds the same results; one writes them
    header = {"policy": params.policy.name, "stage": stage, "split": params.evaluate.split}
    title = f"{info.name} {params.policy.name} {stage}"
    write_evaluation(here, metrics, predictions, header, threshold, title)
    print(
        f"{stage}: macro {metrics['macro']:.4f} micro {metrics['micro']:.4f} "
        f"head {metrics['head']} tail {metrics['tail']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
