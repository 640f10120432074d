"""Thin wrapper kept for checkouts: the benchmark suite lives in the package, `pydl/bench/`, and
ships in the wheel; this runs `python -m pydl.bench` on the checkout's pydl and writes
bench/results/results.{md,json} as before. All options are pydl.bench's (`--help`).

    python bench/run.py --quick
    python bench/run.py --only gemm --isa avx2
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pydl.bench.__main__ import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args and "--compare" not in args:
        args += ["--out", os.path.join(ROOT, "bench", "results", "results")]
    raise SystemExit(main(args))
