#!/usr/bin/env bash
# Runs every GPU test (tests/test_cuda_*.py, marker `cuda`) on the CPU through the CuPy emulator in
# tests/cuda_emu, in one pytest process, plus the emulator's own self-tests. Needs g++ only.
#   tools/cuda_emu_check.sh [extra pytest args]
# Kernel builds are cached in $PYDL_CUDA_EMU_CACHE (default /tmp/pydl-cuda-emu-<uid>).
set -euo pipefail
cd "$(dirname "$0")/.."
PYDL_CUDA_EMU=1 python -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_*.py "$@"
python -m pytest -q -p no:cacheprovider tests/test_cuda_emu.py "$@"
