"""The DVC pipeline in a real repo: K unrolls into chained stages, and a
change re-runs exactly the steps it affects."""

import json

import pytest
import yaml

from dvc_project import dag_edges, dvc, make_project, ran_stages


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
    params["rounds"] = {f"s{i}": ("start" if i == 0 else f"s{i - 1}") for i in range(k)}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    names = stage_names(project)
    assert [n for n in names if n.startswith("allocate@")] == [f"allocate@s{i}" for i in range(k)]
    # stage k depends on stage k-1, and on nothing later
    edges = {e for e in dag_edges(project) if e[0].startswith("allocate@") and e[1].startswith("allocate@")}
    assert edges == {(f"allocate@s{i - 1}", f"allocate@s{i}") for i in range(1, k)}


def test_repro_then_policy_experiment_changes_only_allocations(project):
    first = dvc(project, "repro", "allocate")
    assert ran_stages(first.stdout) == ["prepare", "allocate@s0", "allocate@s1"]
    before = {p: (project / p).read_bytes() for p in ("data/prepared/pool.jsonl", "data/rounds/s1/allocation.json")}
    again = dvc(project, "repro", "allocate")
    assert ran_stages(again.stdout) == []  # nothing changed, nothing runs

    exp = dvc(project, "exp", "run", "-S", "policy.name=naive", "allocate")
    assert ran_stages(exp.stdout) == ["allocate@s0", "allocate@s1"]
    assert (project / "data/prepared/pool.jsonl").read_bytes() == before["data/prepared/pool.jsonl"]
    naive = json.loads((project / "data/rounds/s1/allocation.json").read_text())
    assert naive["policy"] == "naive" and set(naive["quota"].values()) <= {1}
    assert (project / "data/rounds/s1/allocation.json").read_bytes() != before["data/rounds/s1/allocation.json"]


def test_adding_a_stage_is_one_command(project):
    dvc(project, "repro", "allocate")
    exp = dvc(project, "exp", "run", "-S", "+rounds.s2=s1", "allocate")
    # B/K changes with K, so every allocation is re-planned; prepare is untouched
    assert ran_stages(exp.stdout) == ["allocate@s0", "allocate@s1", "allocate@s2"]
    s2 = json.loads((project / "data/rounds/s2/allocation.json").read_text())
    assert s2["stage"] == 2 and s2["teacher_calls"] > 0
