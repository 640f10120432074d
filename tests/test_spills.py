"""The per-ISA kernels' hot loops keep their values in registers: tools/check_spills.py --strict
finds no spill and no call in any of them (and does find them where a loop needs more registers
than the ISA has). Needs the source tree and g++; the verdict is pinned to GCC 12, the compiler the
wheels are built with, since register allocation is the compiler's."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "check_spills.py")


def _gcc_major() -> int | None:
    gxx = shutil.which("g++")
    if gxx is None:
        return None
    out = subprocess.run([gxx, "-dumpversion"], capture_output=True, text=True).stdout.strip()
    try:
        return int(out.split(".")[0])
    except ValueError:
        return None


pytestmark = [
    pytest.mark.skipif(not (os.path.exists(TOOL) and os.path.isdir(os.path.join(ROOT, "csrc"))),
                       reason="needs the source tree (csrc/, tools/)"),
    pytest.mark.skipif(_gcc_major() != 12, reason="spills are checked under GCC 12, the wheels' compiler"),
]

# 20 accumulators of 8 floats: more than AVX2's 16 ymm, so the loop must keep some on the stack.
TOO_MANY = r"""
#include <immintrin.h>
void many_sums(float* out, const float* x, const float* w, long n) {
  __m256 acc[20];
  for (int i = 0; i < 20; ++i) acc[i] = _mm256_setzero_ps();
  for (long p = 0; p < n; ++p) {
    const __m256 xv = _mm256_loadu_ps(x + 8 * p);
#pragma GCC unroll 20
    for (int i = 0; i < 20; ++i) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 20 * p + i), xv, acc[i]);
  }
  for (int i = 0; i < 20; ++i) _mm256_storeu_ps(out + 8 * i, acc[i]);
}
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=900)


def test_tool_finds_a_spill(tmp_path):
    src = tmp_path / "too_many_avx2.cpp"
    src.write_text(TOO_MANY)
    r = _run("--strict", str(src))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 hot loops, 1 spill or call" in r.stdout, r.stdout


def test_no_spills_in_kernel_hot_loops():
    r = _run("--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hot loops" in r.stdout
