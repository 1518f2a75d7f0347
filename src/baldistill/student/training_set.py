"""The training set of stage k: every row gathered in stages 0..k (Section 3.6).

Pool rows annotated by the teacher and synthetic rows are kept as they are;
`duplicate` rows (policy duplicate) are copies of rows gathered earlier and
take that row's teacher rationale, since a greedy teacher would answer the
same input the same way (no second call is paid for them).
"""

from __future__ import annotations

from baldistill.core.rows import Row

DUPLICATE_MARK = "#dup"


def original_id(row_id: str) -> str:
    return row_id.split(DUPLICATE_MARK, 1)[0]


def gather(
    previous: list[Row], annotated: list[Row], synthetic: list[Row], selected: list[Row]
) -> tuple[list[Row], dict]:
    """(training rows of stages 0..k, report). Duplicates whose original was
    dropped (e.g. an annotation that disagreed with the gold label under
    teacher.on_mismatch: drop) are skipped and counted."""
    rows = previous + annotated + synthetic
    by_id = {row.id: row for row in rows}
    skipped = 0
    for row in selected:
        if row.source != "duplicate":
            continue
        source = by_id.get(original_id(row.id))
        if source is None:
            skipped += 1
            continue
        rows.append(source.with_(id=row.id, source="duplicate", stage=row.stage))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.source or "pool"] = counts.get(row.source or "pool", 0) + 1
    return rows, {
        "rows": len(rows),
        "by_source": counts,
        "new_rows": len(rows) - len(previous),
        "duplicates_skipped": skipped,
    }
