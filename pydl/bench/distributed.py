"""Data-parallel training: R processes x T threads against 1 process x R*T threads.

    python -m pydl.bench.distributed [--ranks 2] [--epochs 3] [--samples 4096] [--json FILE]

Models: the MLP of bench_mlp (784-256-128-10) and the documents' CNN of bench_cnn, Adam, global
batch 256. The single process runs `fit` with R threads; the job (`mpiexec -n R`, started by this
script, one thread per rank) runs the same `fit` with a DistributedOptimizer. Per model: the
median seconds per epoch (after one warm-up epoch), and for the job the fraction of the step
time rank 0 spent waiting for the gradient allreduce (DistributedOptimizer.stats). Then the
job's allreduce time for message sizes 4 KiB..64 MiB and the bus bandwidth 2 (R-1)/R * bytes / t,
the figure docs/distributed.md's scaling model starts from. Needs mpi4py and an mpiexec
(pip install "pydl-nn[mpi]").

    python -m pydl.bench.distributed --model     # the scaling model only (no MPI needed)

prints docs/distributed.md's projection: the one-thread step time of each model at a per-rank
batch, its gradient bytes S, and for p ranks on a network of B bytes/s the allreduce time
T_ar = 2 log2(p) alpha + 2 (p - 1) / p * S / B (recursive halving / doubling, the algorithm MPI
uses for large messages), with the scaling efficiency T_step / (T_step + T_ar) without overlap,
and T_step / (T_step + exposed) with the allreduce overlapping backward (2/3 of a step), where
exposed = max(T_ar(S_last), T_ar(S) - 2/3 T_step): the last fusion buffer (the first layers'
gradients, ready only when backward ends) can never hide.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

GLOBAL_BATCH = 256


def _models():
    import pydl
    from pydl.layers import Conv2D, Dense, Flatten, MaxPool2D

    def mlp(opt):
        pydl.seed(0)
        m = pydl.Sequential([Dense(256, activation="relu", input_shape=(784,)), Dense(128, activation="relu"),
                             Dense(10, activation="softmax")])
        m.compile("sparse_categorical_crossentropy", opt)
        return m, (784,)

    def cnn(opt):
        pydl.seed(0)
        m = pydl.Sequential([Conv2D(32, 3, padding="same", activation="relu", input_shape=(1, 28, 28)),
                             MaxPool2D(2), Conv2D(64, 3, padding="same", activation="relu"), MaxPool2D(2),
                             Flatten(), Dense(10, activation="softmax")])
        m.compile("sparse_categorical_crossentropy", opt)
        return m, (1, 28, 28)
    return {"mlp": mlp, "cnn": cnn}


def _epoch_times(distributed: bool, samples: int, epochs: int) -> dict:
    import pydl
    from pydl import distributed as dist
    out = {}
    for name, make in _models().items():
        opt = pydl.optimizers.Adam(1e-3)
        if distributed:
            opt = dist.DistributedOptimizer(opt)
        model, shape = make(opt)
        g = np.random.default_rng(1)
        x = g.random((samples,) + shape, dtype=np.float32)
        y = g.integers(0, 10, samples)
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)  # warm-up
        times, waits = [], []
        for _ in range(epochs):
            if distributed:
                model._dist.reset_stats()
                dist.barrier()
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)
            times.append(time.perf_counter() - t0)
            if distributed:
                waits.append(model._dist.stats["wait_s"])
        i = int(np.argsort(times)[len(times) // 2])
        out[name] = {"epoch_s": times[i], "wait_s": waits[i] if waits else 0.0,
                     "steps": -(-samples // GLOBAL_BATCH)}
    return out


def _allreduce_sweep() -> list:
    """In-place sums of one preallocated buffer per size, as the gradient buffers are reduced
    (a non-blocking allreduce waited by pydl.distributed's polling loop)."""
    from pydl import distributed as dist
    rows = []
    for kib in (4, 64, 1024, 4096, 16384, 65536):
        a = np.ones(kib * 256, dtype=np.float32)
        reps = 20 if kib <= 1024 else 5
        dist._inplace_sum(a)
        dist.barrier()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            dist._inplace_sum(a)
            ts.append(time.perf_counter() - t0)
        t = float(np.median(ts))
        r = dist.size()
        rows.append({"bytes": a.nbytes, "seconds": t, "bus_GBps": 2 * (r - 1) / r * a.nbytes / t / 1e9})
    return rows


# scaling model: per-rank batch, link rates (bits/s), achievable fraction, per-message latency
MODEL_BATCH = {"mlp": 128, "cnn": 128, "transformer": 16}
LINKS = {"25 Gb/s": 25e9, "100 Gb/s": 100e9}
LINK_EFFICIENCY = 0.8
ALPHA_S = 10e-6
RANKS = (8, 64, 512)


def _step_times_one_thread(repeats: int = 5) -> dict:
    """Median one-thread step seconds and gradient bytes per model, at MODEL_BATCH per rank."""
    import pydl
    from pydl.layers import Dense, TransformerEncoder
    pydl.set_num_threads(1)
    builders = dict(_models())

    def transformer(opt):  # 4 encoder blocks, d 256, 8 heads, ff 1024, sequences of 64
        pydl.seed(0)
        inp = pydl.Input((64, 256))
        h = inp
        for _ in range(4):
            h = TransformerEncoder(8, ff_dim=1024, dropout=0.0)(h)
        m = pydl.Model(inp, Dense(256)(h))
        m.compile("mse", opt)
        return m, (64, 256)
    builders["transformer"] = transformer
    out = {}
    for name, make in builders.items():
        model, shape = make(pydl.optimizers.Adam(1e-3))
        g = np.random.default_rng(1)
        b = MODEL_BATCH[name]
        x = g.random((b,) + shape, dtype=np.float32)
        y = g.random((b,) + shape, dtype=np.float32) if name == "transformer" else g.integers(0, 10, b)
        model.train_on_batch(x, y)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            ts.append(time.perf_counter() - t0)
        grad_bytes = sum(w.nbytes for w in model.trainable_weights)
        from pydl.distributed import DistributedOptimizer
        d = DistributedOptimizer("sgd")
        d._plan(model, model._backward_plan())
        last = d._buckets[-1]
        out[name] = {"step_s": float(np.median(ts)), "grad_bytes": int(grad_bytes), "batch": b,
                     "last_buffer_bytes": int(last.size * last.dtype.itemsize)}
    return out


def scaling_model(steps: dict) -> list:
    rows = []
    for name, st in steps.items():
        for link, bits in LINKS.items():
            bw = bits / 8 * LINK_EFFICIENCY
            for p in RANKS:
                def t_ar(nbytes):
                    return 2 * np.log2(p) * ALPHA_S + 2 * (p - 1) / p * nbytes / bw
                t, full = st["step_s"], t_ar(st["grad_bytes"])
                exposed = max(t_ar(st["last_buffer_bytes"]), full - 2 * t / 3)
                rows.append({"model": name, "link": link, "ranks": p, "step_s": t, "allreduce_s": float(full),
                             "exposed_s": float(exposed), "eff_no_overlap": t / (t + full),
                             "eff_overlap": t / (t + exposed)})
    return rows


def print_model(steps: dict) -> None:
    print(f"## Scaling model (alpha {ALPHA_S * 1e6:.0f} us per message, {LINK_EFFICIENCY:.0%} of the link rate)")
    print("| model | per-rank batch | one-thread step ms | gradient MB | last buffer MB |")
    print("|---|---|---|---|---|")
    for name, st in steps.items():
        print(f"| {name} | {st['batch']} | {st['step_s'] * 1e3:.1f} | {st['grad_bytes'] / 1e6:.2f} | "
              f"{st['last_buffer_bytes'] / 1e6:.2f} |")
    print("\n| model | link | ranks | allreduce ms | exposed ms | efficiency, no overlap | with overlap |")
    print("|---|---|---|---|---|---|---|")
    for r in scaling_model(steps):
        print(f"| {r['model']} | {r['link']} | {r['ranks']} | {r['allreduce_s'] * 1e3:.2f} | "
              f"{r['exposed_s'] * 1e3:.2f} | {r['eff_no_overlap']:.1%} | {r['eff_overlap']:.1%} |")


def worker(args) -> None:
    from pydl import distributed as dist
    dist.init()
    res = {"ranks": dist.size(), "models": _epoch_times(True, args.samples, args.epochs),
           "allreduce": _allreduce_sweep()}
    if dist.is_root():
        print("RESULT " + json.dumps(res), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydl.bench.distributed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (median), after one warm-up")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--model", action="store_true", help="print only the scaling model (no MPI job)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.model:
        print_model(_step_times_one_thread())
        return 0
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("needs mpi4py and an MPI: pip install \"pydl-nn[mpi]\"", file=sys.stderr)
        return 2
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = here if os.path.exists(here) else shutil.which("mpiexec")
    if mpiexec is None:
        print("no mpiexec found (pip install mpich)", file=sys.stderr)
        return 2
    import pydl
    pydl.set_num_threads(args.ranks)
    single = _epoch_times(False, args.samples, args.epochs)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [mpiexec, "-n", str(args.ranks), sys.executable, "-m", "pydl.bench.distributed", "--worker",
           "--epochs", str(args.epochs), "--samples", str(args.samples)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    job = json.loads(lines[-1][len("RESULT "):])
    print(f"## Data-parallel fit, global batch {GLOBAL_BATCH}, {args.samples} samples "
          f"(median of {args.epochs} epochs)")
    print(f"| model | 1 process x {args.ranks} threads s/epoch | {args.ranks} processes x 1 thread s/epoch | "
          f"speed-up | allreduce wait / step time |")
    print("|---|---|---|---|---|")
    for name in single:
        s, j = single[name], job["models"][name]
        print(f"| {name} | {s['epoch_s']:.3f} | {j['epoch_s']:.3f} | {s['epoch_s'] / j['epoch_s']:.2f}x | "
              f"{100 * j['wait_s'] / j['epoch_s']:.1f}% |")
    print(f"\n## Allreduce over {args.ranks} ranks (float32 sum)")
    print("| bytes | median s | bus GB/s |")
    print("|---|---|---|")
    for r in job["allreduce"]:
        print(f"| {r['bytes']} | {r['seconds']:.6f} | {r['bus_GBps']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"single": single, "job": job, "ranks": args.ranks}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
