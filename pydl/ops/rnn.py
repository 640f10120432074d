"""Recurrent layers over whole sequences: SimpleRNN, LSTM and GRU (fused C++ kernels).

Shapes: x (N, T, C) batch-major, N batch, T time steps, C features; H units; G gates per cell
(SimpleRNN 1, LSTM 4 in the order i f g o, GRU 3 in the order r z n).
Weights: W (C, G*H) input kernel, U (H, G*H) recurrent kernel, b (G*H,) bias, and for the GRU
b_h (G*H,), the recurrent bias (PyTorch's bias_hh), kept apart because its n block is gated by r.

    SimpleRNN  h' = act(x W + h U + b)                    act = tanh or relu
    LSTM       i, f, g, o = s, s, tanh, s of (x W + h U + b);  c' = f c + i g;  h' = o tanh(c')
    GRU        r, z = s(x W + b + h U + b_h)[r, z];  n = tanh((x W + b)[n] + r (h U + b_h)[n])
               h' = (1 - z) n + z h                   (PyTorch's form; Keras' reset_after=True)

`rnn_forward` returns (outputs (N, T, H), h_T, c_T or None, cache); `rnn_backward` takes the
gradients of those outputs and the cache and returns the gradients of every input. float32
runs the fast kernels; float64 runs the same algorithm in double (for gradient checks); any
float64 argument makes the computation float64, other dtypes are cast to float32.
A sequence of length T = 0 is allowed: the outputs are (N, 0, H) and the final states equal
the initial ones.

Masks: `mask` (N, T) (bool, integer or float; nonzero = the step runs, passed to the kernels as
uint8). At a masked step the state is kept: h_t = h_{t-1}, c_t = c_{t-1}, outputs[:, t] =
h_{t-1}; in backward the step adds nothing to the weight gradients, dx there is 0, and the
state gradients pass straight to step t-1. A row with every step masked returns h_T = h0.
Recurrent dropout: `recurrent_scale` (N, H) multiplies h_{t-1} where it enters the product
h_{t-1} U (Keras' `h_tm1 * rec_dp_mask`; the same scale at every step); the GRU's z h_{t-1}
term and the kept state use the unscaled h_{t-1}. Both default to None: the unmasked kernels.

CuPy arguments (all of them: mixing NumPy and CuPy is a ValueError naming each argument's
device) run the CUDA kernels of pydl.cuda.rnn with the same checks and messages; the outputs,
the gradients and the arrays the cache holds are then CuPy arrays.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_float_array, check_ndim
from . import device

__all__ = ["rnn_forward", "rnn_backward", "RNNCache", "rnn_gates"]

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rnn_gates(cell: str) -> int:
    """Gates per unit: 1 for "rnn", 4 for "lstm", 3 for "gru"."""
    _check_cell(cell, "rnn_gates")
    return _GATES[cell]


def _check_cell(cell, op):
    if not isinstance(cell, str) or cell not in _GATES:
        raise ValueError(f"[{op}] cell must be one of 'rnn', 'lstm', 'gru', got {cell!r}")


def _cell_id(cell: str, activation: str, op: str) -> int:
    _check_cell(cell, op)
    if cell == "rnn":
        if activation not in ("tanh", "relu"):
            raise ValueError(f"[{op}] SimpleRNN activation must be 'tanh' or 'relu', got {activation!r}")
        return 0 if activation == "tanh" else 1
    if activation != "tanh":
        raise ValueError(f"[{op}] the {cell.upper()} cell has fixed activations; activation must be 'tanh', "
                         f"got {activation!r}")
    return 2 if cell == "lstm" else 3


def _empty(shape, dtype) -> np.ndarray:
    """np.empty, but starting on a 64-byte boundary (NumPy only guarantees 16): threads that
    write neighbouring blocks of units then never share a cache line."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.empty(n * dtype.itemsize + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n * dtype.itemsize].view(dtype).reshape(shape)


def _own(a, original):
    """`a` (the validated form of `original`) as an array no caller holds: copied unless the
    validation already made a new one."""
    if a is None or (a is not original and not np.may_share_memory(a, original)):
        return a
    return a.copy()


