"""train STAGE PREVIOUS: a fresh LoRA on the base student, fine-tuned on every
row gathered in stages 0..STAGE (none for a policy that does not train: its
stage scores the base student). Run it under `accelerate launch` for several
GPUs or machines (params train.launch). Loss, learning rate and tokens/s per
step, and the run's summary, go to metrics/STAGE/train/ through dvclive."""

import sys

from accelerate import PartialState

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Student, load_params
from baldistill.core.policies import policy_spec
from baldistill.core.rows import read_rows, write_rows
from baldistill.core.step import stage_command
from baldistill.student.training import train
from baldistill.student.training_set import gather


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here, before = layout.StagePaths(stage), layout.StagePaths(previous)
    rows, gathered = gather(
        read_rows(before.train_set), read_rows(here.annotated), read_rows(here.synthetic), read_rows(here.selected)
    )
    if not policy_spec(params.policy.name).trains:
        rows = []
    info = DatasetInfo.load(layout.INFO)
    # Leaf by leaf, as dvc.yaml lists them: a student key training does not read re-trains nothing.
    student = Student(
        model=params.student.model,
        lora=params.student.lora,
        max_input_tokens=params.student.max_input_tokens,
        max_rationale_tokens=params.student.max_rationale_tokens,
    )
    summary = train(rows, params.train, student, info, str(here.adapter), str(here.train_live), {"gathered": gathered})
    if PartialState().is_main_process:
        write_rows(here.train_set, rows)
        print(f"{stage}: trained on {len(rows)} rows in {summary['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
