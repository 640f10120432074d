"""Run every bench/bench_*.py and write bench/results/results.{md,json}.

    python bench/run.py            # all benchmarks
    python bench/run.py --quick    # fewer repeats, smaller shape lists
    python bench/run.py gemm conv2d  # only these families

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
    args = ap.parse_args(argv)
    if args.quick:
        os.environ["PYDL_BENCH_QUICK"] = "1"
    import common

    names = sorted(os.path.basename(p)[6:-3] for p in glob.glob(os.path.join(HERE, "bench_*.py")))
    if args.families:
        unknown = set(args.families) - set(names)
        if unknown:
            ap.error(f"unknown families {sorted(unknown)}; have {names}")
        names = [n for n in names if n in args.families]
    rows = []
    for name in names:
        mod = importlib.import_module(f"bench_{name}")
        rows += mod.run(quick=args.quick)
    common.save_rows(rows, args.out)
    print(f"\nwrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
