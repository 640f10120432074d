"""Launchers of kernels/optim.cu: multi-tensor optimizer updates, sums of squares, L1/L2 penalties.

Arrays arrive validated by `pydl.ops.optim` (C-contiguous CuPy arrays of one float dtype per
call, slots shaped like their parameter, no overlap between in-place arrays). One update launch
covers every tensor of a list: a table of device addresses (see the header of optim.cu) is built
on the host once per list of addresses and kept in a small cache, so a step with the same arrays
uploads nothing but the kernel's scalar arguments.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import cupy_module, kernel, scalar

FAMILY = "optim"
THREADS = 256          # OPT_THREADS in optim.cu
CHUNK = 4096           # OPT_CHUNK in optim.cu
FLAG_CLIP, FLAG_L2, FLAG_DECAY, FLAG_NESTEROV = 1, 2, 4, 8
SCALE_FIXED, SCALE_PER_TENSOR, SCALE_GLOBAL = 0, 1, 2
KINDS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "nadam")

_CACHE_SIZE = 32
_tables: OrderedDict = OrderedDict()
_dummy: dict = {}


def _ptr(a) -> int:
    return 0 if a is None else int(a.data.ptr)


def table(entries):
    """(device table, total blocks) for entries [(param, grad, s0, s1, s2, n, pos)] of addresses
    (n > 0 each), cached by the addresses and the current device."""
    cp = cupy_module()
    key = (cp.cuda.Device().id, tuple(entries))
    hit = _tables.get(key)
    if hit is not None:
        _tables.move_to_end(key)
        return hit
    host = np.zeros((len(entries), 8), dtype=np.uint64)
    first = 0
    for i, (p, g, s0, s1, s2, n, pos) in enumerate(entries):
        host[i] = (p, g, s0, s1, s2, n, first, pos)
        first += -(-n // CHUNK)
    hit = (cp.asarray(host.view(np.int64)), first)
    _tables[key] = hit
    if len(_tables) > _CACHE_SIZE:
        _tables.popitem(last=False)
    return hit


def clear_cache() -> None:
    """Drop the cached address tables (they are rebuilt on the next call)."""
    _tables.clear()


def _no_ss():
    cp = cupy_module()
    dev = cp.cuda.Device().id
    a = _dummy.get(dev)
    if a is None:
        a = _dummy[dev] = cp.zeros(1, dtype=np.float64)
    return a


def _reduce(entries, dtype, out, mode: int) -> None:
    """out[pos] = sum over each entry's grad field of x^2 (mode 0) or |x| (mode 1)."""
    if not entries:
        return
    cp = cupy_module()
    tab, nblocks = table(entries)
    partial = cp.empty(nblocks, dtype=np.float64)
    kernel(FAMILY, "sumsq_partial", dtype)((nblocks,), (THREADS,), (tab, np.int32(len(entries)), np.int32(mode),
                                                                    partial))
    kernel(FAMILY, "sumsq_finish", dtype)((len(entries),), (THREADS,), (tab, partial, out))


def sums_of_squares(arrays):
    """A float64 CuPy vector: sum(a**2) of each array, in double, deterministic."""
    cp = cupy_module()
    out = cp.zeros(len(arrays), dtype=np.float64)
    groups: dict = {}
    for i, a in enumerate(arrays):
        if a.size:
            groups.setdefault(a.dtype, []).append((0, _ptr(a), 0, 0, 0, int(a.size), i))
    for dt, entries in groups.items():
        _reduce(entries, dt, out, 0)
    return out


def sum_squares(x) -> float:
    return float(sums_of_squares([x])[0].item())


def sum_abs(x) -> float:
    """sum(|x|) in double."""
    cp = cupy_module()
    out = cp.zeros(1, dtype=np.float64)
    if x.size:
        _reduce([(0, _ptr(x), 0, 0, 0, int(x.size), 0)], x.dtype, out, 1)
    return float(out[0].item())


