"""The DVC pipeline in a real repo: K unrolls into chained stages, and a
change re-runs exactly the steps it affects. dvc.yaml's top-level `stages:`
and params.yaml's `stages` share a word; `foreach: ${stages}` reads the latter."""

import json

import pytest
import yaml

from support.dvc_project import REPO, dag_edges, dvc, make_project, ran_stages, run

STEPS = ("score_validation", "allocate", "select", "synthesize", "annotate", "train", "evaluate")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("dvc"))


def stage_names(project):
    out = dvc(project, "stage", "list", "--name-only").stdout.split()
    return out


@pytest.mark.parametrize("k", [1, 2, 4])
def test_dag_matches_k(tmp_path, k):
    project = make_project(tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["stages"] = {f"s{i}": ("start" if i == 0 else f"s{i - 1}") for i in range(k)}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    names = stage_names(project)
    assert [n for n in names if n.startswith("allocate@")] == [f"allocate@s{i}" for i in range(k)]
    for step in STEPS:
        assert [n for n in names if n.startswith(f"{step}@")] == [f"{step}@s{i}" for i in range(k)]
    edges = dag_edges(project)
    # stage k depends on stage k-1 (its allocation, the rows it took, its student and
    # that student's validation scores, its training set and its teacher ledger), and
    # no stage depends on a later one
    for i in range(1, k):
        assert {
            (f"train@s{i - 1}", f"score_validation@s{i}"),
            (f"allocate@s{i - 1}", f"allocate@s{i}"),
            (f"select@s{i - 1}", f"select@s{i}"),
            (f"train@s{i - 1}", f"select@s{i}"),
            (f"train@s{i - 1}", f"train@s{i}"),
            (f"annotate@s{i - 1}", f"annotate@s{i}"),
        } <= edges
    for i in range(k):
        assert {
            (f"score_validation@s{i}", f"allocate@s{i}"),
            (f"allocate@s{i}", f"select@s{i}"),
            (f"allocate@s{i}", f"synthesize@s{i}"),
            (f"select@s{i}", f"annotate@s{i}"),
            (f"synthesize@s{i}", f"train@s{i}"),
            (f"annotate@s{i}", f"train@s{i}"),
            (f"train@s{i}", f"evaluate@s{i}"),
        } <= edges
    index = {name: int(name.split("@s")[1]) for name in names if "@s" in name}
    assert all(index.get(a, -1) <= index.get(b, 99) for a, b in edges)


def test_repro_then_policy_experiment_changes_only_allocations(project):
    """Stage s0's allocation (s1's waits for s0's student: its validation scores)."""
    first = dvc(project, "repro", "allocate@s0")
    assert ran_stages(first.stdout) == ["prepare", "score_validation@s0", "allocate@s0"]
    files = ("data/prepared/pool.jsonl", "data/stages/s0/allocation.json", "data/stages/s0/validation_scores.json")
    before = {p: (project / p).read_bytes() for p in files}
    again = dvc(project, "repro", "allocate@s0")
    assert ran_stages(again.stdout) == []  # nothing changed, nothing runs

    exp = dvc(project, "exp", "run", "-S", "policy.name=naive", "allocate@s0")
    # score_validation reads policy.name; it needs no score for naive, and writes the same file
    assert ran_stages(exp.stdout) == ["score_validation@s0", "allocate@s0"]
    assert json.loads(before["data/stages/s0/validation_scores.json"])["scored"] is False
    for unchanged in ("data/prepared/pool.jsonl", "data/stages/s0/validation_scores.json"):
        assert (project / unchanged).read_bytes() == before[unchanged]
    naive = json.loads((project / "data/stages/s0/allocation.json").read_text())
    budget = yaml.safe_load((project / "params.yaml").read_text())["budget"]["total"]
    quotas = list(naive["quota"].values())
    # naive: the stage's B/K spread evenly over the domains
    assert naive["policy"] == "naive" and max(quotas) - min(quotas) <= 1 and sum(quotas) == budget // 2
    assert (project / "data/stages/s0/allocation.json").read_bytes() != before["data/stages/s0/allocation.json"]


def test_adding_a_stage_is_one_command(project):
    dvc(project, "repro", "allocate@s0")
    exp = dvc(project, "exp", "run", "-S", "+stages.s2=s1", "allocate@s0")
    # B/K changes with K, so the allocation is re-planned; prepare is untouched
    assert ran_stages(exp.stdout) == ["allocate@s0"]
    s0 = json.loads((project / "data/stages/s0/allocation.json").read_text())
    budget = yaml.safe_load((project / "params.yaml").read_text())["budget"]["total"]
    assert s0["share"] == -(-budget // 3) and s0["teacher_calls"] > 0
    assert yaml.safe_load((project / "params.yaml").read_text())["stages"] == {"s0": "start", "s1": "s0", "s2": "s1"}
    assert {f"{step}@s2" for step in STEPS} <= set(stage_names(project))
    assert {("train@s1", "score_validation@s2"), ("allocate@s1", "allocate@s2")} <= dag_edges(project)


def test_bytecode_written_into_a_code_folder_dep_reruns_nothing(tmp_path):
    """Steps depend on the folder src/baldistill/prompts; importing it writes
    __pycache__ there wherever Python may write bytecode (this repo's .dvcignore)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "prompts.yaml").write_text("ask: what?\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  step:\n    cmd: python -c \"open('out', 'w').write('1')\"\n    deps: [code]\n    outs: [out]\n"
    )
    run(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    (tmp_path / ".dvcignore").write_text((REPO / ".dvcignore").read_text())
    assert ran_stages(dvc(tmp_path, "repro").stdout) == ["step"]
    (tmp_path / "code" / "__pycache__").mkdir()
    (tmp_path / "code" / "__pycache__" / "prompts.cpython-311.pyc").write_bytes(b"\x00bytecode")
    assert ran_stages(dvc(tmp_path, "repro").stdout) == []
