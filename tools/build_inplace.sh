#!/usr/bin/env bash
# Development build: compiles pydl._core into pydl/ so `python -m pytest` (or any python started in
# the repository root) imports the checkout without reinstalling. Incremental (ninja).
# Usage: tools/build_inplace.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
BUILD=${PYDL_BUILD_DIR:-build/inplace}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$($PY -c 'import sys; print(sys.executable)')" \
  -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" > /dev/null
cmake --build "$BUILD"
