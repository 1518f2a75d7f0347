"""A miniature annotate stage in teacher.mode batch, run as a subprocess by the kill -9 test.

usage: python batch_child.py BASE_URL WORKDIR
Reads WORKDIR/rows.jsonl, writes WORKDIR/out.jsonl; BaldistillError -> one line, exit 2.
"""

import sys

from teacher_helpers import INFO, make_params

from baldistill.core.errors import BaldistillError
from baldistill.core.rows import read_rows, write_rows
from baldistill.teacher.annotation import annotate
from baldistill.teacher.endpoint import open_client

PAYER = "test|workspace|annotate@s0"  # the same step on both runs: the re-run resumes its job


def main(base_url: str, workdir: str) -> None:
    rows = read_rows(f"{workdir}/rows.jsonl")
    params = make_params(base_url, mode="batch", batch_poll_seconds=0.05, price={"input_per_1m": 1.0})
    with open_client(params.teacher, budget=len(rows), payer=PAYER) as client:
        out, _ = annotate(rows, 0, params.teacher, params.data.max_input_chars, INFO, client)
        write_rows(f"{workdir}/out.jsonl", out)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except BaldistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
