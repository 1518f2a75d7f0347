"""The feedback policy's allocation: a stage's calls go where the previous
stage's student is weakest on the validation split (docs/policies.md).

At stage k >= 1 the student of stage k-1 has scored c_d (correct rows, or
summed word F1) of the n_d validation rows of each domain d. Tail domains
score on 1-4 rows, so the raw rate c_d/n_d is mostly noise; each domain's
score is shrunk towards the pooled score p = sum c / sum n by a beta-binomial
prior of strength a (a pseudo-rows at rate p):

    s_d = (c_d + a p) / (n_d + a)

The stage's share S of calls then goes in proportion to each domain's need
1 - s_d, held between a floor f and a cap m, both in units of the equal share
S/l (l domains):

    t_d = clip(lambda (1 - s_d), f S/l, m S/l),   lambda such that sum t_d = S

(an exact water-filling: lambda is found on the piecewise-linear sum). Equal
scores give t_d = S/l, naive balance's targets, which the largest-remainder
rounding then turns into (N)'s quotas. Everything here is exact arithmetic
on Fractions, without I/O, and property-tested (tests/test_feedback.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

from baldistill.core.errors import BaldistillError


@dataclass(frozen=True)
class DomainScore:
    """A domain's validation result: `correct` of `total` rows (correct may be
    fractional: abstractive QA sums each row's word F1)."""

    correct: float
    total: int

    def __post_init__(self) -> None:
        if self.total < 0 or not 0 <= self.correct <= self.total:
            raise BaldistillError(f"a validation score needs 0 <= correct <= total, got {self.correct}/{self.total}")


@dataclass(frozen=True)
class FeedbackRule:
    """The rule's three knobs (params policy.feedback)."""

    prior_strength: float  # a: pseudo-rows at the pooled score added to every domain
    floor: float  # f: the least a domain gets, as a share of the equal share S/l (0..1)
    cap: float  # m: the most a domain gets, as a multiple of the equal share (>= 1)


def _exact(value: float) -> Fraction:
    """A params or score float as the decimal it was written as (0.1 -> 1/10)."""
    return Fraction(str(value))


def pooled_score(scores: Mapping[str, DomainScore]) -> Fraction | None:
    """p = sum c / sum n over every domain; None without any validation row."""
    total = sum(s.total for s in scores.values())
    return sum((_exact(s.correct) for s in scores.values()), Fraction(0)) / total if total else None


def shrunk_scores(
    domains: Sequence[str], scores: Mapping[str, DomainScore], prior_strength: float
) -> dict[str, Fraction]:
    """s_d = (c_d + a p) / (n_d + a) for every domain; a domain without
    validation rows gets p. Without any validation row every domain gets 0
    (no evidence: equal needs, hence naive balance)."""
    pooled = pooled_score(scores)
    if pooled is None:
        return dict.fromkeys(domains, Fraction(0))
    a = _exact(prior_strength)
    shrunk = {}
    for d in domains:
        score = scores.get(d, DomainScore(0, 0))
        n = score.total + a
        shrunk[d] = (_exact(score.correct) + a * pooled) / n if n else pooled
    return shrunk


