"""The params schema: defaults validate, mistakes name the key."""

import shutil
from pathlib import Path

import pytest
import yaml

from baldistill.errors import BaldistillError
from baldistill.params import load_params

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, mutate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_validate():
    params = load_params(REPO / "params.yaml")
    assert params.K == len(params.rounds) and params.stages[0] == "s0"
    assert params.teacher.base_url == "local" and params.data.dataset == "r52"


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda p: p["budget"].update(total=0), "budget.total"),
        (lambda p: p["policy"].update(name="greedy"), "policy.name"),
        (lambda p: p["data"].update(dataset="imagenet"), "data.dataset"),
        (lambda p: p["rounds"].update(s1="s7"), "s1 must follow s0"),
        (lambda p: p["rounds"].update(s5="s1"), "stage names must be s0..s2"),
        (lambda p: p.update(rounds={}), "at least one stage"),
        (lambda p: p["teacher"].update(concurrency=0), "teacher.concurrency"),
        (lambda p: p["train"].update(lr="fast"), "train.lr"),
        (lambda p: p["data"].update(dataset="jsonl"), "data.jsonl.train"),
        (lambda p: p["student"].update(typo=1), "student.typo"),
    ],
)
def test_bad_params_name_the_key(tmp_path, mutate, needle):
    with pytest.raises(BaldistillError) as err:
        load_params(write(tmp_path, mutate))
    assert needle in str(err.value) and "params.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(BaldistillError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(BaldistillError, match="invalid YAML"):
        load_params(bad)
