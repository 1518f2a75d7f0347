"""Shared fixtures.

`tiny_student_dir` is a randomly initialised 2-layer Llama with the REAL
SmolLM2 tokenizer, saved like any model folder, so fast tests exercise the
true prompt template, special tokens and vocabulary while every forward pass
costs milliseconds.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from baldistill.core import assets
from baldistill.core.errors import BaldistillError
from baldistill.student.model import converted_dir

from support.dvc_project import LAUNCHER_VARIABLES

STUDENT = "smollm2-135m-instruct"


def _real_tokenizer():
    """The SmolLM2 tokenizer: from the converted folder if there is one (fast), else the GGUF."""
    try:
        gguf = assets.path_of(STUDENT)
    except BaldistillError as exc:
        pytest.skip(str(exc))
    converted = converted_dir(STUDENT)
    if (converted / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(converted)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _tiny_llama(vocab_size: int, bos: int, eos: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def pytest_unconfigure(config):
    """The run is over: exit without shutdown's full garbage collections over
    torch's objects (over a second; see baldistill.core.step.entry_point)."""
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _no_outer_launcher():
    """Tests that run the student in this process see no launcher variables of an
    outer MPI/Slurm/torchrun job: accelerate would wait for peers (see venv_env)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in LAUNCHER_VARIABLES:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory) -> str:
    """Path of a saved tiny random Llama + the real SmolLM2 tokenizer (seeded)."""
    tokenizer = _real_tokenizer()
    out: Path = tmp_path_factory.mktemp("tiny_student")
    model = _tiny_llama(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def _stop_lengths(model, tokenizer, prompts, max_new_tokens):
    from baldistill.student.generation import generate

    out = generate(model, tokenizer, prompts, max_new_tokens, batch_size=len(prompts), progress=False)
    return out, [len(g.token_ids) if g.stopped else None for g in out]


def _force_early_eos(model, tokenizer, prompts, max_new_tokens) -> list[int | None]:
    """Make a random model stop at varied points, through the real eos id.

    A random tiny model never picks eos. Tokens it emits mid-sequence leave
    their embedding in the next hidden state, so pointing the eos row of the
    (untied) lm_head at those embeddings makes eos win right after them: rows
    then stop at different steps and some never stop. The smallest scale
    giving that mix is chosen, so the case is real, not hand-placed.
    """
    plain, _ = _stop_lengths(model, tokenizer, prompts, max_new_tokens)
    triggers = {g.token_ids[len(g.token_ids) * (i + 1) // 4] for i, g in enumerate(plain[:3])}
    embed = model.get_input_embeddings().weight.data
    direction = sum(embed[t] / embed[t].norm() for t in triggers)
    row = model.lm_head.weight.data[tokenizer.eos_token_id]
    for scale in (0.05, 0.1, 0.15, 0.2):
        row.copy_(scale * direction)
        _, lengths = _stop_lengths(model, tokenizer, prompts, max_new_tokens)
        early = [n for n in lengths if n is not None and n < max_new_tokens]
        if len(early) >= 2 and None in lengths:
            return lengths
    raise AssertionError(f"could not make the tiny model stop early on some rows only: {lengths}")


EOS_INPUTS = [
    "oil",
    "crude oil prices rose two dlrs a barrel on tuesday",
    "the bank of england cut its base lending rate " * 6,
    "gold",
    "shr profit net rev " * 15,
    "wheat exports to the soviet union fell sharply in the first quarter, the usda said",
    "cocoa " * 40,
    "coffee quota talks",
]


@pytest.fixture(scope="session")
def eos_student(tiny_student_dir):
    """(model, tokenizer, prompts, max_new_tokens, stop lengths): the tiny model
    tuned so that, greedily, some of `prompts` stop early at eos and others
    run to max_new_tokens. Prompts differ a lot in length."""
    from baldistill import prompts as prompt_files
    from baldistill.student.encoding import build_prompt
    from baldistill.student.model import load_student

    model, tokenizer = load_student(tiny_student_dir)
    templates = prompt_files.load_prompts("classification", ["earn", "crude"])
    texts = [build_prompt(tokenizer, templates, x, 256) for x in EOS_INPUTS]
    max_new = 24
    lengths = _force_early_eos(model, tokenizer, texts, max_new)
    return model, tokenizer, texts, max_new, lengths
