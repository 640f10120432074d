"""Shared benchmark helpers: timing, rates, thread control, and the results table.

Style: check correctness first, then time (warm-up, repeats, median), print the rate with its
formula and the ratio against the baseline measured in the same process.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

try:
    import torch

    HAVE_TORCH = True
except Exception:  # pragma: no cover
    torch = None
    HAVE_TORCH = False

import pydl

QUICK = bool(int(os.environ.get("PYDL_BENCH_QUICK", "0")))
# Thread counts asked for on the command line (`--threads 1 2`); None: each family's own list.
THREADS = None
# Relative spread (max - min) / median of the repeats of every timeit() call since the last Row was
# made: a Row keeps the largest as its measured run-to-run noise (used by --compare).
_SPREADS: list = []


def thread_list(default):
    """The thread counts a family runs: those given with --threads, else its own default."""
    return list(THREADS) if THREADS else list(default)

from .isa_env import ISA_ENV, isa_environment  # noqa: E402,F401  (re-exported)


def libraries_isa() -> dict:
    """The ISA (or kernel family) each library actually runs in this process."""
    out = {"pydl": pydl.config()["isa"]}
    if HAVE_TORCH:
        try:
            out["torch"] = torch.backends.cpu.get_cpu_capability()
        except Exception:  # pragma: no cover
            out["torch"] = "unknown"
        mkl = _torch_mkl_isa()
        if mkl:
            out["torch"] += f" (MKL {mkl})"
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("internal_api") == "openblas":
                out["numpy"] = f"OpenBLAS {info.get('version')} {info.get('architecture')}"
                break
    except ImportError:  # pragma: no cover
        pass
    out.setdefault("numpy", "unknown BLAS")
    return out


def _torch_mkl_isa() -> str | None:
    """The code path PyTorch's MKL runs (its SGEMM: matmul, Linear, LSTM), or None without MKL.

    MKL names it only in its verbose log, written to the C stdout on the first call, so one
    matmul runs in a child process with MKL_VERBOSE=1 and the same environment.
    """
    if not torch.backends.mkl.is_available():
        return None
    import subprocess
    code = "import torch; a = torch.ones(8, 8); a @ a"
    try:
        log = subprocess.run([sys.executable, "-c", code], env=os.environ | {"MKL_VERBOSE": "1"},
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        return "unknown"
    return mkl_path_from_log(log)


def mkl_path_from_log(log: str) -> str:
    """The code path named in MKL's verbose banner: "... for Intel(R) 64 architecture Intel(R)
    Advanced Vector Extensions 2 (Intel(R) AVX2) enabled processors, ..." gives "AVX2". On CPUs
    MKL has no named path for (AMD's) the banner says "Intel(R) Architecture processors", and
    the path it runs is not in the log."""
    found = re.search(r"\(Intel\(R\) ([A-Za-z0-9.\-]+)\)", log)
    if found:
        return found.group(1)
    if re.search(r"Intel\(R\) Architecture processors", log):
        return "path not named on this CPU"
    return "unknown"


def settle_allocator() -> None:
    """Put glibc's malloc in the state a training loop reaches after its first step.

    glibc serves blocks above its mmap threshold (128 KiB at start) with fresh pages from the
    kernel, and raises the threshold to the size of each such block freed, up to 32 MiB. Until
    then every multi-MiB output of every library costs page faults: on a 2-core VM, PyTorch's
    conv2d N64 C1->32 28x28 (a 6.4 MB output) took 5.6 ms cold and 0.41 ms once a larger block had
    been freed. One 30 MiB block allocated and freed here gives every library the warm state
    whichever family or case runs first.
    """
    block = np.ones(30 << 18, dtype=np.float32)  # 30 MiB, touched
    del block


def timeit(fn, warmup: int = 2, repeats: int = 7, min_time: float = 0.05) -> float:
    """Median seconds per call. Each repeat loops until it has run `min_time` seconds."""
    if QUICK:
        warmup, repeats, min_time = 1, 3, 0.01
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-9)
    inner = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    med = statistics.median(samples)
    if med > 0:
        _SPREADS.append((max(samples) - min(samples)) / med)
    return med


def alternate(fns: dict, rounds: int, *, repeats: int = 5, min_time: float = 0.03, settle: float = 0.0) -> dict:
    """Median seconds per call of each fn over `rounds` alternating rounds.

    Each round times every fn once (its own median, `timeit`), in order, so a slow phase of the
    machine lasting a second or two falls on every library alike instead of on whichever ran then;
    `settle` seconds of sleep before each fn let the previous library's spinning workers stop.
    """
    samples = {k: [] for k in fns}
    for _ in range(max(1, rounds)):
        for k, fn in fns.items():
            if settle:
                time.sleep(settle)
            samples[k].append(timeit(fn, warmup=1, repeats=repeats, min_time=min_time))
    return {k: statistics.median(v) for k, v in samples.items()}


@contextlib.contextmanager
def threads(n: int):
    """Run pydl, NumPy's BLAS and PyTorch with `n` threads each (restored afterwards).

    Each library's pool is limited while the others time, so spinning pools don't fight.
    """
    old_pydl = pydl.get_num_threads()
    old_torch = torch.get_num_threads() if HAVE_TORCH else None
    pydl.set_num_threads(n)
    if HAVE_TORCH:
        torch.set_num_threads(n)
    ctx = threadpool_limits(limits=n) if threadpool_limits else contextlib.nullcontext()
    try:
        with ctx:
            yield
    finally:
        pydl.set_num_threads(old_pydl)
        if HAVE_TORCH:
            torch.set_num_threads(old_torch)


def scaling_probe(size: int = 512, repeats: int = 9) -> float | None:
    """How well two threads scale right now: pydl's SGEMM (size^3) 1-thread time over its 2-thread
    time, medians of `repeats` calls each (~40 ms in all). About 2 when both CPUs run at full
    speed; on shared machines it drops for minutes at a time (an SMT sibling busy on the host),
    and every 2-thread row timed then is slower for it. None with fewer than 2 threads allowed."""
    if pydl.get_num_threads() < 2:
        return None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), np.float32)
    med = {}
    for n in (1, 2):
        with threads(n):
            pydl.matmul(a, b, out=c)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                pydl.matmul(a, b, out=c)
                ts.append(time.perf_counter() - t0)
        med[n] = statistics.median(ts)
    return med[1] / med[2]


def gflops(flop: float, seconds: float) -> float:
    return flop / seconds / 1e9


def gbps(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e9


@dataclass
class Row:
    bench: str            # family, e.g. "gemm"
    case: str             # shape description
    threads: int
    metric: str           # "GFLOP/s" or "GB/s" or "ms"
    pydl: float
    baselines: dict = field(default_factory=dict)   # name -> value in the same metric
    note: str = ""
    noise: float = -1.0   # relative run-to-run spread of the timings behind this row

    def __post_init__(self):
        if self.noise < 0:
            self.noise = max(_SPREADS) if _SPREADS else 0.0
        _SPREADS.clear()

    def ratio(self, name: str) -> float | None:
        b = self.baselines.get(name)
        if b is None or b == 0:
            return None
        # Higher is better for rates, lower is better for times: ratio > 1 means pydl is faster.
        return self.pydl / b if self.metric != "ms" else b / self.pydl


def print_rows(rows: list[Row], title: str, formula: str = "") -> None:
    names = sorted({k for r in rows for k in r.baselines})
    print(f"\n## {title}")
    if formula:
        print(f"({formula}; ratio > 1 means pydl is faster)")
    head = ["case", "thr", f"pydl {rows[0].metric}" if rows else "pydl"] + names + [f"pydl/{n}" for n in names]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r.case, str(r.threads), f"{r.pydl:.3g}"]
        cells += [f"{r.baselines[n]:.3g}" if n in r.baselines else "-" for n in names]
        cells += [f"{r.ratio(n):.2f}x" if r.ratio(n) is not None else "-" for n in names]
        print("| " + " | ".join(cells) + " |")


def rows_to_markdown(rows: list[Row]) -> str:
    names = sorted({k for r in rows for k in r.baselines})
    head = ["bench", "case", "threads", "metric", "pydl"] + names + [f"pydl/{n}" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.bench, r.case, str(r.threads), r.metric, f"{r.pydl:.3g}"]
        cells += [f"{r.baselines[n]:.3g}" if n in r.baselines else "-" for n in names]
        cells += [f"{r.ratio(n):.2f}x" if r.ratio(n) is not None else "-" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_rows(rows: list[Row], path_stem: str, header: str = "") -> None:
    os.makedirs(os.path.dirname(path_stem) or ".", exist_ok=True)
    with open(path_stem + ".json", "w") as f:
        json.dump({"libraries": libraries_isa(),
                   "rows": [asdict(r) | {"ratios": {n: r.ratio(n) for n in r.baselines}} for r in rows]}, f, indent=1)
    with open(path_stem + ".md", "w") as f:
        f.write(header + rows_to_markdown(rows))


def assert_close(got, want, rtol=1e-4, atol=1e-4, what=""):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise AssertionError(f"{what}: pydl result differs from the baseline "
                             f"(max abs err {np.max(np.abs(got - want)):.3e})")
