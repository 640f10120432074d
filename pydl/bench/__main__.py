"""Run every bench/bench_*.py and write bench/results/results.{md,json}.

    python bench/run.py            # all benchmarks
    python bench/run.py --quick    # fewer repeats, smaller shape lists
    python bench/run.py gemm conv2d  # only these families
    python bench/run.py --isa avx2   # every library restricted to AVX2 (pydl, PyTorch, NumPy)

Each bench module exposes `run(quick: bool) -> list[common.Row]` and prints its own table.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", help="bench families to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shapes")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "results"), help="output path stem")
    ap.add_argument("--isa", choices=["native", "avx512", "avx2", "generic"], default="native",
                    help="run pydl, PyTorch and NumPy with this ISA's kernels (default: each picks its own)")
    args = ap.parse_args(argv)
    if os.environ.get("PYDL_BENCH_ISA") != args.isa:
        # The libraries read these variables when they load, so set them and start again.
        sys.path.insert(0, HERE)
        from isa_env import isa_environment
        env = isa_environment(args.isa) | {"PYDL_BENCH_ISA": args.isa}
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + list(argv if argv is not None
                                                                                      else sys.argv[1:]), env)
    if args.quick:
        os.environ["PYDL_BENCH_QUICK"] = "1"
    import common
    import pydl

    names = sorted(os.path.basename(p)[6:-3] for p in glob.glob(os.path.join(HERE, "bench_*.py")))
    if args.families:
        unknown = set(args.families) - set(names)
        if unknown:
            ap.error(f"unknown families {sorted(unknown)}; have {names}")
        names = [n for n in names if n in args.families]
    libs = common.libraries_isa()
    header = (f"ISA requested: {args.isa}; running: " + ", ".join(f"{k} {v}" for k, v in libs.items())
              + f"; threads {pydl.get_num_threads()}\n\n")
    print(header.strip())
    rows = []
    for name in names:
        mod = importlib.import_module(f"bench_{name}")
        rows += mod.run(quick=args.quick)
    common.save_rows(rows, args.out, header)
    print(f"\nwrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
