"""evaluate_zeroshot: the base student, untrained (zero-shot CoT), scored on the
same rows as every stage, so a run can say what its training bought. Zero-shot
CoT is a two-step method (Kojima et al.): where the reasoning states no answer,
the answer is generated after its reasoning and "The answer is", and parsed
like any answer. It reads no policy param, so a policy change does not re-run it.
Like evaluate, it runs under evaluate.launch; the main process alone writes."""

import sys

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import read_json
from baldistill.core.params import START, load_params
from baldistill.core.rows import read_rows
from baldistill.core.step import entry_point
from baldistill.report.evaluation_files import write_evaluation
from baldistill.student.evaluation import evaluate
from baldistill.student.parallel import Workers


@entry_point
def main() -> None:
    workers = Workers.from_launcher()  # first: it joins the launcher's process group
    params = load_params()
    here = layout.StagePaths(START)
    info = DatasetInfo.load(layout.INFO)
    metrics, predictions = evaluate(
        read_rows(layout.scored_rows(params.evaluate.split)),
        params.evaluate,
        params.student,
        info.head_threshold,
        info.task,
        info.labels,
        read_json(layout.COUNTS),
        str(here.adapter),
        workers,
        test_counts=info.test_counts if params.evaluate.split == "test" else None,
        extraction=True,  # Zero-shot CoT's own second step: the answer generated after the trigger
    )
    if not workers.is_main:
        return  # every process holds the same results; one writes them
    header = {"policy": "zeroshot", "stage": START, "split": params.evaluate.split}
    write_evaluation(here, metrics, predictions, header, info.head_threshold, f"{info.name} zero-shot student")
    print(f"zero-shot: macro {metrics['macro']:.4f} micro {metrics['micro']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
