#!/usr/bin/env bash
# Build pydl._core with AddressSanitizer + UndefinedBehaviorSanitizer and run the test suite
# (and the fuzz suite, part of it) against that build. Any sanitizer report fails the run.
#
#   tools/sanitize.sh [pytest args...]      e.g. tools/sanitize.sh -x tests/test_conv2d.py
#
# The build happens in a copy of the tree (a temporary folder), so the in-place development
# build in pydl/ is left alone. CPython itself is not instrumented, so libasan is preloaded
# and leak detection is off (the interpreter's own allocations would be reported).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pydl-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cp -r CMakeLists.txt README.md csrc pydl tests examples "$WORK"/
[ -f pyproject.toml ] && cp pyproject.toml "$WORK"/
rm -f "$WORK"/pydl/_core*.so

SAN="-O1 -g1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$WORK" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN" -DCMAKE_MODULE_LINKER_FLAGS="$SAN" \
  -DPython_EXECUTABLE="$($PY -c 'import sys; print(sys.executable)')" \
  -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" > /dev/null
cmake --build "$WORK/build"

ASAN_LIB=$(${CXX:-g++} -print-file-name=libasan.so)
UBSAN_LIB=$(${CXX:-g++} -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$WORK"
cd "$WORK"
echo "sanitized build: $(ls pydl/_core*.so)"
"$PY" -c "import pydl; print('pydl', pydl.__version__, 'isa', pydl._core.selected_isa() if hasattr(pydl._core, 'selected_isa') else '?')"
# -p no:cacheprovider: the copy is thrown away anyway. tests/test_memory.py is left out by default:
# ASan's quarantine holds freed memory on purpose, so resident memory grows by design.
if [ "$#" -eq 0 ]; then set -- tests --ignore=tests/test_memory.py; fi
"$PY" -m pytest -q -p no:cacheprovider "$@"
