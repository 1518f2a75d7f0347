"""Which labels a student gives: those it never predicts, those it over-predicts, and
where the head domains' rows go (a confusion chart).

A student that never answers the two labels making up most of a long-tailed test
set can still look good on a balanced one (R52: earn and acq are 69% of the full
test split, 40 of the 514 capped rows), so the report and `baldistill summary`
name, per run, the labels never predicted and those predicted on at least
OVER_PREDICTED times as many rows as are gold (counted on the test rows scored).
Classification only: elsewhere the answers are letters or texts, not labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from baldistill.core.files import atomic_open
from baldistill.core.metrics import NO_ANSWER, label_set, to_label
from baldistill.core.rows import head_to_tail

OVER_PREDICTED = 2.0  # predicted rows / gold rows at or above this is over-predicted
SHOWN = 8  # labels named per list; the rest are counted


def label_use(golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str]) -> dict:
    """{"never": [(label, gold rows)], "over": [(label, predicted rows, gold rows)], "no_answer": rows}.

    never: gold labels of these rows the student never predicted, most gold rows first;
    over: labels predicted on >= OVER_PREDICTED x their gold rows (or never gold), worst first.
    """
    labels = label_set(golds, labels)
    gold_rows = Counter(golds)
    mapped = [to_label(p, labels) for p in preds]
    predicted = Counter(m for m in mapped if m != NO_ANSWER)
    never = [(label, gold_rows[label]) for label in head_to_tail(gold_rows) if not predicted[label]]
    over = [(label, n, gold_rows[label]) for label, n in predicted.items() if n >= OVER_PREDICTED * gold_rows[label]]
    over.sort(key=lambda item: (-(item[1] / item[2]) if item[2] else -np.inf, -item[1], item[0]))
    return {"never": never, "over": over, "no_answer": mapped.count(NO_ANSWER)}


def label_use_line(use: dict, n_labels: int, test_counts: Mapping[str, int] | None = None) -> str:
    """One line: the never-predicted labels (with the share of the full split they are) and the over-predicted."""
    never, over = use["never"], use["over"]
    shown = ", ".join(f"{label} ({n})" for label, n in never[:SHOWN]) + (
        f", +{len(never) - SHOWN}" * (len(never) > SHOWN)
    )
    text = f"never predicted {len(never)} of {n_labels} labels" + (f": {shown}" if never else "")
    if never and test_counts:
        share = sum(test_counts.get(label, 0) for label, _ in never) / sum(test_counts.values())
        text += f" ({100 * share:.0f}% of the full test split)"
    listed = ", ".join(f"{label} {n}/{gold}" for label, n, gold in over[:SHOWN]) + (
        f", +{len(over) - SHOWN}" * (len(over) > SHOWN)
    )
    return text + f"; over-predicted (predicted/gold rows >= {OVER_PREDICTED:g}): " + (listed or "none")


def label_use_markdown(records: Sequence[dict]) -> str:
    """The report's section: one line per classification run."""
    lines = []
    for record in records:
        info, rows = record["info"], record["predictions"]
        if info["task"] != "classification":
            continue
        golds, preds = [r["gold"] for r in rows], [r["pred"] for r in rows]
        use = label_use(golds, preds, info.get("labels") or [])
        n_labels = len(set(golds))
        lines.append(f"- {record['summary']['experiment']}: {label_use_line(use, n_labels, info.get('test_counts'))}")
    if not lines:
        return ""
    intro = "\nLabels each student gives, on its test rows (gold rows in brackets):\n"
    return intro + "\n".join(lines) + "\n"


def head_confusion(records: Sequence[dict], head: Sequence[str]) -> np.ndarray:
    """Rows of the `head` labels (gold) summed over `records`: columns are the head labels,
    then any other label, then no answer."""
    column = {label: i for i, label in enumerate(head)}
    matrix = np.zeros((len(head), len(head) + 2))
    for record in records:
        labels = label_set([r["gold"] for r in record["predictions"]], record["info"].get("labels") or [])
        for row in record["predictions"]:
            if row["gold"] in column:
                pred = to_label(row["pred"], labels)
                where = len(head) + 1 if pred == NO_ANSWER else column.get(pred, len(head))
                matrix[column[row["gold"]], where] += 1
    return matrix


def confusion_chart(groups: Mapping[str, Sequence[dict]], head: Sequence[str], out_png: str | Path) -> None:
    """One panel per policy: where its head domains' test rows go (share of each gold row)."""
    figure = Figure(figsize=(4.2 * len(groups) + 1, 0.32 * len(head) + 2.4), layout="constrained")
    names = [*head, "other", "none"]
    for k, (policy, records) in enumerate(groups.items()):
        ax = figure.add_subplot(1, len(groups), k + 1)
        counts = head_confusion(records, head)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(100 * shares, cmap="Blues", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(head)), head if k == 0 else [], fontsize=7)
        ax.set_title(f"{policy} ({len(records)} run{'s' * (len(records) != 1)})", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        if k == 0:
            ax.set_ylabel("gold (head domains)", fontsize=8)
    figure.suptitle("head domains: share of each gold label's test rows by predicted label", fontsize=10)
    with atomic_open(out_png, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
