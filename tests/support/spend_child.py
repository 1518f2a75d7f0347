"""A miniature annotate step that pays under a dollar cap, run as a subprocess
by the kill -9 tests: its payments are journalled under one payer, as a stage's are.

usage: python spend_child.py BASE_URL WORKDIR MAX_USD
Reads WORKDIR/rows.jsonl; writes WORKDIR/usage.json (the step's teacher usage)
inside the client block, as the stage scripts write their outputs.
"""

import json
import sys

from teacher_helpers import INFO, make_params

from baldistill.core.errors import BaldistillError
from baldistill.core.rows import read_rows
from baldistill.teacher.annotation import annotate
from baldistill.teacher.endpoint import open_client

PRICE = {"input_per_1m": 1.0, "output_per_1m": 2.0}


def main(base_url: str, workdir: str, max_usd: str) -> None:
    rows = read_rows(f"{workdir}/rows.jsonl")
    params = make_params(base_url, concurrency=2, max_retries=1, price=PRICE)
    cap = None if max_usd == "none" else float(max_usd)
    with open_client(params.teacher, budget=len(rows), backoff=0.01, max_usd=cap, payer="run|annotate@s0") as client:
        _, report = annotate(rows, 0, params.teacher, params.data.max_input_chars, INFO, client)
        with open(f"{workdir}/usage.json", "w") as out:
            json.dump(report["teacher"], out)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:4])
    except BaldistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
