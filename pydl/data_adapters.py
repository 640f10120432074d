"""Every kind of input `fit` / `evaluate` / `predict` take, turned into one stream of batches.

Accepted (as Keras):
  arrays           NumPy arrays (or lists / dicts of them for several inputs and outputs, or
                   anything with `.numpy()` such as a torch tensor); batched and shuffled here
  Sequence         an object with `__len__` and `__getitem__(i)` returning batch i (subclass
                   `pydl.data.Sequence` / `pydl.utils.Sequence`, or any such object);
                   `on_epoch_end()` is called after each epoch when it has one
  iterator         a Python generator or any iterator of batches: read once, never restarted
  iterable         anything else with `__iter__` (a PyTorch DataLoader, a list of batches made
                   by a function, ...): a new pass is started when one ends
A batch is `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, where x and y may be tuples, lists
or dicts for several inputs / outputs. Values with `.numpy()` (torch tensors) are converted with
`.detach().cpu().numpy()`; torch itself is never imported.

`BatchStream` is the single code path: the training loop only ever asks it for one epoch of
batches. With a step count (steps_per_epoch), epochs continue where the previous one stopped; a
restartable source starts a new pass when one ends, an iterator that runs out ends the epoch
(`ran_out` is then set and fit warns and stops, as Keras). Without a step count an epoch is one
pass (the rest of an iterator). With `prefetch`, a background thread reads and converts the next
batch while the current one trains.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from .ops import device as _device

__all__ = ["Sequence", "BatchStream", "is_data_source", "unpack_batch", "to_numpy", "class_weight_to_sample_weight",
           "source_stream", "array_stream"]


class Sequence:
    """Base class for a sequence of batches, as `keras.utils.Sequence` / `PyDataset`.

    Subclasses implement `__len__` (batches per epoch) and `__getitem__(index)` returning batch
    `index` as `x`, `(x, y)` or `(x, y, sample_weight)`; `on_epoch_end()` runs after every epoch.
    With `fit(shuffle=True)` the batches of each epoch are visited in a random order."""

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__}.__len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__}.__getitem__")

    def on_epoch_end(self) -> None:
        pass

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def _is_tensor_like(obj) -> bool:
    """A torch (or similar) tensor: not a NumPy array, has .numpy(); detected without importing torch."""
    return not isinstance(obj, np.ndarray) and callable(getattr(obj, "numpy", None)) \
        and type(obj).__module__.split(".")[0] in ("torch", "tensorflow", "jax", "jaxlib")


def to_numpy(obj):
    """Tensors (anything of torch, TensorFlow or JAX with `.numpy()`) as NumPy arrays, inside
    tuples, lists and dicts too; other values are returned as they are."""
    if _device.is_cuda(obj):  # a CuPy array: batches are prepared on the host, then moved
        return obj.get()
    if _is_tensor_like(obj):
        t = obj
        if callable(getattr(t, "detach", None)):
            t = t.detach()
        if callable(getattr(t, "cpu", None)):
            t = t.cpu()
        return t.numpy()
    if isinstance(obj, tuple):
        return tuple(to_numpy(v) for v in obj)
    if isinstance(obj, list):
        return [to_numpy(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    return obj


def is_data_source(x) -> bool:
    """True for a Sequence, iterator or iterable of batches; False for arrays (and lists, tuples
    and dicts of arrays, tensors, scalars), which fit batches itself."""
    if x is None or isinstance(x, (np.ndarray, list, tuple, dict, str, bytes, np.generic)) or _is_tensor_like(x) \
            or _device.is_cuda(x):
        return False
    if isinstance(x, Sequence):
        return True
    if hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__") or \
        (hasattr(x, "__getitem__") and hasattr(x, "__len__"))


def unpack_batch(batch, who: str):
    """(x, y, sample_weight) from one batch: x, (x,), (x, y) or (x, y, w) (a list counts as a tuple
    only at the top level, as Keras's unpack_x_y_sample_weight)."""
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        return batch, None, None
    if len(batch) == 1:
        return batch[0], None, None
    if len(batch) == 2:
        return batch[0], batch[1], None
    if len(batch) == 3:
        return batch
    raise ValueError(f"[{who}] a batch must be x, (x,), (x, y) or (x, y, sample_weight); got a tuple of "
                     f"{len(batch)} items")


def class_weight_to_sample_weight(class_weight: dict, y, who: str) -> np.ndarray:
    """Per-sample weights from {class: weight} (Keras): the class of a sample is its label for
    integer labels (N,) or (N, 1), the argmax of a one-hot row (N, C), round(y) for one binary
    output (N, 1). Classes missing from the dict weigh 1."""
    if not isinstance(class_weight, dict) or not class_weight:
        raise ValueError(f"[{who}] class_weight must be a non-empty dict {{class index: weight}}, got {class_weight!r}")
    table = {}
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"[{who}] class_weight keys must be class indices (ints >= 0), got {k!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ValueError(f"[{who}] class_weight[{k}] must be a finite number, got {v!r}")
        table[int(k)] = float(v)
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        cls = np.argmax(y, axis=-1)
    elif y.ndim == 2 and y.shape[-1] == 1:
        cls = np.round(y[:, 0])
    else:
        cls = np.round(y) if np.issubdtype(y.dtype, np.floating) else y
    cls = np.asarray(cls).reshape(len(y), -1)
    if cls.shape[1] != 1:
        raise ValueError(f"[{who}] class_weight needs one class per sample, got targets of shape {y.shape}")
    cls = cls[:, 0]
    if cls.size and not (np.all(np.isfinite(cls)) and cls.min() >= 0):
        bad = cls[~(np.isfinite(cls) & (cls >= 0))][0]
        raise ValueError(f"[{who}] class_weight needs class indices >= 0 as targets; a sample's class is {bad.item()!r} "
                         f"(targets of shape {y.shape}, dtype {y.dtype})")
    cls = cls.astype(np.int64)
    # Weights by lookup of each sample's class among the dict's keys (no table as long as the
    # largest class: a key or target of 10**12 is just a number here).
    keys = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[k] for k in keys.tolist()], dtype=np.float32)
    pos = np.minimum(np.searchsorted(keys, cls), len(keys) - 1)
    return np.where(keys[pos] == cls, vals[pos], np.float32(1.0)).astype(np.float32)


