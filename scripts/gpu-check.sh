#!/usr/bin/env bash
# make gpu-check: every GPU-only test and the GPU benchmarks into one results file (scripts/gpu_check.py),
# written step by step; without a GPU, one line and a dry run of every step, exit 0.
#   GPU_CHECK_BUNDLE  an offline bundle (scripts/gpu-bundle.sh; its parts uploaded into this folder): augforge's
#                     missing packages are installed from it alone, into GPU_CHECK_SITE, never from a registry
#   GPU_CHECK_PYTHON  the Python whose torch has CUDA (default python3); its torch and packages are reused, and
#                     no virtual environment is made from it (on the GPU image it is itself one)
#   GPU_CHECK_SITE    where the bundle installs (default build/gpu-check/site), put on PYTHONPATH
#   OUT               where gpu-check.json and gpu-check.md go (default build/gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
export GPU_CHECK_STARTED=${GPU_CHECK_STARTED:-$(date +%s)}  # the check's budget counts the installs too
BUNDLE=${GPU_CHECK_BUNDLE:-}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if [ -z "$BUNDLE" ] && ! has_gpu; then  # this machine: the project's own environment, then the dry run
    [ -x "${VENV:-.venv}/bin/python" ] || bash scripts/setup.sh
    exec "${VENV:-.venv}/bin/python" scripts/gpu_check.py "$@"
fi

PY=${GPU_CHECK_PYTHON:-python3}
if [ -n "$BUNDLE" ]; then  # air-gapped: the bundle alone (pip --no-index --no-cache-dir), checked part by part
    SITE=${GPU_CHECK_SITE:-build/gpu-check/site}
    "$PY" scripts/gpu_bundle.py install --bundle "$BUNDLE" --target "$SITE"
    SITE=$(cd "$SITE" && pwd)
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else  # a GPU machine that reaches the registries: into that Python's own environment, its torch kept
    "$PY" -m pip install -q -e '.[gpu]'
fi
exec "$PY" scripts/gpu_check.py --python "$PY" "$@"
