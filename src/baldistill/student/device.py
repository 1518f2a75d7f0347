"""Where the student runs: the one rule every step that loads it follows.

    BALDISTILL_DEVICE (e.g. cpu, cuda, cuda:1, mps)  >  the launcher's device for this process
        >  a CUDA GPU  >  Apple's mps  >  the CPU

Under `accelerate launch` (params train.launch, select.launch, evaluate.launch)
each process gets its own device from the launcher (cuda:<local rank>, or the CPU
with --cpu / ACCELERATE_USE_CPU); a bare type in BALDISTILL_DEVICE ("cuda") keeps
that per-process index, so 4 processes do not all land on GPU 0. `choose_device`
is the rule as a pure function; `student_device` gathers its inputs.
Training places the model through accelerate's `prepare`; `wants_cpu` tells its
Accelerator, and the process group of select and evaluate (`launcher_state`),
to stay on the CPU when the override or the launcher's --cpu says so.
"""

from __future__ import annotations

import os

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

DEVICE_ENV = "BALDISTILL_DEVICE"


def choose_device(override: str | None, launcher: str | None, cuda: bool, mps: bool) -> str:
    """The device string for the student, from the override (BALDISTILL_DEVICE, blank = none),
    the launcher's device for this process (None when not launched), and what is installed."""
    override = (override or "").strip().lower()
    if override:
        if launcher and ":" not in override and launcher.split(":")[0] == override:
            return launcher  # a bare type keeps the launcher's per-process index
        return override
    if launcher:
        return launcher
    if cuda:
        return "cuda"
    return "mps" if mps else "cpu"


def wants_cpu() -> bool:
    """True when BALDISTILL_DEVICE or the launcher (--cpu: ACCELERATE_USE_CPU) asks for the CPU."""
    return os.environ.get(DEVICE_ENV, "").strip().lower() == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU")


def launcher_state() -> PartialState:
    """The processes a launcher started (joining their process group on first call; gloo on
    the CPU). PartialState, unlike Accelerator, does not read ACCELERATE_USE_CPU itself:
    without `cpu` it would take CPU processes for independent ones."""
    return PartialState(cpu=wants_cpu())


def _launcher_device() -> str | None:
    """This process's device when a launcher started several processes, else None."""
    state = launcher_state()
    return str(state.device) if state.num_processes > 1 else None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def student_device() -> torch.device:
    """The device the student should run on in this process (see the module docstring)."""
    name = choose_device(os.environ.get(DEVICE_ENV), _launcher_device(), torch.cuda.is_available(), _mps_available())
    return torch.device(name)


def resolve_precision(setting: str, native_bf16: bool) -> str:
    """train.precision as run: "auto" is bf16 where the device does bf16 products natively, else fp32."""
    if setting == "auto":
        return "bf16" if native_bf16 else "fp32"
    return setting


def has_native_bf16(device_type: str) -> bool:
    """bf16 matrix products in hardware: a CUDA GPU that has them, or a CPU with AVX-512 BF16
    or AMX (oneDNN; elsewhere bf16 on the CPU is emulated and slower than fp32)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False