class _Prefetcher:
    """An iterator read (and each item converted) by a background thread, one item ahead."""

    _END = object()

    def __init__(self, it):
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(it,), name="pydl-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it):
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("error", exc))

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        kind, value = self._q.get()
        if kind == "item":
            return value
        self._done = True
        self._thread.join()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        self._done = True
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5.0)


class BatchStream:
    """Batches from one source, one epoch at a time (see the module docstring).

    open_pass: a function starting a new pass over the source (an iterator of raw batches);
    restartable: whether open_pass may be called again; convert: applied to every raw batch
    (in the prefetch thread when prefetching); num_batches: batches per pass, or None if unknown;
    on_epoch_end: called by end_epoch()."""

    def __init__(self, open_pass, restartable: bool, convert=None, num_batches=None, prefetch: bool = False,
                 on_epoch_end=None):
        self._open_pass = open_pass
        self.restartable = bool(restartable)
        self._convert = convert
        self.num_batches = num_batches
        self.prefetch = bool(prefetch)
        self._on_epoch_end = on_epoch_end
        self._it = None
        self.ran_out = False
        self._opened_once = False

    def _open(self):
        if not self.restartable and self._opened_once:
            return iter(())
        self._opened_once = True
        it = iter(self._open_pass())
        if self._convert is not None:
            it = map(self._convert, it)
        return _Prefetcher(it) if self.prefetch else it

    def _drop(self) -> None:
        if isinstance(self._it, _Prefetcher):
            self._it.close()
        self._it = None

    def epoch(self, steps=None):
        """Yield the batches of one epoch: `steps` of them (fewer if the source runs out: then
        `ran_out` is set), or one pass (the rest of an iterator) when steps is None."""
        self.ran_out = False
        if steps is None:
            if self.restartable or self._it is None:
                self._drop()
                self._it = self._open()
            n = 0
            for batch in self._it:
                n += 1
                yield batch
            if self.restartable:
                self._it = None
            if n == 0:
                self.ran_out = True
            return
        taken, fresh = 0, False
        while taken < steps:
            if self._it is None:
                self._it = self._open()
                fresh = True
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                if self.restartable and not fresh:
                    continue
                self.ran_out = True
                return
            fresh = False
            taken += 1
            yield batch

    def end_epoch(self) -> None:
        if self._on_epoch_end is not None:
            self._on_epoch_end()

    def close(self) -> None:
        self._drop()


