#!/usr/bin/env bash
# Make the offline bundle for an air-gapped GPU machine: scripts/gpu-bundle.sh --out DIR [--python-version 3.12]
# (the wheels augforge and make gpu-check need that the GPU image lacks, in parts of at most 56 MiB with their
# sha256s; see scripts/gpu_bundle.py and docs/benchmarks.md for the upload-and-run sequence).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_bundle.py make "$@"
