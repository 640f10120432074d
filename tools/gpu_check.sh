#!/usr/bin/env bash
# The GPU check: build, the CUDA tests, the demo on the GPU and the GPU benchmarks, one table.
#
#   tools/gpu_check.sh [OUTDIR]        (on a machine with an NVIDIA GPU and CuPy; no network needed)
#
# Builds the extension in place when it is missing (pip install --no-build-isolation's toolchain:
# CMake, ninja, pybind11, scikit-build-core), compiles every kernel source with NVRTC when
# cuda-bindings is importable, runs `pytest -m cuda`, the digits demo on the GPU with the MLP and
# with the CNN (`python -m pydl.demo --device cuda`), and `python -m pydl.bench --device cuda --quick`. Logs go to OUTDIR (default
# gpu_check_out/); the summary table is printed last. Exit status: non-zero if any step failed.
# GPU_CHECK_SKIP="nvrtc demo ..." leaves out the named steps (nvrtc, tests, demo, demo_cnn, bench).
set -u
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
mkdir -p "$OUT"
export CUPY_TF32=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
summary=()
step() {  # step NAME TIMEOUT COMMAND...
    local name=$1 limit=$2; shift 2
    case " ${GPU_CHECK_SKIP:-} " in *" $name "*) summary+=("$(printf '%-10s skipped' "$name")"); return 0 ;; esac
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$? t=$(( $(date +%s) - t0 ))
    summary+=("$(printf '%-10s rc=%-3s %4ss  %s' "$name" "$rc" "$t" "$(tail -n 1 "$OUT/$name.log" | cut -c1-110)")")
    [ "$rc" -ne 0 ] && status=1
    return $rc
}
build() {  # in place (CMake + ninja); else pip's build, whose extension is copied next to the sources
    tools/build_inplace.sh && return 0
    pip install --no-build-isolation --no-deps -q . || return 1
    local so; so=$(cd /tmp && python -c "import pydl._core as c; print(c.__file__)") || return 1
    cp "$so" pydl/
}
if ! python -c "import pydl._core" 2>/dev/null; then
    step build 420 bash -c "$(declare -f build); build" || { printf '%s\n' "${summary[@]}"; exit 1; }
fi
python -c "import pydl; pydl.show_config()" > "$OUT/config.log" 2>&1; cat "$OUT/config.log"
if python -c "import cuda.bindings.nvrtc" 2>/dev/null; then
    step nvrtc 120 python tools/nvrtc_check.py
fi
# one pytest per file: a crash in one file cannot hide the others' results
cuda_tests() {
    local rc=0 f
    for f in tests/test_cuda_*.py; do
        echo "== $f"
        python -m pytest -m cuda -q -p no:cacheprovider -rfE --tb=short "$f"
        case $? in 0|5) ;; *) rc=1 ;; esac  # 5: the file holds only CPU-side tests (none marked cuda)
    done
    return $rc
}
step tests 300 bash -c "$(declare -f cuda_tests); cuda_tests"
step demo 100 python -m pydl.demo --model mlp --device cuda --epochs 5 --batch-size 64 --verbose 0 --out "$OUT/demo"
step demo_cnn 150 python -m pydl.demo --model cnn --device cuda --verbose 0 --out "$OUT/demo_cnn"
step bench 200 python -m pydl.bench --device cuda --quick --json "$OUT/bench.json"
echo
echo "== bench =="; cat "$OUT/bench.log"
echo; echo "== demo (mlp, cnn) =="; grep -E "test accuracy|training:" "$OUT/demo.log" "$OUT/demo_cnn.log"
echo; echo "== tests (failures) =="; grep -E "^== |^(FAILED|ERROR)|passed|failed|Fatal|Segmentation" "$OUT/tests.log" | tail -60
echo; echo "== summary =="; printf '%s\n' "${summary[@]}"
exit $status
