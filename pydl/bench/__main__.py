"""pydl's benchmark suite: every family against NumPy, and against PyTorch when it is importable.

    python -m pydl.bench                        # all families
    python -m pydl.bench --quick                # fewer repeats and shapes (whole suite < 1 minute)
    python -m pydl.bench --only gemm --only conv2d --threads 1 2
    python -m pydl.bench --isa avx2             # pydl, PyTorch and NumPy all held to AVX2 kernels
    python -m pydl.bench --json run.json --report report/   # JSON rows; Markdown + PNG report
    python -m pydl.bench --compare old.json new.json        # faster/slower beyond measured noise

Each family is a module pydl/bench/bench_<family>.py exposing `run(quick) -> list[common.Row]`;
each checks its results against the baselines first, then times (warm-up, repeats, median).
The table gives the median of each case in its metric (GFLOP/s, GB/s, ms or MiB) and the ratio
pydl / baseline, oriented so that a ratio > 1 means pydl is faster.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import pkgutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def families() -> list:
    return sorted(m.name[6:] for m in pkgutil.iter_modules([HERE]) if m.name.startswith("bench_"))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pydl.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", help="families to run (same as --only; default: all)")
    ap.add_argument("--only", action="append", default=[], metavar="FAMILY",
                    help=f"run only this family (repeatable, or comma-separated); one of {', '.join(families())}")
    ap.add_argument("--threads", type=int, nargs="+", default=None, metavar="N",
                    help="thread counts to time (default: each family's own, 1 and 2 for most)")
    ap.add_argument("--isa", choices=["native", "avx512", "avx2", "generic"], default="native",
                    help="run pydl, PyTorch and NumPy with this ISA's kernels (default: each picks its own)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shapes")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: the GPU benchmarks instead (pydl.bench.cuda: SGEMM, memory-bound kernels, MLP step)")
    ap.add_argument("--json", metavar="FILE", help="write the rows, machine and library versions as JSON")
    ap.add_argument("--report", metavar="DIR", help="write DIR/report.md with PNG charts")
    ap.add_argument("--out", metavar="STEM", help="also write STEM.md and STEM.json (the old bench/run.py output)")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="compare two --json files and exit (runs nothing)")
    ap.add_argument("--noise-floor", type=float, default=0.05,
                    help="--compare: smallest relative change reported, whatever the measured noise (default 0.05)")
    ap.add_argument("--verbose", "-v", action="store_true", help="show each family's own tables while it runs")
    return ap


def _selected(args, ap) -> list:
    wanted = [f for item in list(args.families) + list(args.only) for f in item.split(",") if f]
    names = families()
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        ap.error(f"unknown families {unknown}; have {names}")
    return [n for n in names if n in wanted] if wanted else names


def format_table(rows) -> str:
    """Terminal table: one line per case, the baselines' medians and the pydl/baseline ratios."""
    names = sorted({k for r in rows for k in r.baselines})
    head = ["family", "case", "threads", "metric", "pydl"] + names + [f"pydl/{n}" for n in names]
    body = []
    for r in rows:
        cells = [r.bench, r.case, str(r.threads), r.metric, f"{r.pydl:.4g}"]
        cells += [f"{r.baselines[n]:.4g}" if n in r.baselines else "-" for n in names]
        cells += [f"{r.ratio(n):.3f}" if r.ratio(n) is not None else "-" for n in names]
        body.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 4 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), "  ".join("-" * w for w in widths)] + [line(c) for c in body]
    return "\n".join(out)


def _reexec_with_isa(args_list, isa: str) -> None:
    """The libraries read their ISA variables when they load: set them and start again."""
    from .isa_env import isa_environment
    env = isa_environment(isa) | {"PYDL_BENCH_ISA": isa}
    pkg_parent = os.path.dirname(os.path.dirname(HERE))  # run the same pydl in the child
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "pydl.bench"] + list(args_list), env)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _parser()
    args = ap.parse_args(argv)
    if args.compare:
        from .report import compare_files
        print(compare_files(args.compare[0], args.compare[1], floor=args.noise_floor))
        return 0
    if args.device == "cuda":
        from .cuda import main as cuda_main
        return cuda_main((["--quick"] if args.quick else []) + (["--json", args.json] if args.json else []))
    names = _selected(args, ap)
    if args.threads and min(args.threads) < 1:
        ap.error("--threads takes counts >= 1")
    if os.environ.get("PYDL_BENCH_ISA") != args.isa:
        _reexec_with_isa(argv, args.isa)
    if args.quick:
        os.environ["PYDL_BENCH_QUICK"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")

    import importlib

    from tqdm import tqdm

    import pydl
    from . import common, report
    common.QUICK = common.QUICK or args.quick
    common.THREADS = args.threads
    common.settle_allocator()

    libs = common.libraries_isa()
    header = (f"pydl {pydl.__version__}; ISA requested: {args.isa}; running: "
              + ", ".join(f"{k} {v}" for k, v in libs.items()) + f"; threads {pydl.get_num_threads()}")
    print(header, flush=True)
    rows, logs, seconds, scaling = [], {}, {}, {}
    t_start = time.perf_counter()
    bar = tqdm(names, desc="pydl.bench", unit="family", file=sys.stderr, dynamic_ncols=True)
    for name in bar:
        bar.set_postfix_str(name)
        scaling[name] = common.scaling_probe()
        mod = importlib.import_module(f"pydl.bench.bench_{name}")
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stdout if args.verbose else buf):
            got = mod.run(quick=args.quick)
        logs[name] = buf.getvalue()
        rows += got
        seconds[name] = time.perf_counter() - t0
    bar.close()
    scaling["end"] = common.scaling_probe()
    print("seconds per family: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
          + f"; total {time.perf_counter() - t_start:.1f}", file=sys.stderr)

    print()
    print(format_table(rows))
    if scaling["end"] is not None:
        print("\ntwo-thread scaling before each family (pydl SGEMM 512^3, 1-thread time / 2-thread time; "
              "~2 when both CPUs run at full speed, lower while the machine slows one): "
              + ", ".join(f"{k} {v:.2f}" for k, v in scaling.items()))
    bad = [r for r in rows for n in r.baselines
           if r.ratio(n) is not None and not (math.isfinite(r.ratio(n)) and r.ratio(n) > 0)]
    if bad:
        print(f"\nwarning: {len(bad)} ratios are not finite and positive", file=sys.stderr)

    doc = None
    if args.json or args.report or args.out:
        doc = report.run_document(rows, args, libs, names)
        doc["two_thread_scaling"] = scaling
    if args.json:
        report.write_json(doc, args.json)
        print(f"\nwrote {args.json}")
    if args.out:
        report.write_json(doc, args.out + ".json")
        with open(args.out + ".md", "w") as f:
            f.write(header + "\n\n" + common.rows_to_markdown(rows))
        print(f"wrote {args.out}.md and {args.out}.json")
    if args.report:
        path = report.write_report(doc, args.report, logs)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
