"""Data-parallel training over MPI.

Every process (rank) holds the whole model. `fit` gives each rank its share of every global batch,
each rank computes the gradients of its share, and the gradients are averaged over the ranks with
an MPI allreduce before every optimizer step, so all ranks take the same step. Started by an MPI
launcher::

    pip install "pydl-nn[mpi]"                 # mpi4py and MPICH from PyPI
    mpirun -n 4 python train.py

    import pydl
    pydl.distributed.init()                     # a no-op in a single process
    model.compile(loss=..., optimizer=pydl.distributed.DistributedOptimizer(pydl.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=128)             # batch_size is global: each rank trains on ~128/size

What `fit` / `evaluate` do on a model compiled with a DistributedOptimizer:

- At the start of `fit`, rank 0's weights (parameters and state such as BatchNorm's running
  statistics), optimizer state and shuffling seed are broadcast, so every rank starts identical
  and draws the same permutation of the samples each epoch.
- Sharding: each global batch of b samples is cut into `size` contiguous pieces as
  `numpy.array_split` does (the first b % size ranks get one sample more). The last batch of an
  epoch may be short; when b < size some ranks get no samples and contribute nothing to that
  step. A data source (generator, Sequence, DataLoader) is read in full by every rank and each
  rank keeps its piece of every batch, so the source must give the same batches on every rank.
- Gradients: each rank's gradient (the mean over its piece, regularization included) is weighted
  by its sample count, summed over the ranks and divided by the global count: exactly the
  gradient of the global batch, up to float32 summation order. Gradients go into fusion buffers
  of about `fusion_threshold_mb` MiB in the order backward finishes them; a buffer's non-blocking
  allreduce starts as soon as its last gradient is ready, while backward runs on for the earlier
  layers, and every buffer is waited for before the optimizer step. The summed result is
  identical on every rank, so after every step all ranks hold bitwise identical weights.
- Logs: every batch's loss and metrics are reduced over the ranks (weighted by sample count),
  so the logs, History, callbacks and EarlyStopping see the same values on every rank. Only
  rank 0 shows the progress bar and writes ModelCheckpoint files and CSVLogger logs.
  `evaluate` (and validation) shards the data the same way and reduces the sums; metrics that
  are means over samples (accuracy, MAE, ...) equal the single-process values, and stateful
  metric objects (AUC, Precision, ...) have their accumulators summed over the ranks, so they
  equal them too.
- `train_on_batch` / `test_on_batch` on such a model: each rank passes its own piece of the
  batch; gradients, logs and metrics are reduced as in `fit`.
- `predict` is not sharded: every rank predicts all of its input.
- BatchNormalization normalizes with each rank's own batch statistics (as Horovod and PyTorch
  DDP do by default); Dropout draws different masks on each rank.

Failure: every collective call waits with a timeout (`init(timeout=...)`, default 300 s, or
PYDL_DIST_TIMEOUT). A rank whose `fit`/`evaluate` raises tells the others, which then raise
DistributedError naming it; an exception that ends a rank's program aborts the MPI job (after a
short grace so the other ranks can print theirs), and so does a rank's exit after a timeout or a
failure notice even when the program caught the error, so no rank waits forever. Model structures that
differ between ranks are detected at compile (or the first fit) and raise on every rank.

CuPy arrays: the CPU backend only; the CUDA backend's NCCL path does not exist yet.
"""
from __future__ import annotations

import hashlib
import os
import sys
import signal
import time

import numpy as np

__all__ = ["init", "is_initialized", "rank", "size", "local_rank", "local_size", "is_root", "barrier",
           "allreduce", "broadcast", "DistributedOptimizer", "DistributedError", "shard_bounds"]

# Environment variables set by MPI launchers (MPICH/Hydra, Open MPI, PMIx, MVAPICH).
_LAUNCH_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
_ERR_TAG = 7177
_GRACE_S = 2.0
_SPIN_S = 0.05
_ABORT_LIMIT_S = 5.0  # a rank that asked MPI to abort the job is gone this long after, whatever MPI does


class DistributedError(RuntimeError):
    """Another rank failed, a collective call timed out, or the ranks disagree."""