def water_fill(weights: Mapping[str, Fraction], total: int, low: Fraction, high: Fraction) -> dict[str, Fraction]:
    """t_d = clip(lambda w_d, low, high) with sum t_d = total, exactly.

    Needs len(weights) * low <= total <= len(weights) * high. The sum is
    continuous and non-decreasing in lambda and linear between the breakpoints
    low/w_d and high/w_d, so lambda is found on the segment that reaches total.
    Where even every positive weight at `high` falls short (zero weights), the
    rest is spread evenly over the zero-weight domains."""
    size = len(weights)
    if not size * low <= total <= size * high:
        raise ValueError(f"{size} domains between {low} and {high} cannot sum to {total}")

    def filled(lam: Fraction) -> Fraction:
        return sum((min(max(lam * w, low), high) for w in weights.values()), Fraction(0))

    positive = [w for w in weights.values() if w > 0]
    at_most = sum(high if w > 0 else low for w in weights.values())
    if at_most <= total:  # every positive weight capped: the zero weights take the rest
        zeros = [d for d, w in weights.items() if w == 0]
        rest = (total - high * len(positive)) / len(zeros) if zeros else Fraction(0)
        return {d: high if w > 0 else rest for d, w in weights.items()}
    points = sorted({bound / w for w in positive for bound in (low, high)} | {Fraction(0)})
    for a, b in pairwise(points):
        at_a, at_b = filled(a), filled(b)
        if at_a <= total <= at_b:
            lam = a if at_b == at_a else a + (total - at_a) * (b - a) / (at_b - at_a)
            return {d: min(max(lam * w, low), high) for d, w in weights.items()}
    raise AssertionError("unreachable: the sum passes total between its breakpoints")


def feedback_targets(
    domains: Sequence[str], share: int, shrunk: Mapping[str, Fraction], rule: FeedbackRule
) -> dict[str, Fraction]:
    """Targets t_d summing to `share` from the shrunk scores s_d (shrunk_scores),
    by the rule in the module docstring."""
    equal = Fraction(share, len(domains))
    need = {d: 1 - shrunk[d] for d in domains}
    if not any(need.values()):  # a perfect student everywhere: nothing to prefer
        need = dict.fromkeys(domains, Fraction(1))
    return water_fill(need, share, _exact(rule.floor) * equal, _exact(rule.cap) * equal)


def weakest_first(tie_order: Sequence[str], shrunk: Mapping[str, Fraction]) -> list[str]:
    """The rounding's tie order: at equal remainders the lower shrunk score wins
    (so a weaker domain never gets fewer calls), then `tie_order`; with equal
    scores it is `tie_order` itself (a stable sort)."""
    return sorted(tie_order, key=lambda d: shrunk[d])


def tally(domains: Sequence[str], scored: Iterable[tuple[str, float]]) -> dict[str, DomainScore]:
    """Per domain, the summed row scores and the row count of (domain, row score) pairs."""
    correct, total = dict.fromkeys(domains, 0.0), dict.fromkeys(domains, 0)
    for domain, score in scored:
        correct[domain] = correct.get(domain, 0.0) + score
        total[domain] = total.get(domain, 0) + 1
    return {d: DomainScore(round(correct[d], 6), total[d]) for d in total}


def scores_record(stage: str, student: str, scores: Mapping[str, DomainScore] | None, rows: Mapping[str, int]) -> dict:
    """score_validation's file: `scores` per domain, or (None: not needed) the
    validation rows per domain only."""
    if scores is None:
        domains = {d: {"total": n} for d, n in rows.items()}
        why = "only policy feedback, from stage s1 on, allocates by validation scores"
        return {"stage": stage, "student": student, "scored": False, "why": why, "domains": domains}
    domains = {d: {"correct": s.correct, "total": s.total} for d, s in scores.items()}
    pooled = pooled_score(scores)
    return {
        "stage": stage,
        "student": student,
        "scored": True,
        "pooled": None if pooled is None else round(float(pooled), 6),
        "domains": domains,
    }


def read_scores(raw: Mapping, where: str) -> dict[str, DomainScore]:
    """{domain: {"correct": c, "total": n}} (score_validation's `domains`) ->
    DomainScores; one line naming `where` and the domain otherwise."""
    scores = {}
    for domain, entry in raw.items():
        try:
            scores[domain] = DomainScore(float(entry["correct"]), int(entry["total"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BaldistillError(f"{where}: domain {domain!r}: expected {{correct, total}}, got {entry!r}") from exc
        except BaldistillError as exc:
            raise BaldistillError(f"{where}: domain {domain!r}: {exc}") from None
    return scores