def _dtype_of(*arrays):
    for a in arrays:
        if a is not None and np.asarray(a).dtype == np.float64:
            return np.float64
    return np.float32


def _dtype_of_cuda(*arrays):
    for a in arrays:
        if a is not None and a.dtype == np.float64:
            return np.float64
    return np.float32


def _as_float_cuda(a, name, op, dtype):
    """as_float_array's checks and result for a CuPy array: C-contiguous of `dtype`."""
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"[{op}] {name} must be a numeric array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"[{op}] {name} must be real, got dtype {a.dtype}")
    return device.as_float_cuda(a, name, op, dtype)


def _own_cuda(a, original):
    """_own for CuPy arrays: validation returns the argument itself or a fresh copy."""
    return a.copy() if a is not None and a is original else a


class RNNCache:
    """What `rnn_backward` needs from a forward pass (arrays are owned by the cache).

    gates (N, T, G*H) gate activations (SimpleRNN: h_t); hprev (N, T, H) the state entering
    each step; cs (N, T, H) the LSTM cell states; q (N, T, H) the GRU's (h U + b_h)[n]; and the
    inputs x, W, U, c0 the forward used.
    """

    __slots__ = ("cell", "activation", "cell_id", "x", "W", "U", "c0", "gates", "hprev", "cs", "q", "dtype",
                 "N", "T", "C", "H", "has_b_h", "mask", "rscale")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


def _mask_arg(mask, N, T, op):
    """`mask` (N, T) as a C-contiguous uint8 array (1 = the step runs) on its own device, or None."""
    if mask is None:
        return None
    xp = device.namespace(mask)
    m = mask if xp is not np else np.asarray(mask)
    if m.dtype == object or not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.integer)
                                 or np.issubdtype(m.dtype, np.floating)):
        raise TypeError(f"[{op}] mask must be a bool, integer or float array (N, T), got dtype {m.dtype}")
    if m.shape != (N, T):
        raise ValueError(f"[{op}] mask has shape {m.shape}, expected (N, T) = ({N}, {T}) from x")
    if np.issubdtype(m.dtype, np.floating) and not bool(xp.all(xp.isfinite(m))):
        raise ValueError(f"[{op}] mask contains NaN or Inf")
    return xp.ascontiguousarray(m != 0, dtype=np.uint8)


def _scale_arg(rscale, N, H, dtype, op, conv=as_float_array):
    if rscale is None:
        return None
    r = conv(rscale, "recurrent_scale", op, dtype)
    if r.shape != (N, H):
        raise ValueError(f"[{op}] recurrent_scale has shape {r.shape}, expected (N, H) = ({N}, {H})")
    xp = device.namespace(r)
    if not bool(xp.all(xp.isfinite(r))):
        raise ValueError(f"[{op}] recurrent_scale contains NaN or Inf")
    return r


