"""Run documents (JSON), the Markdown + PNG report, and the comparison of two runs.

No pydl import at module level: `--compare` works on JSON files alone.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import asdict

FORMAT = 1


# ---- machine ---------------------------------------------------------------------------------

def _cpuinfo() -> dict:
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    out.setdefault(k, v)
    except OSError:
        pass
    return out


def fma_peak_gflops(isa: str, threads: int) -> tuple:
    """Nominal fp32 FMA peak: clock x FLOP/cycle/core of the ISA's vectors x threads.

    Two FMA pipes per core: SSE 2 x 4 lanes x 2, AVX2 2 x 8 x 2; AVX-512 2 x 16 x 2 on Intel, while
    AMD Zen 4/5 split a zmm FMA into two 256-bit halves (32, as AVX2). The clock is /proc/cpuinfo's.
    """
    info = _cpuinfo()
    try:
        ghz = float(info.get("cpu MHz", "nan")) / 1e3
    except ValueError:
        ghz = float("nan")
    per_cycle = {"generic": 16, "avx2": 32, "avx512": 32 if info.get("vendor_id") == "AuthenticAMD" else 64}
    return ghz * per_cycle.get(isa, 16) * threads, ghz, per_cycle.get(isa, 16)


def copy_bandwidth_gbps(nbytes: int = 64 << 20, repeats: int = 7) -> float:
    """Measured: bytes read + written per second by a NumPy copy into a preallocated array."""
    import numpy as np
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        ts.append(time.perf_counter() - t0)
    return 2 * src.nbytes / statistics.median(ts) / 1e9


def machine_description(libs: dict, threads: int) -> dict:
    import numpy as np

    import pydl
    cfg = pydl.config()
    info = _cpuinfo()
    peak, ghz, per_cycle = fma_peak_gflops(cfg["isa"], threads)
    versions = {"pydl": pydl.__version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import torch
        versions["torch"] = torch.__version__
    except Exception:
        pass
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cores_online": os.cpu_count(),
        "isa": cfg["isa"], "isa_available": cfg["isa_available"],
        "threads": threads,
        "compiler": cfg["compiler"], "openmp": cfg["openmp_version"],
        "libraries": libs, "versions": versions,
        "copy_gbps": copy_bandwidth_gbps(),
        "fma_peak_gflops": peak, "clock_ghz": ghz, "flop_per_cycle_core": per_cycle,
        "platform": platform.platform(),
    }


def run_document(rows, args, libs, names) -> dict:
    import pydl
    threads = max(args.threads) if args.threads else pydl.get_num_threads()
    out = []
    for r in rows:
        d = asdict(r)
        d["ratios"] = {n: r.ratio(n) for n in r.baselines}
        out.append(d)
    return {"format": FORMAT, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "options": {"quick": bool(args.quick), "isa": args.isa, "threads": args.threads, "families": names},
            "machine": machine_description(libs, threads), "rows": out}


def write_json(doc: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


# ---- report ----------------------------------------------------------------------------------

def _geomean(xs):
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def _gemm_size(case: str):
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", case)
    return tuple(map(int, m.groups())) if m else None


def _conv_shape(case: str):
    m = re.search(r"N(\d+) C(\d+) (\d+)x(\d+) K(\d+) 3x3", case)
    return tuple(map(int, m.groups())) if m else None


def _chart_ratios(doc, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = doc["rows"]
    fams = list(dict.fromkeys(r["bench"] for r in rows))
    bases = sorted({n for r in rows for n in r["ratios"] if n in ("numpy", "torch")})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(fams) + 2), 4))
    width = 0.8 / max(1, len(bases))
    for i, b in enumerate(bases):
        vals = [_geomean([r["ratios"].get(b) for r in rows if r["bench"] == f]) or 0 for f in fams]
        ax.bar([j + i * width for j in range(len(fams))], vals, width, label=f"pydl / {b}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + width * (len(bases) - 1) / 2 for j in range(len(fams))])
    ax.set_xticklabels(fams, rotation=30, ha="right")
    ax.set_ylabel("geometric mean ratio (> 1: pydl faster)")
    ax.set_title("pydl against its baselines, per family")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _chart_gflops(doc, path) -> bool:
    """GFLOP/s against size for SGEMM (square) and conv2d forward, with the two ceilings: the FMA
    peak, and the bandwidth bound copy_GB/s x FLOP / (minimum bytes moved) at each size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mach = doc["machine"]
    bw = mach["copy_gbps"]
    panels = []
    gemm = [r for r in doc["rows"] if r["bench"] == "gemm" and r["metric"] == "GFLOP/s" and _gemm_size(r["case"])]
    if gemm:
        panels.append(("SGEMM C = A B (square and layer shapes)", gemm, _gemm_size,
                       lambda s: (2.0 * s[0] * s[1] * s[2], 4.0 * (s[0] * s[1] + s[1] * s[2] + s[0] * s[2]))))
    conv = [r for r in doc["rows"] if r["bench"] == "conv2d" and r["metric"] == "GFLOP/s" and _conv_shape(r["case"])]
    if conv:
        def conv_cost(s):
            n, c, h, w, k = s
            return 2.0 * n * k * c * 9 * h * w, 4.0 * (n * c * h * w + k * c * 9 + n * k * h * w)
        panels.append(("conv2d 3x3 forward ('same')", conv, _conv_shape, conv_cost))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, rows, shape, cost) in zip(axes[0], panels):
        series = {}
        for r in rows:
            flop, nbytes = cost(shape(r["case"]))
            algo = r["case"].split()[-1] if r["bench"] == "conv2d" else ""
            series.setdefault((f"pydl {algo}".strip(), r["threads"]), []).append((flop, r["pydl"]))
            for b, v in r["baselines"].items():
                series.setdefault((b, r["threads"]), []).append((flop, v))
        for (name, thr), pts in sorted(series.items()):
            pts = sorted(set(pts))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if name.startswith("pydl") else "s--",
                    ms=3, label=f"{name}, {thr} thr")
        flops = sorted({cost(shape(r["case"]))[0] for r in rows})
        bounds = sorted((cost(shape(r["case"]))[0], bw * cost(shape(r["case"]))[0] / cost(shape(r["case"]))[1])
                        for r in rows)
        ax.plot([b[0] for b in bounds], [b[1] for b in bounds], "k:", lw=1,
                label=f"copy bandwidth bound ({bw:.0f} GB/s measured)")
        if math.isfinite(mach["fma_peak_gflops"]):
            ax.axhline(mach["fma_peak_gflops"], color="r", lw=1,
                       label=f"FMA peak {mach['fma_peak_gflops']:.0f} GFLOP/s ({mach['threads']} thr)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(min(flops) / 1.5, max(flops) * 1.5)
        ax.set_xlabel("FLOP per call")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(title)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(doc: dict, outdir: str, logs: dict | None = None) -> str:
    from .common import Row, rows_to_markdown
    os.makedirs(outdir, exist_ok=True)
    rows = [Row(**{k: v for k, v in r.items() if k != "ratios"}) for r in doc["rows"]]
    _chart_ratios(doc, os.path.join(outdir, "ratios.png"))
    have_gflops = _chart_gflops(doc, os.path.join(outdir, "gflops.png"))
    write_json(doc, os.path.join(outdir, "results.json"))
    m = doc["machine"]
    lines = [
        "# pydl benchmark report", "",
        f"Run {doc['created']}; options: {json.dumps(doc['options'])}.", "",
        "## Machine", "",
        f"- CPU: {m['cpu']} ({m['cores_online']} logical CPUs online)",
        f"- ISA chosen by pydl: **{m['isa']}** (available: {', '.join(m['isa_available'])})",
        f"- Threads: {m['threads']}; OpenMP {m['openmp']}; compiler {m['compiler']}",
        f"- Libraries as run: " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()),
        f"- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- Measured copy bandwidth (NumPy, read + write): {m['copy_gbps']:.1f} GB/s",
        f"- FMA peak: {m['fma_peak_gflops']:.0f} GFLOP/s = {m['clock_ghz']:.2f} GHz x "
        f"{m['flop_per_cycle_core']} FLOP/cycle x {m['threads']} threads (nominal clock)",
        f"- Platform: {m['platform']}", "",
        "## Ratios per family", "",
        "Geometric mean of pydl / baseline over each family's cases (> 1: pydl faster).", "",
        "![ratios per family](ratios.png)", "",
    ]
    if have_gflops:
        lines += ["## GFLOP/s against size", "",
                  "Ceilings: the FMA peak, and the measured copy bandwidth times FLOP / (minimum bytes moved).",
                  "", "![GFLOP/s against size](gflops.png)", ""]
    lines += ["## All cases", "", "Medians; rates are GFLOP/s or GB/s, times ms (ratio > 1: pydl faster).", "",
              rows_to_markdown(rows)]
    if logs:
        lines += ["## Family output", ""]
        for name, text in logs.items():
            if text.strip():
                lines += [f"<details><summary>{name}</summary>", "", "```", text.strip(), "```", "</details>", ""]
    path = os.path.join(outdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ---- compare ---------------------------------------------------------------------------------

def _speed(row) -> float:
    """Higher is faster, whatever the metric."""
    v = row["pydl"]
    return 1.0 / v if row["metric"] in ("ms", "s", "us") else v


def compare_docs(old: dict, new: dict, floor: float = 0.05) -> tuple:
    """(faster, slower, steady, only_old, only_new): each changed entry (key, change, threshold).

    change = new speed / old speed - 1. A case counts as changed when |change| exceeds its noise
    threshold: the larger of `floor` and the sum of the two runs' measured relative spreads.
    Rows whose metric is not a speed or a time (MiB) are left out.
    """
    def index(doc):
        return {(r["bench"], r["case"], r["threads"], r["metric"]): r for r in doc["rows"]
                if r["metric"] not in ("MiB",)}
    a, b = index(old), index(new)
    faster, slower, steady = [], [], []
    for key in a.keys() & b.keys():
        ra, rb = a[key], b[key]
        if not (_speed(ra) > 0 and _speed(rb) > 0):
            continue
        change = _speed(rb) / _speed(ra) - 1.0
        thr = max(floor, ra.get("noise", 0.0) + rb.get("noise", 0.0))
        (faster if change > thr else slower if change < -thr else steady).append((key, change, thr))
    faster.sort(key=lambda e: -e[1])
    slower.sort(key=lambda e: e[1])
    return faster, slower, steady, sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())


def compare_files(old_path: str, new_path: str, floor: float = 0.05) -> str:
    with open(old_path) as f:
        old = json.load(f)
    with open(new_path) as f:
        new = json.load(f)
    faster, slower, steady, only_old, only_new = compare_docs(old, new, floor)
    fmt = lambda k: f"{k[0]} | {k[1]} | {k[2]} thr | {k[3]}"  # noqa: E731
    out = [f"compare {old_path} -> {new_path}: {len(faster)} faster, {len(slower)} slower, "
           f"{len(steady)} within noise (threshold per case: max({floor:.0%}, old + new measured spread))"]
    for title, items in (("faster", faster), ("slower", slower)):
        out.append(f"\n{title}:" if items else f"\n{title}: none")
        for key, change, thr in items:
            out.append(f"  {change:+7.1%}  (noise {thr:.1%})  {fmt(key)}")
    if only_old:
        out.append(f"\nonly in {old_path}: " + "; ".join(fmt(k) for k in only_old))
    if only_new:
        out.append(f"\nonly in {new_path}: " + "; ".join(fmt(k) for k in only_new))
    return "\n".join(out)
