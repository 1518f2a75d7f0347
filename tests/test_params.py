"""The params schema: defaults validate, mistakes name the key."""

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from baldistill.core.errors import BaldistillError
from baldistill.core.params import Params, Teacher, load_params

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, mutate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_validate():
    params = load_params(REPO / "params.yaml")
    assert len(params.stages) == params.K and params.stage_names[0] == "s0"
    assert params.teacher.base_url == "local" and params.data.dataset == "r52"


def required_only(model: type[BaseModel], values: dict) -> dict:
    """The keys of `values` that `model` requires (recursively), nothing else."""
    kept = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            inner = required_only(annotation, values[name])
            if inner or field.is_required():
                kept[name] = inner
        elif field.is_required():
            kept[name] = values[name]
    return kept


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "stages":
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_schema_defaults_are_the_values_of_params_yaml():
    """params.yaml is the one place a value lives: a key left out of it means the same."""
    written = yaml.safe_load((REPO / "params.yaml").read_text())
    minimal = required_only(Params, written)
    assert set(flatten(minimal)) == {"budget.total", "stages"}
    defaults = flatten(Params.model_validate(minimal).model_dump())
    written = flatten(written)
    assert set(defaults) == set(written)
    differ = [
        f"{key}: schema {defaults[key]!r}, params.yaml {written[key]!r}"
        for key in sorted(defaults)
        if defaults[key] != written[key]
    ]
    assert not differ, "\n".join(differ)


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda p: p["budget"].update(total=0), "budget.total"),
        (lambda p: p["policy"].update(name="greedy"), "policy.name"),
        (lambda p: p["data"].update(dataset="imagenet"), "data.dataset"),
        (lambda p: p["stages"].update(s1="s7"), "s1 must follow s0"),
        (lambda p: p["stages"].update(s5="s1"), "stage names must be s0..s2"),
        (lambda p: p.update(stages={}), "at least one stage"),
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


def test_a_step_reads_only_the_teacher_keys_it_lists():
    """The view a teacher step gets (core/step_keys.py) answers its own keys and refuses the rest,
    so library code reading a key dvc.yaml does not list for the step fails instead of going stale."""
    from baldistill.core.step_keys import ANNOTATE, SYNTHESIZE, teacher_keys

    teacher = Teacher().model_copy(update={"on_mismatch": "drop", "synth_temperature": 0.5})
    annotate, synthesize = teacher_keys(teacher, ANNOTATE), teacher_keys(teacher, SYNTHESIZE)
    assert annotate.on_mismatch == "drop" and annotate.price == teacher.price
    assert synthesize.synth_temperature == 0.5
    with pytest.raises(AttributeError, match=r"teacher\.on_mismatch is not among the keys"):
        _ = synthesize.on_mismatch
    with pytest.raises(AttributeError, match=r"teacher\.synth_temperature"):
        _ = annotate.synth_temperature
    assert set(ANNOTATE) | set(SYNTHESIZE) == set(Teacher.model_fields)  # every key read by some step
