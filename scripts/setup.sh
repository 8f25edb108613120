#!/usr/bin/env bash
# Create .venv with everything augforge needs, from nothing.
#  - Debian packages (when root): WordNet 3.0 for text augmentation, Chromium to look at HTML reports, qemu-user
#    to measure int8 models with another CPU's arithmetic (augforge quantize --target), labelme-examples (real
#    photos annotated in LabelMe, COCO and VOC: the dense-target tests read them; GPL, never copied here).
#  - the CPU torch wheel first, so nothing pulls the CUDA build; then augforge with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    need=()
    for pkg in wordnet-base wordnet-sense-index fortunes manpages manpages-dev chromium qemu-user labelme-examples; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "setup: apt-get install ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
# the quokka photo with its box, keypoints and polygon (MIT), taken out of imgaug's wheel (imgaug itself does not
# import on numpy 2): a dense-target test reads them from build/quokka
QUOKKA=build/quokka
if [ ! -f "$QUOKKA/quokka_annotations.json" ]; then
    "$VENV/bin/python" -m pip download -q --no-deps imgaug==0.4.0 -d "$QUOKKA/wheel" 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" - "$QUOKKA" <<'PY'
import glob, sys, zipfile
root = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{root}/wheel/imgaug-*.whl")[0]) as wheel:
    for name in ("quokka.jpg", "quokka_annotations.json"):
        with open(f"{root}/{name}", "wb") as out:
            out.write(wheel.read(f"imgaug/{name}"))
PY
fi
"$VENV/bin/python" -c "import augforge, torch; print('setup: augforge', augforge.__version__, 'torch', torch.__version__)"