def group(params, grads, slots) -> dict:
    """{dtype: table entries} of the non-empty params: (param, grad, slot0, slot1, slot2, n, pos)."""
    groups: dict = {}
    for i, (p, g, s) in enumerate(zip(params, grads, slots)):
        if p.size:
            groups.setdefault(p.dtype, []).append((_ptr(p), _ptr(g), _ptr(s[0]), _ptr(s[1]), _ptr(s[2]),
                                                   int(p.size), i))
    return groups


def update(kind: str, params, grads, slots, args, *, grad_scale=1.0, clip_value=None, l2=0.0, decay=0.0,
           nesterov: bool = False, clipnorm=None, global_clipnorm=None) -> None:
    """One launch per dtype: params[i] and slots[i] (a 3-tuple, None where absent) updated in place
    from grads[i]. `args` are the rule's scalars in kernel order (doubles; cast to the dtype here).
    Gradient scale: `grad_scale`, or computed on the device from the gradients' norms with
    `clipnorm` (each gradient by its own norm) or `global_clipnorm` (all together)."""
    update_groups(kind, group(params, grads, slots), len(params), args, grad_scale=grad_scale,
                  clip_value=clip_value, l2=l2, decay=decay, nesterov=nesterov, clipnorm=clipnorm,
                  global_clipnorm=global_clipnorm)


def update_groups(kind: str, groups: dict, nparams: int, args, *, grad_scale=1.0, clip_value=None, l2=0.0,
                  decay=0.0, nesterov: bool = False, clipnorm=None, global_clipnorm=None) -> None:
    """`update` on entries already grouped by `group` (`nparams`: the length of the caller's list).
    Nothing is copied between host and device once the groups' tables are cached (and no norm is
    asked for): one kernel launch per dtype."""
    if kind not in KINDS:
        raise ValueError(f"[cuda.optim.update] unknown kind {kind!r}")
    if not groups:
        return
    mode, ss, nss, clip_norm = SCALE_FIXED, None, 0, 0.0
    if clipnorm is not None or global_clipnorm is not None:
        cp = cupy_module()
        ss = cp.zeros(nparams, dtype=np.float64)
        for dt, entries in groups.items():
            _reduce(entries, dt, ss, 0)
        nss = nparams
        mode = SCALE_PER_TENSOR if clipnorm is not None else SCALE_GLOBAL
        clip_norm = float(clipnorm if clipnorm is not None else global_clipnorm)
    if ss is None:
        ss = _no_ss()
    flags = (FLAG_CLIP if clip_value is not None else 0) | (FLAG_L2 if l2 != 0.0 else 0) | \
        (FLAG_DECAY if decay != 0.0 else 0) | (FLAG_NESTEROV if nesterov else 0)
    cv = 0.0 if clip_value is None else float(clip_value)
    for dt, entries in groups.items():
        tab, nblocks = table(entries)
        t = np.dtype(dt).type
        kargs = (tab, np.int32(len(entries)), ss, np.int32(nss), np.int32(mode), np.float64(grad_scale),
                 np.float64(clip_norm), np.int32(flags), t(-cv), t(cv), t(l2), t(decay)) + \
            tuple(t(a) for a in args)
        kernel(FAMILY, f"{kind}_update", dt)((nblocks,), (THREADS,), kargs)


def l1l2_gradient(w, l1: float, l2: float):
    """l1 * sign(w) + 2 * l2 * w as a new array (the CPU's operation order)."""
    from . import blocks
    cp = cupy_module()
    g = cp.empty(w.shape, dtype=w.dtype)
    n = int(w.size)
    if n == 0:
        return g
    threads = 256
    kernel(FAMILY, "l1l2_grad", w.dtype)((blocks(n, threads),), (threads,),
                                          (w, g, np.int64(n), np.int32(bool(l1)), np.int32(bool(l2)),
                                           scalar(l1, w.dtype), scalar(2.0 * l2, w.dtype)))
    return g


__all__ = ["update", "update_groups", "group", "sums_of_squares", "sum_squares", "sum_abs", "l1l2_gradient", "table", "clear_cache", "KINDS"]
