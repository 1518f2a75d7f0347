from __future__ import annotations

import copy

import pytest
import torch

from baldistill.core import assets
from baldistill.core.errors import BaldistillError
from baldistill.prompts import load_prompts
from baldistill.student import encoding
from baldistill.student import model as student

PROMPTS = load_prompts("classification", ["earn", "acq", "crude"])


@pytest.fixture(scope="module")
def tiny(tiny_student_dir):
    return student.load_student(tiny_student_dir)


def test_other_names_pass_through():
    assert student.resolve_model_dir("/some/path") == "/some/path"
    assert student.resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _fake_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("BALDISTILL_HOME", str(tmp_path))
    asset = assets.ASSETS["smollm2-135m-instruct"]
    gguf = tmp_path / "assets" / asset.filename
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"not really a gguf")
    gguf.with_suffix(".sha256").write_text("ab" * 32 + "\n")
    return "smollm2-135m-instruct"


def test_conversion_is_cached_by_sha_and_atomic(tmp_path, monkeypatch):
    name = _fake_asset(tmp_path, monkeypatch)
    calls = []

    def fake_convert(gguf, out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    first = student.resolve_model_dir(name, convert=fake_convert)
    assert first == str(tmp_path / "models" / ("ab" * 32))
    assert student.resolve_model_dir(name, convert=fake_convert) == first and len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["ab" * 32]


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    name = _fake_asset(tmp_path, monkeypatch)

    def broken(gguf, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        student.resolve_model_dir(name, convert=broken)
    assert list((tmp_path / "models").iterdir()) == []


def test_tokenizer_pads_left_with_a_pad_token(tiny):
    _, tokenizer = tiny
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


def test_base_marker_means_base_model(tiny_student_dir, tmp_path, tiny):
    (tmp_path / student.BASE_MARKER).write_text("")
    model, _ = student.load_student(tiny_student_dir, adapter_dir=str(tmp_path))
    base, _ = tiny
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))


def test_empty_adapter_dir_is_an_error(tiny_student_dir, tmp_path):
    with pytest.raises(BaldistillError, match="adapter"):
        student.load_student(tiny_student_dir, adapter_dir=str(tmp_path))


def test_lora_adapter_changes_the_model(tiny_student_dir, tmp_path, tiny):
    from peft import LoraConfig, get_peft_model

    base, tokenizer = tiny
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path)
    merged, _ = student.load_student(tiny_student_dir, adapter_dir=str(tmp_path))
    ids = torch.tensor([tokenizer("hello world").input_ids])
    with torch.no_grad():
        assert not torch.allclose(merged(ids).logits, base(ids).logits)
        kept, _ = student.load_student(tiny_student_dir, adapter_dir=str(tmp_path), merge=False)
        assert torch.allclose(kept(ids).logits, merged(ids).logits, atol=1e-5)


def test_prompt_is_chat_wrapped_and_input_truncated(tiny):
    _, tokenizer = tiny
    story = "oil prices rose sharply " * 100
    prompt = encoding.build_prompt(tokenizer, PROMPTS, story, max_input_tokens=10)
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    assert "assign a topic" in prompt and story not in prompt
    assert "You must select the topic from this set: earn, acq, crude." in prompt  # Table 9 (a)
    short = encoding.build_prompt(tokenizer, PROMPTS, "oil prices rose", max_input_tokens=10)
    assert "News story: oil prices rose\n" in short
    ids = encoding.encode_prompt(tokenizer, prompt)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 3  # no doubled BOS


def test_prompt_without_chat_template_is_raw(tiny):
    _, tokenizer = tiny
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    assert encoding.build_prompt(plain, PROMPTS, "x", 10) == PROMPTS.render("student", input="x")


def test_short_target_is_rationale_plus_eos(tiny):
    _, tokenizer = tiny
    target = encoding.build_target("  Oil rose. The answer is crude.\n", tokenizer, 64)
    assert target == "Oil rose. The answer is crude." + tokenizer.eos_token
    assert encoding.encode_target(tokenizer, target)[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("limit", [8, 12, 20, 40])
def test_long_target_keeps_answer_sentence(tiny, limit):
    _, tokenizer = tiny
    rationale = "The story mentions crude oil prices. " * 20 + "Therefore it is about oil. The answer is crude."
    target = encoding.build_target(rationale, tokenizer, limit)
    body = target.removesuffix(tokenizer.eos_token)
    assert target.endswith("The answer is crude." + tokenizer.eos_token)
    assert len(tokenizer(body, add_special_tokens=False).input_ids) <= limit
    if limit >= 20:
        assert body.startswith("The story mentions crude oil prices.")


def test_target_without_answer_sentence_is_cut(tiny):
    _, tokenizer = tiny
    target = encoding.build_target("word " * 100, tokenizer, 10)
    assert len(encoding.encode_target(tokenizer, target)) == 11


def test_every_prompt_begins_with_the_shared_label_list_prefix(tiny):
    _, tokenizer = tiny
    prefix = encoding.shared_prefix(tokenizer, PROMPTS)
    assert prefix.endswith("You must select the topic from this set: earn, acq, crude.\nNews story:")
    prefix_ids = encoding.encode_prompt(tokenizer, prefix)
    for story in ("oil prices rose", "Shr 12 cts vs 10 cts net 4.5 mln", "a" * 300):
        prompt = encoding.build_prompt(tokenizer, PROMPTS, story, max_input_tokens=20)
        assert prompt.startswith(prefix)
        assert encoding.encode_prompt(tokenizer, prompt)[: len(prefix_ids)] == prefix_ids  # computable once


def test_a_classification_student_prompt_needs_the_label_set(tiny):
    _, tokenizer = tiny
    with pytest.raises(BaldistillError, match="labels"):
        encoding.build_prompt(tokenizer, load_prompts("classification"), "oil prices rose", 10)