def rnn_forward(cell: str, x, W, U, b, h0=None, c0=None, b_h=None, activation: str = "tanh", mask=None,
                recurrent_scale=None, keep_cache: bool = True):
    """Run a recurrent cell over a whole sequence.

    cell: "rnn" (SimpleRNN, `activation` "tanh" or "relu"), "lstm" or "gru".
    x (N, T, C); W (C, G*H); U (H, G*H); b (G*H,); h0, c0 (N, H) initial states (None = zeros;
    c0 only for the LSTM); b_h (G*H,) the GRU's recurrent bias (None = zeros; GRU only).
    mask (N, T): nonzero where a step runs (None = every step); recurrent_scale (N, H): the
    recurrent-dropout multiplier of h_{t-1} in h_{t-1} U (None = 1). See the module docstring.
    keep_cache: False for inference: nothing is stored for rnn_backward (no gate, h_{t-1} or c_t
    arrays of (N, T, ...) are allocated or written) and the returned cache is None.
    Returns (outputs (N, T, H), h_T (N, H), c_T (N, H) for the LSTM else None, cache).
    """
    op = f"rnn_forward[{cell}]" if isinstance(cell, str) else "rnn_forward"
    cid = _cell_id(cell, activation, op)
    G = _GATES[cell]
    cuda = device.dispatch(op, x=x, W=W, U=U, b=b, h0=h0, c0=c0, b_h=b_h, mask=mask,
                           recurrent_scale=recurrent_scale) == "cuda"
    conv = _as_float_cuda if cuda else as_float_array
    dtype = (_dtype_of_cuda if cuda else _dtype_of)(x, W, U, b, h0, c0, b_h)
    x_in, W_in, U_in, c0_in = x, W, U, c0
    x = conv(x, "x", op, dtype)
    W = conv(W, "W", op, dtype)
    U = conv(U, "U", op, dtype)
    b = conv(b, "b", op, dtype)
    check_ndim(x, 3, "x", op, "(N, T, C): batch, time steps, features")
    check_ndim(W, 2, "W", op, "(C, G*H)")
    check_ndim(U, 2, "U", op, "(H, G*H)")
    check_ndim(b, 1, "b", op, "(G*H,)")
    N, T, C = x.shape
    H = U.shape[0]
    if C == 0:
        raise ValueError(f"[{op}] x {x.shape} has no features (C = 0)")
    if H == 0:
        raise ValueError(f"[{op}] U {U.shape} has no units (H = 0)")
    if U.shape != (H, G * H):
        raise ValueError(f"[{op}] U has shape {U.shape}, expected (H, {G}*H) = ({H}, {G * H}) for {cell}")
    if W.shape != (C, G * H):
        raise ValueError(f"[{op}] W has shape {W.shape}, expected (C, {G}*H) = ({C}, {G * H}): x {x.shape} has "
                         f"C={C} features and U {U.shape} has H={H} units")
    if b.shape != (G * H,):
        raise ValueError(f"[{op}] b has shape {b.shape}, expected ({G * H},)")
    if b_h is not None:
        if cell != "gru":
            raise ValueError(f"[{op}] b_h is the GRU's recurrent bias; the {cell} cell takes none")
        b_h = conv(b_h, "b_h", op, dtype)
        if b_h.shape != (G * H,):
            raise ValueError(f"[{op}] b_h has shape {b_h.shape}, expected ({G * H},)")
    if c0 is not None and cell != "lstm":
        raise ValueError(f"[{op}] c0 is the LSTM's cell state; the {cell} cell takes none")
    if h0 is not None:
        h0 = conv(h0, "h0", op, dtype)
        if h0.shape != (N, H):
            raise ValueError(f"[{op}] initial state h0 has shape {h0.shape}, expected (N, H) = ({N}, {H})")
    if c0 is not None:
        c0 = conv(c0, "c0", op, dtype)
        if c0.shape != (N, H):
            raise ValueError(f"[{op}] initial state c0 has shape {c0.shape}, expected (N, H) = ({N}, {H})")
    mask_in, rscale_in = mask, recurrent_scale
    mask = _mask_arg(mask, N, T, op)
    rscale = _scale_arg(recurrent_scale, N, H, dtype, op, conv)
    lstm, gru = cell == "lstm", cell == "gru"
    if cuda:
        from ..cuda import rnn as cuda_rnn
        out, hT, cT, gates, hprev, cs, q = cuda_rnn.forward(cid, x, W, U, b, b_h, h0, c0, mask, rscale)
        x, W, U, c0, rscale = (_own_cuda(a, orig) for a, orig in ((x, x_in), (W, W_in), (U, U_in), (c0, c0_in),
                                                                   (rscale, rscale_in)))
        cache = RNNCache(cell=cell, activation=activation, cell_id=cid, x=x, W=W, U=U, c0=c0, gates=gates,
                         hprev=hprev, cs=cs, q=q, dtype=np.dtype(dtype), N=N, T=T, C=C, H=H, has_b_h=gru,
                         mask=mask, rscale=rscale)
        return out, hT, cT, (cache if keep_cache else None)
    out = _empty((N, T, H), dtype)
    hT = _empty((N, H), dtype)
    cT = _empty((N, H), dtype) if lstm else None
    if not keep_cache:
        _core.rnn_forward(cid, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT, None, None, None, None)
        return out, hT, cT, None
    gates = _empty((N, T, G * H), dtype)
    hprev = _empty((N, T, H), dtype)
    cs = _empty((N, T, H), dtype) if lstm else None
    q = _empty((N, T, H), dtype) if gru else None
    _core.rnn_forward(cid, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT, gates, hprev, cs, q)
    # The cache owns what backward reads: the caller may change x, W, U or c0 in place (an
    # optimizer step, a reused input buffer) before calling rnn_backward.
    x, W, U, c0, mask, rscale = (_own(a, orig) for a, orig in ((x, x_in), (W, W_in), (U, U_in), (c0, c0_in),
                                                                (mask, mask_in), (rscale, rscale_in)))
    cache = RNNCache(cell=cell, activation=activation, cell_id=cid, x=x, W=W, U=U, c0=c0, gates=gates,
                     hprev=hprev, cs=cs, q=q, dtype=np.dtype(dtype), N=N, T=T, C=C, H=H, has_b_h=gru,
                     mask=mask, rscale=rscale)
    return out, hT, cT, cache


