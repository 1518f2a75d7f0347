"""evaluate STAGE: the stage's student on the test set: macro/micro scores,
per domain and head vs tail, as DVC metrics and plots."""

import sys

from baldistill import layout
from baldistill.dataset_info import DatasetInfo
from baldistill.evaluation import evaluate
from baldistill.jsonl import read_json, write_json, write_jsonl
from baldistill.params import load_params
from baldistill.plots import domain_chart, write_domain_csv
from baldistill.rows import read_rows
from baldistill.stage import stage_command


@stage_command("stage")
def main(stage: str) -> None:
    params = load_params()
    here = layout.StagePaths(stage)
    info = DatasetInfo.load(layout.INFO)
    metrics, predictions = evaluate(read_rows(layout.TEST), params, info.task, info.labels,
                                    read_json(layout.COUNTS), str(here.adapter))
    threshold = params.data.head_threshold
    summary = {k: v for k, v in metrics.items() if k != "per_domain"}  # per domain: the CSV
    write_json(here.metrics, {"policy": params.policy.name, "stage": stage, **summary})
    write_domain_csv(metrics, threshold, here.per_domain_csv)
    domain_chart(metrics, threshold, here.per_domain_png, title=f"{info.name} {params.policy.name} {stage}")
    write_jsonl(here.predictions, predictions)
    print(f"{stage}: macro {metrics['macro']:.4f} micro {metrics['micro']:.4f} "
          f"head {metrics['head']} tail {metrics['tail']}", file=sys.stderr)


if __name__ == "__main__":
    main()
