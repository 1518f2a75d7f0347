"""The previous stage's student scored per domain on the validation rows held
out of the pool: what policy feedback allocates the next stage's calls by.

It runs the evaluation library (student.evaluation) unchanged and reads each
row's gold and prediction back through the same row score the evaluation
reports, so it depends on the per-row result, not on metrics.json's layout.
"""

from __future__ import annotations

from collections.abc import Mapping

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.feedback import DomainScore, tally
from baldistill.core.params import Evaluate, Student
from baldistill.core.rows import Row
from baldistill.student.evaluation import evaluate, row_score
from baldistill.student.parallel import ONE_PROCESS, Workers


def score_by_domain(
    rows: list[Row],
    cfg: Evaluate,
    student: Student,
    info: DatasetInfo,
    pool_counts: Mapping[str, int],
    adapter_dir: str,
    workers: Workers = ONE_PROCESS,
) -> dict[str, DomainScore]:
    """{domain: correct of total validation rows} for the student with `adapter_dir`,
    every pool domain listed (0 of 0 where it has no validation row)."""
    if not rows:
        return {d: DomainScore(0, 0) for d in pool_counts}
    counts = dict(pool_counts)
    _, predictions = evaluate(
        rows, cfg, student, info.head_threshold, info.task, info.labels, counts, adapter_dir, workers
    )
    scored = ((p["domain"], row_score(info.task, p["gold"], p["pred"], info.labels)) for p in predictions)
    return tally(list(pool_counts), scored)
