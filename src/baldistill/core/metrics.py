"""Scores of the student on the test set: overall, per domain, head vs tail.

Section 4 of the paper reports micro- and macro-averages because the data is
long-tailed: micro follows the head, macro gives every domain (class) one
vote. Both are read on the test split's own distribution: a test set capped
per domain (data.test_per_domain) is balanced, so each of its rows is weighted
by its domain's full-split count over the rows drawn (stratified_weights) and
the scores estimate those of the full split; the unweighted (balanced) reading
is reported beside them, named as such. Figure 3 splits domains into head and
tail by their pool size (rows.is_head). Everything here is a pure function of
the extracted answers, so it is tested without a model.

Per task type:
- classification: F1 over all dataset labels from (weighted) confusion counts,
  computed as scikit-learn's f1_score does (tested against it). An answer that
  is missing or not a label becomes the sentinel class NO_ANSWER, which is not
  in the label set: it is a false negative for the gold class and a false
  positive for nobody. A domain's score is the F1 of its class.
- multiple_choice, math: accuracy (answers.answers_match); micro over rows,
  macro = mean of per-domain accuracy.
- abstractive_qa: SQuAD word-level F1 per row; micro = mean over rows,
  macro = mean of per-domain means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from baldistill.core.answers import answers_match, normalize_text
from baldistill.core.dataset_info import check_task
from baldistill.core.errors import BaldistillError
from baldistill.core.rows import head_to_tail, is_head

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


def stratified_weights(domains: Sequence[str], test_counts: Mapping[str, int] | None) -> np.ndarray:
    """Each row's weight on the test split's own distribution: its domain's rows in
    the full split (N_d) over the rows of that domain in this sample (n_d).

    A capped test set draws n_d of N_d rows per domain uniformly; weighting each
    drawn row by N_d / n_d makes every weighted count (true positives, predictions
    of a label, right answers) an unbiased estimate of the full split's count. With
    the whole split (n_d = N_d) every weight is 1. No `test_counts`: weights 1 (the
    sample read as it is).
    """
    sizes = Counter(domains)
    if test_counts is None:
        return np.ones(len(domains))
    for domain, n in sizes.items():
        full = test_counts.get(domain)
        if full is None or n > full:
            raise BaldistillError(
                f"metrics: domain {domain!r} has {n} test rows but the full test split has {full}; "
                "the split's per-domain counts (info.json test_counts) do not describe these rows"
            )
    return np.array([test_counts[d] / sizes[d] for d in domains], dtype=float)


def classification_f1(
    golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str], weights: Sequence[float] | None = None
) -> dict:
    """Micro-F1, macro-F1 and per-class F1 over every label, from (weighted) confusion counts.

    F1 of a class is 2 TP / (2 TP + FP + FN) (scikit-learn's, tested against it).
    A label with neither gold nor predicted rows has no defined F1; it is left
    out of the macro average (NaN) rather than counted as 0, so a test subset
    that lacks a class is not penalised for it. A label that is predicted but
    never gold counts, with F1 0. NO_ANSWER is in no class: a false negative only.
    `weights` (stratified_weights) make the counts those of the full split.
    """
    labels = label_set(golds, labels)
    tp, fp, fn = confusion_counts(golds, preds, labels, weights)
    per_class = _f1(tp, fp, fn)
    defined = per_class[~np.isnan(per_class)]
    return {
        "micro": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro": float(defined.mean()) if defined.size else math.nan,
        "per_class": {label: float(value) for label, value in zip(labels, per_class)},
    }


def confusion_counts(
    golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str], weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, false positives, false negatives) per label of `labels`
    (which must hold every gold label), each row counted with its weight."""
    index = {label: i for i, label in enumerate(labels)}
    gold = np.array([index[g] for g in golds], dtype=int)
    pred = np.array([index.get(to_label(p, labels), -1) for p in preds], dtype=int)
    weight = np.ones(len(gold)) if weights is None else np.asarray(weights, dtype=float)
    size = len(labels)
    hit, answered = pred == gold, pred >= 0
    tp = np.bincount(gold[hit], weight[hit], minlength=size)
    fp = np.bincount(pred[answered], weight[answered], minlength=size) - tp
    fn = np.bincount(gold, weight, minlength=size) - tp
    return tp, fp, fn


def _f1(tp, fp, fn):
    """2 TP / (2 TP + FP + FN), NaN where there is nothing to count."""
    denominator = np.asarray(2 * tp + fp + fn, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * np.asarray(tp, dtype=float) / denominator, np.nan)


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
    test_counts: Mapping[str, int] | None = None,
) -> dict:
    """The metrics dict of one evaluation.

    Returns {"macro", "micro", "balanced_macro", "balanced_micro", "head",
    "tail", "per_domain", "n", "test_rows", "reading"}.

    macro and micro are the headline: the paper's metrics on the test split's own
    (long-tailed) distribution. With `test_counts` (the full split's rows per
    domain) each row is weighted by stratified_weights, so a capped sample
    estimates the full split's scores; without, the rows are read as they are.
    balanced_macro and balanced_micro read the same rows unweighted (every
    domain's capped rows count alike: the balanced test set's own numbers).
    test_rows is the number of rows the headline stands for (sum of test_counts,
    else n); reading says which: "full split", "weighted sample" or "sample".

    per_domain maps each test domain, head to tail, to {"score", "n",
    "pool_rows"}: the domain's own score on its rows; head (tail) is the mean
    score of the head (tail) domains (rows.is_head on pool rows), or None if
    there is no such domain. `match` overrides answers_match for accuracy tasks.
    """
    check_task(task)
    if not (len(golds) == len(preds) == len(domains)):
        raise BaldistillError(f"metrics: {len(golds)} golds, {len(preds)} predictions, {len(domains)} domains")
    if not golds:
        raise BaldistillError("metrics: no test rows to score")
    weights = stratified_weights(domains, test_counts)
    order = head_to_tail({d: pool_counts.get(d, 0) for d in set(domains)})
    members = _rows_by_domain(domains)
    if task == "classification":
        balanced = classification_f1(golds, preds, labels)
        weighted = classification_f1(golds, preds, labels, weights) if test_counts is not None else balanced
        headline = weighted["micro"], weighted["macro"]
        plain = balanced["micro"], balanced["macro"]
        domain_score = _classification_domain_scores(golds, preds, members, labels, balanced["per_class"])
    else:
        scores = np.asarray(row_scores(task, golds, preds, match))
        # Within a domain every row has the same weight, so a domain's mean (and macro) is unweighted.
        domain_score = {domain: float(scores[rows].mean()) for domain, rows in members.items()}
        macro = _mean(list(domain_score.values()))
        headline = float(np.average(scores, weights=weights)), macro
        plain = float(scores.mean()), macro
    per_domain = {
        d: {"score": domain_score[d], "n": len(members[d]), "pool_rows": int(pool_counts.get(d, 0))} for d in order
    }
    head = [v["score"] for v in per_domain.values() if is_head(v["pool_rows"], head_threshold)]
    tail = [v["score"] for v in per_domain.values() if not is_head(v["pool_rows"], head_threshold)]
    return {
        "macro": headline[1],
        "micro": headline[0],
        "balanced_macro": plain[1],
        "balanced_micro": plain[0],
        "head": _mean(head),
        "tail": _mean(tail),
        "per_domain": per_domain,
        "n": len(golds),
        "test_rows": int(np.rint(weights.sum())),
        "reading": _reading(members, test_counts),
    }


def _reading(members: Mapping[str, list[int]], test_counts: Mapping[str, int] | None) -> str:
    """Which distribution the headline stands for."""
    if test_counts is None:
        return "sample"
    whole = all(len(rows) == test_counts[d] for d, rows in members.items())
    return "full split" if whole else "weighted sample"


def _rows_by_domain(domains: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, domain in enumerate(domains):
        out.setdefault(domain, []).append(i)
    return out


def _classification_domain_scores(golds, preds, members, labels, per_class: dict[str, float]) -> dict[str, float]:
    """F1 of the domain's class when domains are labels (R52); otherwise
    (a data set whose domain is not its label) micro-F1 over the domain's rows."""
    out: dict[str, float] = {}
    for domain, rows in members.items():
        if all(golds[i] == domain for i in rows):
            out[domain] = per_class[domain]
            continue
        sub = classification_f1([golds[i] for i in rows], [preds[i] for i in rows], labels)
        out[domain] = sub["micro"]
    return out