def rnn_backward(cell: str, dout, dh_T, dc_T, cache: RNNCache, need_dx: bool = True) -> dict:
    """Backpropagation through time for the forward pass that produced `cache`.

    dout (N, T, H): gradient of every output, or None when only the final state was used;
    dh_T (N, H), dc_T (N, H) (LSTM only): gradients of the final states, or None (zero).
    Returns a dict with dx (N, T, C) (None when need_dx is False), dh0 (N, H), dc0 (N, H) or
    None, dW, dU, db, and db_h (GRU) or None. Every gradient is written fresh (not accumulated).
    """
    op = f"rnn_backward[{cell}]" if isinstance(cell, str) else "rnn_backward"
    _check_cell(cell, op)
    if not isinstance(cache, RNNCache):
        raise TypeError(f"[{op}] cache must be the RNNCache returned by rnn_forward, got {type(cache).__name__}")
    if cache.cell != cell:
        raise ValueError(f"[{op}] cache comes from a {cache.cell} forward pass, not {cell}")
    N, T, C, H, dtype = cache.N, cache.T, cache.C, cache.H, cache.dtype
    G = _GATES[cell]
    cuda = device.dispatch(op, dout=dout, dh_T=dh_T, dc_T=dc_T, cache=cache.x) == "cuda"
    conv = _as_float_cuda if cuda else as_float_array

    def grad(a, name, shape):
        if a is None:
            return None
        a = conv(a, name, op, dtype)
        if a.shape != shape:
            raise ValueError(f"[{op}] {name} has shape {a.shape}, expected {shape}")
        return a

    dout = grad(dout, "dout", (N, T, H))
    dh_T = grad(dh_T, "dh_T", (N, H))
    if dc_T is not None and cell != "lstm":
        raise ValueError(f"[{op}] dc_T is the LSTM's cell-state gradient; the {cell} cell has none")
    dc_T = grad(dc_T, "dc_T", (N, H))
    if cuda:
        from ..cuda import rnn as cuda_rnn
        return cuda_rnn.backward(cache.cell_id, cache, dout, dh_T, dc_T, bool(need_dx))
    lstm, gru = cell == "lstm", cell == "gru"
    dx = _empty((N, T, C), dtype) if need_dx else None
    dh0 = _empty((N, H), dtype)
    dc0 = _empty((N, H), dtype) if lstm else None
    dW = _empty((C, G * H), dtype)
    dU = _empty((H, G * H), dtype)
    db = _empty((G * H,), dtype)
    db_h = _empty((G * H,), dtype) if gru else None
    _core.rnn_backward(cache.cell_id, cache.gates, cache.hprev, cache.cs, cache.q, cache.x, cache.W, cache.U,
                       cache.c0, cache.mask, cache.rscale, dout, dh_T, dc_T, dx, dh0, dc0, dW, dU, db, db_h)
    return {"dx": dx, "dh0": dh0, "dc0": dc0, "dW": dW, "dU": dU, "db": db, "db_h": db_h}
