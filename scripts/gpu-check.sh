#!/usr/bin/env bash
# make gpu-check: on a machine with a CUDA GPU, install the GPU build and run every GPU-only test and the GPU
# benchmarks into one results file (scripts/gpu_check.py); without a GPU, one line and a dry run, exit 0.
#   GPU_CHECK_PYTHON  the Python whose torch has CUDA (default python3); its packages are reused
#   GPU_CHECK_WHEELS  a folder of wheels to install from instead of the registries (a machine with no network)
#   OUT               where gpu-check.json and gpu-check.md go (default build/gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    exec "${VENV:-.venv}/bin/python" scripts/gpu_check.py "$@"   # no GPU: it says so and dry-runs every step
fi

BASE=${GPU_CHECK_PYTHON:-python3}
GPU_VENV=build/gpu-check/venv
[ -x "$GPU_VENV/bin/python" ] || "$BASE" -m venv --system-site-packages "$GPU_VENV"
PIP=("$GPU_VENV/bin/python" -m pip install -q)
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
    PIP+=(--no-index --find-links "$GPU_CHECK_WHEELS")
fi
# the CUDA torch wheel where the base Python has none (PyPI's default Linux wheel is the CUDA build), DALI's
# CUDA 13 build, then augforge with its test and benchmark extras (what the base Python has is kept)
if ! "$GPU_VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    "${PIP[@]}" torch
fi
"${PIP[@]}" nvidia-dali-cuda130
"${PIP[@]}" -e '.[dev,bench]'
exec "$GPU_VENV/bin/python" scripts/gpu_check.py --python "$GPU_VENV/bin/python" "$@"