class _State:
    def __init__(self):
        self.initialized = False
        self.MPI = None
        self.comm = None       # private duplicate of COMM_WORLD for pydl's collectives
        self.err_comm = None   # another duplicate, only for failure notices
        self.rank, self.size = 0, 1
        self.local_rank, self.local_size = 0, 1
        self.timeout = 300.0
        self.notified = False
        self.sends: list = []
        self.prev_hook = None
        self.broken = False    # a collective timed out or another rank failed: MPI_Finalize could wait forever
        self.aborting = False


_st = _State()


def _launched_by_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCH_VARS)


def init(timeout: float | None = None) -> None:
    """Join the MPI job this process was started in (mpirun / mpiexec); without an MPI launcher
    a no-op (one rank; mpi4py is not even imported). Safe to call more than once.

    timeout: seconds any collective call may wait before raising DistributedError (default 300,
    or the PYDL_DIST_TIMEOUT environment variable). With more than one rank and no
    OMP_NUM_THREADS set, each rank runs on (CPUs / ranks on this node) threads."""
    if timeout is None:
        env = os.environ.get("PYDL_DIST_TIMEOUT")
        try:
            timeout = float(env) if env else _st.timeout
        except ValueError:
            raise ValueError(f"[pydl.distributed.init] PYDL_DIST_TIMEOUT must be a number of seconds, "
                             f"got {env!r}") from None
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise ValueError(f"[pydl.distributed.init] timeout must be a number of seconds, got {timeout!r}") from None
    if not timeout > 0 or timeout != timeout:
        raise ValueError(f"[pydl.distributed.init] timeout must be > 0 seconds, got {timeout!r}")
    _st.timeout = timeout
    if _st.initialized:
        return
    if not _launched_by_mpi():  # one process: nothing to join, and MPI is never loaded
        _st.initialized = True
        return
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("[pydl.distributed.init] this process was started by an MPI launcher but mpi4py "
                          "is not installed: pip install \"pydl-nn[mpi]\" (mpi4py and MPICH)") from None
    world = MPI.COMM_WORLD
    _st.MPI = MPI
    _st.comm, _st.err_comm = world.Dup(), world.Dup()
    _st.rank, _st.size = world.Get_rank(), world.Get_size()
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    _st.local_rank, _st.local_size = node.Get_rank(), node.Get_size()
    node.Free()
    _st.initialized = True
    if _st.size > 1:
        _st.prev_hook = sys.excepthook
        sys.excepthook = _excepthook
        # Python's atexit handlers run before mpi4py's MPI_Finalize
        import atexit
        atexit.register(_atexit)
        if "OMP_NUM_THREADS" not in os.environ:
            from . import set_num_threads
            try:
                cpus = len(os.sched_getaffinity(0))
            except AttributeError:
                cpus = os.cpu_count() or 1
            set_num_threads(max(1, cpus // _st.local_size))


def _require_init() -> None:
    if not _st.initialized:
        init()


def is_initialized() -> bool:
    return _st.initialized


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return _st.rank


def size() -> int:
    """The number of ranks (1 in a single process)."""
    return _st.size


def local_rank() -> int:
    return _st.local_rank


def local_size() -> int:
    return _st.local_size


def is_root() -> bool:
    """True on rank 0 (and in a single process): the rank that prints and writes files."""
    return _st.rank == 0


def _active() -> bool:
    return _st.size > 1


# -- waiting with a timeout, and failure notices -------------------------------------------------
def _check_peer_error() -> None:
    MPI = _st.MPI
    status = MPI.Status()
    if _st.err_comm.Iprobe(source=MPI.ANY_SOURCE, tag=_ERR_TAG, status=status):
        n = status.Get_count(MPI.BYTE)
        buf = bytearray(max(n, 1))
        src = status.Get_source()
        _st.err_comm.Recv([buf, n, MPI.BYTE], source=src, tag=_ERR_TAG)
        _st.notified = True  # the failure is known everywhere; don't echo it back
        _st.broken = True
        raise DistributedError(f"[pydl.distributed] rank {src} failed: {buf[:n].decode('utf-8', 'replace')}; "
                               f"stopping rank {_st.rank} as well")


def _wait(reqs, what: str) -> float:
    """Wait for the requests, checking for failure notices; DistributedError after the timeout.
    Returns the seconds spent waiting.

    MPI progresses a message only inside MPI calls, so the first _SPIN_S seconds poll without
    sleeping (yielding the CPU to any other runnable process between polls: ranks may share
    cores); a longer wait backs off to sleeps of up to 1 ms."""
    MPI = _st.MPI
    t0 = time.perf_counter()
    deadline = time.monotonic() + _st.timeout
    spins = 0
    while not MPI.Request.Testall(reqs):
        spins += 1
        if spins & 63 == 0:
            _check_peer_error()
            waited = time.perf_counter() - t0
            if waited > _SPIN_S:
                if time.monotonic() > deadline:
                    _st.broken = True  # the requests stay in flight: this job can no longer finalize
                    raise DistributedError(f"[pydl.distributed] rank {_st.rank} waited {_st.timeout:g} s for {what} "
                                           f"without the other ranks taking part: a rank has died, hangs, or runs "
                                           f"a different sequence of steps (set the limit with init(timeout=...))")
                time.sleep(min(1e-3, waited * 0.01))
                continue
        os.sched_yield()
    return time.perf_counter() - t0


def _notify_peers(exc: BaseException) -> None:
    """Tell every other rank that this one failed (once; non-blocking)."""
    if _st.notified or not _active() or isinstance(exc, DistributedError):
        return
    _st.notified = True
    MPI = _st.MPI
    msg = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:4000]
    data = bytearray(msg)
    for r in range(_st.size):
        if r != _st.rank:
            _st.sends.append(_st.err_comm.Isend([data, len(data), MPI.BYTE], dest=r, tag=_ERR_TAG))


def _excepthook(tp, value, tb) -> None:
    (_st.prev_hook or sys.__excepthook__)(tp, value, tb)
    if _st.comm is not None and _active():
        _fail_job(value)


def _atexit() -> None:
    """The program ends (normally, by sys.exit, or by an exception another excepthook handled)
    after a failed collective or with an uncaught exception: abort the job instead of entering
    MPI_Finalize, which waits for ranks that may never come."""
    if _st.aborting or not _active():
        return
    value = getattr(sys, "last_value", None)  # set by Python for an uncaught exception
    if value is None and not _st.broken:
        return
    try:
        sys.stderr.write(f"[pydl.distributed] rank {_st.rank} is exiting after "
                         f"{'an uncaught ' + type(value).__name__ if value is not None else 'a failed collective'}"
                         f": aborting the MPI job so that no rank waits for it\n")
    except Exception:  # noqa: BLE001
        pass
    _fail_job(value if value is not None else DistributedError("exit after a failed collective"))


def _fail_job(value: BaseException) -> None:
    """Tell the other ranks, give them a moment to report, and end the whole job."""
    _flush_streams()
    if not isinstance(value, DistributedError):
        _notify_peers(value)
    # let the other ranks report too before the job is torn down (the failed rank waits longest)
    time.sleep(_GRACE_S if not isinstance(value, DistributedError) else _GRACE_S / 2)
    _abort_job(1)


def _flush_streams() -> None:
    for s in (sys.stderr, sys.stdout):
        try:
            s.flush()
        except Exception:  # noqa: BLE001  (a closed stream must not stop the abort)
            pass


def _abort_job(code: int) -> None:
    """End every process of the job now; never returns.

    The abort goes through MPI_COMM_WORLD, which asks the process manager (mpiexec) to kill
    every rank. Not pydl's duplicated communicator: MPICH aborts any other communicator (even
    one with the same processes) by sending each member a message and waiting for the send to
    complete, and a member exits only when it next enters MPI, so a rank that never joins
    (sleeping, computing, or waiting in MPI_Finalize) outlives the abort, and on some transports
    the aborting rank itself blocks forever. MPI_Abort may also return before the process
    manager acts (MPICH 5.0), so this process then exits by itself, never reaching MPI_Finalize.
    Should MPI_Abort block instead, SIGALRM ends the process after _ABORT_LIMIT_S (a signal, not
    a thread: mpi4py holds the GIL inside MPI_Abort). Any rank exiting without MPI_Finalize makes
    the process manager end the others."""
    _st.aborting = True
    _flush_streams()
    if hasattr(signal, "alarm"):
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
        except (ValueError, OSError):  # not the main thread: keep the handler there is
            pass
        signal.alarm(int(_ABORT_LIMIT_S))
    try:
        _st.MPI.COMM_WORLD.Abort(code)
    except BaseException:  # noqa: BLE001  (exit regardless)
        pass
    _flush_streams()
    os._exit(code)


# -- collectives on arrays -----------------------------------------------------------------------
def _mpi_buffer(a: np.ndarray):
    return [a, _st.MPI._typedict[a.dtype.char]]


def allreduce(x, op: str = "sum") -> np.ndarray:
    """The element-wise sum (op="sum") or mean (op="mean") of `x` over all ranks, identical on
    every rank; a new array (x itself is not modified). In a single process: a copy of x."""
    if op not in ("sum", "mean"):
        raise ValueError(f"[pydl.distributed.allreduce] op must be 'sum' or 'mean', got {op!r}")
    a = np.array(x, copy=True, order="C")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"[pydl.distributed.allreduce] x must be a numeric array, got dtype {a.dtype}")
    _require_init()
    if _active():
        req = _st.comm.Iallreduce(_st.MPI.IN_PLACE, _mpi_buffer(a), op=_st.MPI.SUM)
        _wait([req], f"allreduce of an array {a.shape}")
    if op == "mean":
        a = a / _st.size
    return a


