"""`baldistill plan --scores FILE`: the validation scores policy feedback's later
stages are planned with (the plan cannot know the students' real ones).

FILE is a JSON object, one of:
* {domain: score in [0, 1]}: every domain's expected score, used as it is
  (you say what you expect; nothing to shrink);
* {domain: {"correct": c, "total": n}}: measured results, shrunk towards the
  pooled score by policy.feedback.prior_strength, as a run does;
* a score_validation record (data/stages/sK/validation_scores.json), whose
  `domains` are measured results: plan with the scores a run saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

from baldistill.core.errors import BaldistillError
from baldistill.core.feedback import read_scores, shrunk_scores
from baldistill.core.files import read_json


def plan_scores(path: Path, domains: Sequence[str], prior_strength: float) -> dict[str, Fraction]:
    """Every domain's score for the plan, from `path` (the forms in the module docstring)."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise BaldistillError(f"{path}: expected a JSON object {{domain: score}}")
    if "domains" in raw and "scored" in raw:  # a score_validation record
        if not raw["scored"]:
            raise BaldistillError(f"{path}: holds no scores (scored: false; {raw.get('why', '')})")
        raw = raw["domains"]
    unknown = sorted(set(raw) - set(domains))
    if unknown:
        raise BaldistillError(f"{path}: domain {unknown[0]!r} is not in the pool")
    if all(isinstance(v, Mapping) for v in raw.values()):
        return shrunk_scores(domains, read_scores(raw, str(path)), prior_strength)
    return _given(raw, path, domains)


def _given(raw: Mapping, path: Path, domains: Sequence[str]) -> dict[str, Fraction]:
    scores = {}
    for domain in domains:
        if domain not in raw:
            raise BaldistillError(f"{path}: domain {domain!r}: no score (every domain needs one)")
        value = raw[domain]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise BaldistillError(f"{path}: domain {domain!r}: the score must be a number in [0, 1], got {value!r}")
        scores[domain] = Fraction(str(value))
    return scores
