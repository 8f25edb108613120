#!/usr/bin/env bash
# The air-gapped GPU check, rehearsed on this machine (no GPU, Python 3.11): a bundle made for this Python,
# a fresh environment that holds only what the GPU image holds (its torch and the image's packages that
# augforge uses, as bundle.json lists them under from_image), then `make gpu-check`'s script installing from
# the bundle alone (pip --no-index, no cache, no index URL) and running up to the GPU steps, which it reports
# as a dry run for want of a GPU. Everything goes under build/rehearsal (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-build/rehearsal}
PY=${PYTHON:-python3}
rm -rf "$DIR"
mkdir -p "$DIR"
version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
echo "rehearsal: 1/3 the bundle for CPython $version"
bash scripts/gpu-bundle.sh --out "$DIR/bundle" --python-version "$version" | tail -n 1
echo "rehearsal: 2/3 the stand-in GPU image: a fresh environment with torch and the image's packages augforge uses"
"$PY" -m venv "$DIR/image"
"$DIR/image/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
mapfile -t from_image < <("$DIR/image/bin/python" -c "import json, sys; print('\n'.join(n for n in json.load(open(sys.argv[1]))['from_image'] if n != 'torch'))" "$DIR/bundle/bundle.json")
"$DIR/image/bin/python" -m pip install -q "${from_image[@]}" 2>&1 | grep -v '^WARNING: Location' || true
echo "rehearsal: 3/3 make gpu-check from the bundle alone (no index, no cache)"
started=$(date +%s)
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 \
    PIP_INDEX_URL=http://127.0.0.1:9/ GPU_CHECK_BUNDLE="$DIR/bundle" GPU_CHECK_PYTHON="$DIR/image/bin/python" \
    GPU_CHECK_SITE="$DIR/site" bash scripts/gpu-check.sh --out "$DIR/out"
echo "rehearsal: install and check took $(( $(date +%s) - started )) s; the image held ${#from_image[@]} packages and torch"