def _inplace_sum(a: np.ndarray) -> None:
    """a = the sum of a over the ranks, in place (the benchmark's measure of the gradient path)."""
    if _active():
        _wait([_st.comm.Iallreduce(_st.MPI.IN_PLACE, _mpi_buffer(a), op=_st.MPI.SUM)], "an allreduce")


def broadcast(x: np.ndarray, root: int = 0) -> np.ndarray:
    """Overwrite x (a C-contiguous, writeable ndarray of the same shape and dtype on every rank)
    with root's x, in place; returns x."""
    if not isinstance(x, np.ndarray) or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError("[pydl.distributed.broadcast] x must be a C-contiguous, writeable numpy.ndarray "
                         "(it is overwritten in place)")
    _require_init()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < _st.size:
        raise ValueError(f"[pydl.distributed.broadcast] root must be a rank in [0, {_st.size}), got {root!r}")
    if _active() and x.size:
        req = _st.comm.Ibcast(_mpi_buffer(x), root=int(root))
        _wait([req], f"broadcast of an array {x.shape}")
    return x


def barrier() -> None:
    _require_init()
    if _active():
        _wait([_st.comm.Ibarrier()], "a barrier")


def _allgather_bytes(data: bytes) -> list[bytes]:
    MPI = _st.MPI
    counts = np.zeros(_st.size, dtype=np.int64)
    mine = np.array([len(data)], dtype=np.int64)
    _wait([_st.comm.Iallgather([mine, MPI.INT64_T], [counts, MPI.INT64_T])], "an allgather")
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = bytearray(int(counts.sum()))
    send = bytearray(data)
    _wait([_st.comm.Iallgatherv([send, len(send), MPI.BYTE],
                                [out, (counts.tolist(), displs.tolist()), MPI.BYTE])], "an allgather")
    return [bytes(out[d:d + c]) for d, c in zip(displs.tolist(), counts.tolist())]


