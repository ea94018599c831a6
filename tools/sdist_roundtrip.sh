#!/usr/bin/env bash
# The packaging round trip a user or a release meets (issue 20): build the sdist, check it ships every tracked
# file a build or the test suite needs, build a wheel from the unpacked sdist (CPU part of the extension) with
# the torch of a fresh venv, install that wheel there, and from a directory outside the checkout import
# perceptual_kernels._C and run `perceptual-kernels info` and `demo`.
# Needs: the `build` package (tools/packaging-requirements.txt) and torch in the calling environment.
# Usage: tools/sdist_roundtrip.sh [WORKDIR]   (default: a new temporary folder, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${1:-$(mktemp -d)}
[[ $# -ge 1 ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
torch_version=$(python -c "import torch; print(torch.__version__.split('+')[0])")
build_req=$(grep -v '^#' tools/packaging-requirements.txt | grep '^build==')
stamp() { echo "[sdist-roundtrip $(date +%T)] $*"; }

stamp "sdist"
python -m build --sdist --no-isolation --outdir "$work/dist" . >"$work/sdist.log" 2>&1 || { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/dist/*.tar.gz)
python tools/check_sdist.py "$sdist"

stamp "fresh venv (torch==$torch_version, $build_req)"
tar -xzf "$sdist" -C "$work"
src=$(ls -d "$work"/perceptual_kernels-*/)
python -m venv "$work/venv"
venv_pip() { "$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>"$work/pip.log" || { cat "$work/pip.log"; exit 1; }; }
venv_pip "torch==$torch_version" "setuptools>=77" "$build_req"

stamp "wheel from the unpacked sdist"
(cd "$src" && "$work/venv/bin/python" -m build --wheel --no-isolation --outdir "$work/wheel" . >"$work/wheel.log" 2>&1) \
  || { tail -40 "$work/wheel.log"; exit 1; }
wheel=$(ls "$work"/wheel/*.whl)
stamp "$(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"
venv_pip "$wheel"

stamp "installed wheel, from $work/outside"
mkdir -p "$work/outside"
cd "$work/outside"
"$work/venv/bin/python" - "$root" <<'PY'
import pathlib, sys
import perceptual_kernels, perceptual_kernels._C  # noqa: F401  (the compiled extension must import)
where = pathlib.Path(perceptual_kernels.__file__).resolve()
assert pathlib.Path(sys.argv[1]) not in where.parents, f"imported the checkout, not the wheel: {where}"
print("perceptual_kernels from", where.parent)
PY
"$work/venv/bin/perceptual-kernels" info | grep -E "perceptual_kernels:|extension _C|run on"
# the demo's whole pipeline at a small size (README's install command runs it at full size)
"$work/venv/bin/perceptual-kernels" demo -o "$work/outside/demo" --size 64 --iterations 3 >"$work/demo.log" 2>&1 \
  || { tail -20 "$work/demo.log"; exit 1; }
ls "$work/outside/demo"
stamp "ok"
