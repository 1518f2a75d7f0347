"""Scores of the student on the test set: overall, per domain, head vs tail.

Section 4 of the paper reports micro- and macro-averages because the data is
long-tailed: micro follows the head, macro gives every domain (class) one
vote. Figure 3 splits domains into head and tail by their pool size (Appendix
A: more than 50 training rows is head for R52). Everything here is a pure
function of the extracted answers, so it is tested without a model.

Per task type:
- classification: F1 via scikit-learn over all dataset labels. An answer that
  is missing or not a label becomes the sentinel class NO_ANSWER, which is not
  in the label set: it is a false negative for the gold class and a false
  positive for nobody. A domain's score is the F1 of its class.
- multiple_choice, math: accuracy (answers.answers_match); micro over rows,
  macro = mean of per-domain accuracy.
- abstractive_qa: SQuAD word-level F1 per row; micro = mean over rows,
  macro = mean of per-domain means.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score

from baldistill.core.answers import answers_match, normalize_text
from baldistill.core.dataset_info import check_task
from baldistill.core.errors import BaldistillError
from baldistill.core.rows import head_to_tail

NO_ANSWER = "<none>"

Match = Callable[[str | None, str], bool]


def word_f1(pred: str | None, gold: str) -> float:
    """SQuAD word-level F1 between an answer and the gold answer.

    A missing answer scores 0. If either side normalises to no words, the
    score is 1 only when both do (SQuAD's rule for empty answers).
    """
    if pred is None:
        return 0.0
    pred_words, gold_words = normalize_text(pred).split(), normalize_text(gold).split()
    if not pred_words or not gold_words:
        return float(pred_words == gold_words)
    common = sum((Counter(pred_words) & Counter(gold_words)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_words), common / len(gold_words)
    return 2 * precision * recall / (precision + recall)


def to_label(pred: str | None, labels: Sequence[str]) -> str:
    """The label `pred` names (case- and space-insensitively), else NO_ANSWER."""
    if pred is None:
        return NO_ANSWER
    if pred in labels:
        return pred
    canonical = {" ".join(label.lower().split()): label for label in labels}
    return canonical.get(" ".join(pred.lower().split()), NO_ANSWER)


def label_set(golds: Sequence[str], labels: Sequence[str]) -> list[str]:
    """All dataset labels, plus any gold label the caller forgot, in a stable order."""
    extra = sorted(set(golds) - set(labels))
    return list(dict.fromkeys([*labels, *extra]))


def classification_f1(golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str]) -> dict:
    """Micro-F1, macro-F1 and per-class F1 over every label.

    A label with neither gold nor predicted rows has no defined F1; it is left
    out of the macro average (zero_division=nan) rather than counted as 0, so
    a test subset that lacks a class is not penalised for it. A label that is
    predicted but never gold counts, with F1 0.
    """
    labels = label_set(golds, labels)
    mapped = [to_label(pred, labels) for pred in preds]
    kwargs = dict(labels=labels, zero_division=np.nan)
    per_class = f1_score(golds, mapped, average=None, **kwargs)
    return {
        "micro": float(f1_score(golds, mapped, average="micro", **kwargs)),
        "macro": float(f1_score(golds, mapped, average="macro", **kwargs)),
        "per_class": {label: float(value) for label, value in zip(labels, per_class)},
    }


def row_scores(task: str, golds: Sequence[str], preds: Sequence[str | None], match: Match | None = None) -> list[float]:
    """Per-row score for the row-averaged tasks: 1/0 accuracy or word F1."""
    if task == "abstractive_qa":
        return [word_f1(pred, gold) for pred, gold in zip(preds, golds)]
    match = match or (lambda pred, gold: answers_match(pred, gold, task))
    return [float(match(pred, gold)) for pred, gold in zip(preds, golds)]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def score(
    task: str,
    golds: Sequence[str],
    preds: Sequence[str | None],
    domains: Sequence[str],
    labels: Sequence[str],
    pool_counts: dict[str, int],
    head_threshold: int,
    match: Match | None = None,
) -> dict:
    """The metrics dict of one evaluation.

    Returns {"macro", "micro", "head", "tail", "per_domain", "n"}. per_domain
    maps each test domain, head to tail, to {"score", "n", "pool_rows"}; head
    (tail) is the mean score of domains with more (not more) than
    `head_threshold` pool rows, or None if there is no such domain. `match`
    overrides answers_match for accuracy tasks.
    """
    check_task(task)
    if not (len(golds) == len(preds) == len(domains)):
        raise BaldistillError(f"metrics: {len(golds)} golds, {len(preds)} predictions, {len(domains)} domains")
    if not golds:
        raise BaldistillError("metrics: no test rows to score")
    order = head_to_tail({d: pool_counts.get(d, 0) for d in set(domains)})
    sizes = Counter(domains)
    if task == "classification":
        f1 = classification_f1(golds, preds, labels)
        micro, macro = f1["micro"], f1["macro"]
        domain_score = _classification_domain_scores(golds, preds, domains, labels, f1["per_class"])
    else:
        scores = row_scores(task, golds, preds, match)
        by_domain: dict[str, list[float]] = {}
        for value, domain in zip(scores, domains):
            by_domain.setdefault(domain, []).append(value)
        domain_score = {domain: _mean(values) for domain, values in by_domain.items()}
        micro, macro = _mean(scores), _mean(list(domain_score.values()))
    per_domain = {d: {"score": domain_score[d], "n": sizes[d], "pool_rows": int(pool_counts.get(d, 0))} for d in order}
    head = [v["score"] for v in per_domain.values() if v["pool_rows"] > head_threshold]
    tail = [v["score"] for v in per_domain.values() if v["pool_rows"] <= head_threshold]
    return {
        "macro": macro,
        "micro": micro,
        "head": _mean(head),
        "tail": _mean(tail),
        "per_domain": per_domain,
        "n": len(golds),
    }


def _classification_domain_scores(golds, preds, domains, labels, per_class: dict[str, float]) -> dict[str, float]:
    """F1 of the domain's class when domains are labels (R52); otherwise
    (a data set whose domain is not its label) micro-F1 over the domain's rows."""
    out: dict[str, float] = {}
    for domain in set(domains):
        rows = [i for i, d in enumerate(domains) if d == domain]
        if all(golds[i] == domain for i in rows):
            out[domain] = per_class[domain]
            continue
        sub = classification_f1([golds[i] for i in rows], [preds[i] for i in rows], labels)
        out[domain] = sub["micro"]
    return out