def source_stream(data, shuffle: bool, rng, convert, prefetch: bool, who: str) -> BatchStream:
    """A BatchStream over a Sequence, an iterator or an iterable of batches."""
    if isinstance(data, Sequence) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                                      and not hasattr(data, "__next__")):
        try:
            n = len(data)
        except TypeError as exc:
            raise TypeError(f"[{who}] len() of the {type(data).__name__} failed: {exc}") from None
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"[{who}] len() of the {type(data).__name__} must be an int >= 0, got {n!r}")
        n = int(n)

        def open_pass():
            order = rng.permutation(n) if shuffle else range(n)
            return (data[int(i)] for i in order)

        end = getattr(data, "on_epoch_end", None)
        return BatchStream(open_pass, True, convert, n, prefetch, end if callable(end) else None)
    if hasattr(data, "__next__"):
        return BatchStream(lambda: data, False, convert, None, prefetch)
    if hasattr(data, "__iter__"):
        try:
            n = len(data)
        except TypeError:
            n = None
        return BatchStream(lambda: iter(data), True, convert, n, prefetch)
    raise TypeError(f"[{who}] cannot read batches from {type(data).__name__}: give arrays, a Sequence "
                    f"(__len__ and __getitem__), a generator or an iterable of batches")


def shard_batch(batch, shard):
    """This rank's contiguous piece of a prepared (xs, ys, ws) batch; shard = (rank, size)."""
    if shard is None:
        return batch
    xs, ys, ws = batch
    lo, hi = _shard_bounds(xs[0].shape[0], shard)

    def cut(arrays):
        return None if arrays is None else [None if a is None else a[lo:hi] for a in arrays]
    return cut(xs), cut(ys), cut(ws)


def _shard_bounds(n: int, shard) -> tuple[int, int]:
    r, s = shard
    q, extra = divmod(n, s)
    lo = r * q + min(r, extra)
    return lo, lo + q + (1 if r < extra else 0)


def array_stream(xs, ys, ws, n: int, batch_size: int, shuffle: bool, rng, prefetch: bool = False,
                 shard=None) -> BatchStream:
    """A BatchStream of slices of prepared arrays (lists per input / output; None entries stay
    None); a pass draws one permutation of the samples (when shuffling) as it starts. shard =
    (rank, size): each batch is this rank's contiguous piece of the global batch (see
    pydl.distributed)."""
    def take(arrays, sel):
        return None if arrays is None else [None if a is None else a[sel] for a in arrays]

    def open_pass():
        order = rng.permutation(n) if shuffle else None

        def gen():
            for lo in range(0, n, batch_size):
                hi = min(lo + batch_size, n)
                if shard is not None:
                    a, b = _shard_bounds(hi - lo, shard)
                    lo, hi = lo + a, lo + b
                sel = slice(lo, hi) if order is None else order[lo:hi]
                yield take(xs, sel), take(ys, sel), take(ws, sel)
        return gen()

    return BatchStream(open_pass, True, None, -(-n // batch_size), prefetch)