def shard_bounds(n: int, rank_: int | None = None, size_: int | None = None) -> tuple[int, int]:
    """[lo, hi) of this rank's piece of n samples: numpy.array_split's contiguous pieces (the
    first n % size ranks get one more)."""
    r = _st.rank if rank_ is None else rank_
    s = _st.size if size_ is None else size_
    q, extra = divmod(n, s)
    lo = r * q + min(r, extra)
    return lo, lo + q + (1 if r < extra else 0)


def _unpack_states(metrics, states, flat) -> None:
    """Give each metric the state read from `flat` (its arrays, in order)."""
    off = 0
    for m, st in zip(metrics, states):
        new = []
        for a in st:
            new.append(np.asarray(flat[off:off + a.size]).reshape(a.shape))
            off += a.size
        m.set_state_arrays(new)


# -- the optimizer wrapper -----------------------------------------------------------------------
class _Bucket:
    __slots__ = ("dtype", "entries", "size", "buf", "pending", "req")

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.entries: list = []   # (position in the model's grad pairs, offset, size, shape)
        self.size = 0
        self.buf = None
        self.pending = 0
        self.req = None


class DistributedOptimizer:
    """Wraps an optimizer for data-parallel training: compile a model with it and fit averages
    the gradients over all ranks before each step (see the module docstring). The model keeps
    the wrapped optimizer as `model.optimizer` (saved files hold it, and load in one process).

    fusion_threshold_mb: size of the gradient fusion buffers (MiB); overlap: start each buffer's
    allreduce while backward still runs (False: one pass after backward, for comparison).
    `stats` counts steps, seconds spent waiting for the gradient allreduce, and bytes reduced."""

    def __init__(self, optimizer, fusion_threshold_mb: float = 4.0, overlap: bool = True):
        from . import optimizers as _optimizers
        if isinstance(optimizer, DistributedOptimizer):
            raise ValueError("[DistributedOptimizer] the optimizer is already a DistributedOptimizer")
        self.optimizer = _optimizers.get(optimizer)
        try:
            mb = float(fusion_threshold_mb)
        except (TypeError, ValueError):
            mb = float("nan")
        if not mb > 0 or mb == float("inf"):
            raise ValueError(f"[DistributedOptimizer] fusion_threshold_mb must be a positive number, "
                             f"got {fusion_threshold_mb!r}")
        self.fusion_bytes = int(mb * (1 << 20))
        self.overlap = bool(overlap)
        self.stats = {"steps": 0, "wait_s": 0.0, "bytes": 0, "buffers": 0}
        self._plan_key = None
        self._buckets: list[_Bucket] = []
        self._done_at: dict = {}
        self._checked: set = set()
        self._global_count = 0
        self._need_sync = True

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r}, ranks={_st.size})"

    def reset_stats(self) -> None:
        self.stats = {"steps": 0, "wait_s": 0.0, "bytes": 0, "buffers": 0}

    # -- set-up, once per model --------------------------------------------------------------
    def _fingerprint(self, model) -> bytes:
        lines = [f"optimizer {type(self.optimizer).__name__} built={self.optimizer.built}"]
        for layer, k in model._param_slots:
            p = layer.params[k]
            lines.append(f"{type(layer).__name__} param {k} {tuple(p.shape)} {p.dtype} "
                         f"trainable={bool(layer._trainable)}")
        for layer in model._layers:
            for k, s in layer.state.items():
                lines.append(f"{type(layer).__name__} state {k} {tuple(np.shape(s))} {np.asarray(s).dtype}")
        return "\n".join(lines).encode()

    def check_structure(self, model) -> None:
        """Raise DistributedError on every rank if the models' parameters differ between ranks."""
        _require_init()
        if not _active() or not model.built or id(model) in self._checked:
            return
        text = self._fingerprint(model)
        digest = np.frombuffer(hashlib.sha256(text).digest(), dtype=np.uint8).copy()
        every = np.zeros((_st.size, digest.size), dtype=np.uint8)
        _wait([_st.comm.Iallgather([digest, _st.MPI.BYTE], [every, _st.MPI.BYTE])], "the model structure check")
        if not (every == every[0]).all():
            texts = [t.decode().split("\n") for t in _allgather_bytes(text)]
            ref = texts[0]
            for r, lines in enumerate(texts):
                if lines != ref:
                    i = next((j for j, (a, b) in enumerate(zip(ref, lines)) if a != b), min(len(ref), len(lines)))
                    a = ref[i] if i < len(ref) else "(nothing)"
                    b = lines[i] if i < len(lines) else "(nothing)"
                    raise DistributedError(f"[DistributedOptimizer] the model differs between ranks: entry {i} is "
                                           f"'{a}' on rank 0 but '{b}' on rank {r} ({len(ref)} vs {len(lines)} "
                                           f"entries); every rank must build the same model")
        self._checked.add(id(model))

    def begin_fit(self, model):
        """At the start of fit: the shuffling generator, seeded from rank 0 identically on every
        rank. Rank 0's weights and optimizer state are broadcast at the first step (the model
        may be built only by its first batch)."""
        _require_init()
        seed = np.zeros(1, dtype=np.uint64)
        if is_root():
            from .random import get_rng
            seed[0] = get_rng().integers(0, 2 ** 63)
        if _active():
            _wait([_st.comm.Ibcast(_mpi_buffer(seed), root=0)], "the broadcast of the shuffling seed")
        self._need_sync = True
        return np.random.default_rng(int(seed[0]))

    def _sync(self, model) -> None:
        """Check the structure and overwrite weights and optimizer state with rank 0's."""
        self.check_structure(model)
        self._need_sync = False
        if not _active():
            return
        reqs = []
        for layer, kind, k in model._weight_slots():
            a = getattr(layer, kind)[k]
            if a.size:
                reqs.append(_st.comm.Ibcast(_mpi_buffer(a), root=0))
        opt = self.optimizer
        it = np.array([opt.iterations], dtype=np.int64)
        reqs.append(_st.comm.Ibcast(_mpi_buffer(it), root=0))
        if opt._slots is not None:
            for d in opt._slots:
                for a in d.values():
                    if a.size:
                        reqs.append(_st.comm.Ibcast(_mpi_buffer(a), root=0))
        _wait(reqs, "the broadcast of rank 0's weights")
        opt.iterations = int(it[0])

    def shard(self):
        return (_st.rank, _st.size) if _active() else None

    # -- one step ----------------------------------------------------------------------------
    def _plan(self, model, bplan):
        """Fusion buffers in the order backward finishes the layers' gradients."""
        key = (id(model), id(bplan), len(bplan))
        if key == self._plan_key:
            return
        pos = {(id(layer), k): i for i, (layer, k) in enumerate(model._param_slots)}
        last = {}
        for i, step in enumerate(bplan):
            last[id(step[0])] = i
        order, seen = [], set()
        for i, step in enumerate(bplan):
            layer = step[0]
            if last[id(layer)] == i and id(layer) not in seen and layer._trainable:
                seen.add(id(layer))
                order.append((i, layer))
        rest = [layer for layer in model._layers if id(layer) not in seen and layer._trainable and layer.params]
        buckets, done_at = [], {}
        cur = None
        for i, layer in order + [(len(bplan), layer) for layer in rest]:
            done_at.setdefault(i, []).append(layer)
            for k, p in layer.params.items():
                if cur is None or cur.dtype != p.dtype or (cur.size and (cur.size + p.size) * p.itemsize >
                                                           self.fusion_bytes):
                    cur = _Bucket(p.dtype)
                    buckets.append(cur)
                cur.entries.append((pos[(id(layer), k)], cur.size, p.size, p.shape, layer, k))
                cur.size += p.size
        for b in buckets:
            # gradients, then a presence flag per gradient, then the sample count
            b.buf = np.empty(b.size + len(b.entries) + 1, dtype=b.dtype)
        self._buckets, self._done_at, self._plan_key = buckets, done_at, key
        self._owner = {(id(e[4]), e[5]): (b, j) for b in buckets for j, e in enumerate(b.entries)}

    def _fill(self, layer, count: float, reg: bool) -> None:
        """Copy a finished layer's gradients (times the local sample count) into its buffers and
        start every buffer that is complete."""
        if reg and layer.regularizers and layer._trainable:
            layer.add_regularization_grads()
        for k in layer.params:
            slot = self._owner.get((id(layer), k))
            if slot is None:
                continue
            b, j = slot
            _, off, n, _, _, _ = b.entries[j]
            g = layer.grads.get(k)
            view = b.buf[off:off + n]
            if g is None:
                view.fill(0)
                b.buf[b.size + j] = 0
            else:
                np.multiply(np.reshape(g, -1), count, out=view)
                b.buf[b.size + j] = 1
            b.pending -= 1
            if b.pending == 0:
                b.buf[-1] = count
                self._start(b)

    def _start(self, b: _Bucket) -> None:
        if _active():
            b.req = _st.comm.Iallreduce(_st.MPI.IN_PLACE, _mpi_buffer(b.buf), op=_st.MPI.SUM)
            self.stats["bytes"] += b.buf.nbytes
            self.stats["buffers"] += 1

    def train_step(self, model, xs, ys, ws=None) -> dict:
        _require_init()
        if self._need_sync:
            self._sync(model)
        n = int(xs[0].shape[0])
        if not _active():  # one rank: nothing to sum, the plain step
            total, values, vals, oplan = model._gradients(xs, ys, ws)
            self.optimizer.apply_gradients(model._grad_pairs())
            self.stats["steps"] += 1
            self._global_count = n
            return model._logs(total, values, oplan, vals, ys)
        bplan = model._backward_plan()
        self._plan(model, bplan)
        for b in self._buckets:
            b.pending, b.req = len(b.entries), None
        count = float(n)
        reg_layers = {id(layer) for layer in model._reg_layers}
        named = model._stateful_named(model._output_plan())
        before = [fn.state_arrays() for _, fn in named]
        if n > 0:
            def on_done(i):
                for layer in self._done_at.get(i, ()):
                    self._fill(layer, count, id(layer) in reg_layers)
                if _active():
                    live = [b.req for b in self._buckets if b.req is not None]
                    if live:
                        _st.MPI.Request.Testall(live)  # let MPI progress the started buffers
            hook = on_done if self.overlap else None
            total, values, vals, oplan = model._gradients(xs, ys, ws, on_done=hook)
            logs = model._logs(total, values, oplan, vals, ys)
            if hook is None:
                for i in sorted(self._done_at):
                    for layer in self._done_at[i]:
                        self._fill(layer, count, False)
            else:
                for layer in self._done_at.get(len(bplan), ()):
                    self._fill(layer, count, id(layer) in reg_layers)
        else:
            for layer in model._layers:
                layer.zero_grads()
            for i in sorted(self._done_at):
                for layer in self._done_at[i]:
                    self._fill(layer, 0.0, False)
            logs = {k: 0.0 for k in model._log_keys()}
        # the batch's logs, weighted by the local count, and what the batch added to the stateful
        # metrics' accumulators, reduced alongside the gradients
        keys = list(logs)
        deltas = [a - b for (_, fn), bs in zip(named, before) for a, b in zip(fn.state_arrays(), bs)]
        lbuf = np.concatenate([np.array([count] + [logs[k] * count for k in keys], dtype=np.float64)] +
                              [d.ravel() for d in deltas])
        reqs = [b.req for b in self._buckets if b.req is not None]
        if _active():
            reqs.append(_st.comm.Iallreduce(_st.MPI.IN_PLACE, _mpi_buffer(lbuf), op=_st.MPI.SUM))
        if reqs:
            self.stats["wait_s"] += _wait(reqs, f"the gradient allreduce of step {self.optimizer.iterations + 1}")
        self.stats["steps"] += 1
        total_count = lbuf[0]
        pairs = model._grad_pairs()
        grads = [None] * len(pairs)
        if total_count > 0:
            for b in self._buckets:
                scale = b.dtype.type(1.0 / b.buf[-1])
                b.buf[:b.size] *= scale  # the averaged gradients, handed over as views of the buffer
                for j, (p, off, n_el, shape, _, _) in enumerate(b.entries):
                    if b.buf[b.size + j] > 0:
                        grads[p] = b.buf[off:off + n_el].reshape(shape)
            self.optimizer.apply_gradients([(g, param) for g, (_, param) in zip(grads, pairs)])
        self._global_count = int(total_count)
        out = {k: (lbuf[i + 1] / total_count if total_count > 0 else 0.0) for i, k in enumerate(keys)}
        if named:
            totals = lbuf[1 + len(keys):]
            off = 0
            for (name, fn), bs in zip(named, before):
                new = []
                for b in bs:
                    new.append(b + totals[off:off + b.size].reshape(b.shape))
                    off += b.size
                fn.set_state_arrays(new)
                out[name] = float(fn.result())
        return out

    def reduce_sums(self, sums: dict, n: int, keys, metrics=()) -> tuple[dict, int]:
        """Sum evaluation totals {key: sum of value * count} and the count over the ranks; the
        stateful metric objects' accumulators are summed too (each then holds the state of
        all ranks' data)."""
        keys = list(keys)
        states = [m.state_arrays() for m in metrics]
        buf = np.concatenate([np.array([float(n)] + [sums.get(k, 0.0) for k in keys], dtype=np.float64)] +
                             [a.ravel() for st in states for a in st])
        if _active():
            _wait([_st.comm.Iallreduce(_st.MPI.IN_PLACE, _mpi_buffer(buf), op=_st.MPI.SUM)], "the evaluation sums")
        _unpack_states(metrics, states, buf[1 + len(keys):])
        return {k: float(buf[i + 1]) for i, k in enumerate(keys)}, int(buf[0])

    def last_batch_count(self) -> int:
        """Samples in the last global batch (all ranks together)."""
        return self._global_count

    def failed(self, exc: BaseException) -> None:
        """Called by fit/evaluate when this rank raises: tell the other ranks."""
        _notify_peers(exc)
