"""Where every step reads and writes, in one place (dvc.yaml mirrors it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREPARED = Path("data/prepared")
POOL = PREPARED / "pool.jsonl"
TEST = PREPARED / "test.jsonl"
VALIDATION = PREPARED / "validation.jsonl"


def scored_rows(split: str) -> Path:
    """The rows evaluation scores: TEST, or VALIDATION when tuning (dvc.yaml: `${evaluate.split}.jsonl`)."""
    return PREPARED / f"{split}.jsonl"


COUNTS = PREPARED / "counts.json"
INFO = PREPARED / "info.json"
LONGTAIL_PNG = PREPARED / "longtail.png"


@dataclass(frozen=True)
class StagePaths:
    """The files of one stage (`start` is the empty stage before s0)."""

    name: str

    @property
    def dir(self) -> Path:
        return Path("data/stages") / self.name

    @property
    def allocation(self) -> Path:
        return self.dir / "allocation.json"

    @property
    def validation_scores(self) -> Path:
        """The previous stage's student scored per domain on the validation rows (policy feedback)."""
        return self.dir / "validation_scores.json"

    @property
    def selected(self) -> Path:
        return self.dir / "selected.jsonl"

    @property
    def taken(self) -> Path:
        """Ids of pool rows taken by this stage and every earlier one."""
        return self.dir / "taken.json"

    @property
    def synthetic(self) -> Path:
        return self.dir / "synthetic.jsonl"

    @property
    def annotated(self) -> Path:
        return self.dir / "annotated.jsonl"

    @property
    def train_set(self) -> Path:
        """Every training row gathered in stages 0..k."""
        return self.dir / "train.jsonl"

    @property
    def ledger(self) -> Path:
        """Teacher calls budgeted and paid in this stage and every earlier one (a DVC metric)."""
        return self.metrics_dir / "teacher.json"

    def report(self, step: str) -> Path:
        return self.dir / f"{step}_report.json"

    def teacher_responses(self, step: str) -> Path:
        """The teacher answers a step used, exported from the cache (a DVC output)."""
        return self.dir / f"{step}_responses.jsonl"

    @property
    def train_live(self) -> Path:
        """The train step's dvclive folder: metrics.json (the summary) and plots/metrics/*.tsv (per step)."""
        return self.metrics_dir / "train"

    @property
    def adapter(self) -> Path:
        return Path("models") / self.name

    @property
    def metrics_dir(self) -> Path:
        return Path("metrics") / self.name

    @property
    def metrics(self) -> Path:
        return self.metrics_dir / "metrics.json"

    @property
    def per_domain_csv(self) -> Path:
        return self.metrics_dir / "per_domain.csv"

    @property
    def per_domain_png(self) -> Path:
        return self.metrics_dir / "per_domain.png"

    @property
    def predictions(self) -> Path:
        return self.metrics_dir / "predictions.jsonl"
