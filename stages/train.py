"""train STAGE PREVIOUS: a fresh LoRA on the base student, fine-tuned on every
row gathered in stages 0..STAGE. Run it under `accelerate launch` for several
GPUs or machines (params train.launch)."""

import sys

from accelerate import PartialState

from baldistill import layout
from baldistill.dataset_info import DatasetInfo
from baldistill.gather import gather
from baldistill.jsonl import write_json
from baldistill.params import load_params
from baldistill.rows import read_rows, write_rows
from baldistill.stage import stage_command
from baldistill.training import train


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here, before = layout.StagePaths(stage), layout.StagePaths(previous)
    rows, gathered = gather(read_rows(before.train_set), read_rows(here.annotated), read_rows(here.synthetic),
                            read_rows(here.selected))
    if params.policy.name == "zeroshot":
        rows = []
    task = DatasetInfo.load(layout.INFO).task
    summary = train(rows, params, task, str(here.adapter), str(here.train_log))
    if PartialState().is_main_process:
        write_rows(here.train_set, rows)
        write_json(here.report("train"), {**summary, "gathered": gathered})
        print(f"{stage}: trained on {len(rows)} rows in {summary['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
