"""2-D convolution (NCHW) on pydl's kernels: direct, im2col + SGEMM, and Winograd.

    y = conv2d(x, w, b, stride=1, padding="same")            # x (N, C, H, W), w (K, C, R, S)
    dx, dw, db = conv2d_backward(dy, x, w, stride=1, padding="same")

All algorithms compute the same function (cross-correlation, as every deep-learning library):
    y[n,k,p,q] = b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*sh + r*dh - pad_top, q*sw + s*dw - pad_left]

algo:
  "direct"       loops vectorised over the output width; best with few input channels (C <= 4)
  "im2col"       unfold + SGEMM, chunked by output rows; any shape
  "winograd_f2"  Winograd F(2x2,3x3): 3x3 filters, stride 1, dilation 1
  "winograd_f4"  Winograd F(4x4,3x3) (fewer multiplies, larger transforms, ~10x the rounding error)
  "winograd"     the Winograd variant "auto" would pick (by output size, see AUTO_RULES)
  "naive"        the seven-loop reference
  "auto"         a rule per ISA and thread count (AUTO_RULES); `conv2d_explain` says what it
                 picks for a shape and why

CuPy arrays run the CUDA kernels with the same checks and messages: the implicit GEMM
("implicit_gemm", pydl.cuda.conv; the name is accepted on CUDA arrays only) for every shape, and
Winograd F(2x2,3x3) / F(4x4,3x3) (pydl.cuda.winograd) for 3x3 / stride 1 / dilation 1.
"auto" and "winograd" on CUDA follow CUDA_AUTO_RULE; "direct", "im2col" and "naive" are CPU
algorithms and run as the implicit GEMM there, so a model built for the CPU moves to the GPU
unchanged; `conv2d_explain(..., device="cuda")` says what runs. The backward pass on CUDA is the
implicit GEMM whatever `algo` says.

float32 is the fast path; float64 runs the same algorithms in double precision.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from .._validate import as_float_array, check_out, check_same_dtype
from . import device

ALGOS = ("auto", "naive", "direct", "im2col", "winograd", "winograd_f2", "winograd_f4")
CUDA_ALGO = "implicit_gemm"  # what every algo runs as on CUDA arrays
_FUSED_ACTIVATIONS = ("linear", "relu")


# ---- argument parsing ----------------------------------------------------------------------------

# Every size that reaches a kernel (strides, paddings, dilations, pool and filter sizes) is at
# most this, so the kernels' int64 geometry (products of a few such sizes) can never overflow.
MAX_GEOMETRY = 2**31 - 1


def _int_pair(v, name: str, op: str, minimum: int) -> tuple[int, int]:
    if isinstance(v, (numbers.Integral,)) and not isinstance(v, bool):
        pair = (int(v), int(v))
    else:
        try:
            items = tuple(v)
        except TypeError:
            raise ValueError(f"[{op}] {name} must be an int or a pair of ints, got {v!r}") from None
        if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in items):
            raise ValueError(f"[{op}] {name} must be an int or a pair of ints, got {v!r}")
        pair = (int(items[0]), int(items[1]))
    if min(pair) < minimum:
        raise ValueError(f"[{op}] {name} must be >= {minimum}, got {v!r}")
    if max(pair) > MAX_GEOMETRY:
        raise ValueError(f"[{op}] {name} must be <= {MAX_GEOMETRY}, got {v!r}")
    return pair


def _same_padding(size: int, k_eff: int, stride: int) -> tuple[int, int]:
    """TF/Keras "same": output ceil(size / stride), the odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, in_hw, k_eff_hw, stride_hw, op: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from "valid", "same", an int, (ph, pw), ((t, b), (l, r)) or (t, b, l, r)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            return _same_padding(in_hw[0], k_eff_hw[0], stride_hw[0]) + _same_padding(in_hw[1], k_eff_hw[1],
                                                                                       stride_hw[1])
        raise ValueError(f"[{op}] padding must be 'valid', 'same', an int or a tuple, got {padding!r}")
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = int(padding)
        pads = (p, p, p, p)
    else:
        try:
            items = tuple(padding)
        except TypeError:
            raise ValueError(f"[{op}] padding must be 'valid', 'same', an int or a tuple, got {padding!r}") from None
        if len(items) == 2 and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
            pads = (int(items[0]), int(items[0]), int(items[1]), int(items[1]))
        elif len(items) == 2 and all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
            flat = (*items[0], *items[1])
            if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in flat):
                raise ValueError(f"[{op}] padding entries must be ints, got {padding!r}")
            pads = tuple(int(i) for i in flat)
        elif len(items) == 4 and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
            pads = tuple(int(i) for i in items)
        else:
            raise ValueError(f"[{op}] padding must be an int, (pad_h, pad_w), ((top, bottom), (left, right)) or "
                             f"(top, bottom, left, right), got {padding!r}")
    if min(pads) < 0:
        raise ValueError(f"[{op}] padding must be >= 0, got {padding!r}")
    if max(pads) > MAX_GEOMETRY:
        raise ValueError(f"[{op}] padding must be <= {MAX_GEOMETRY}, got {padding!r}")
    return pads


def _geometry(x_shape, w_shape, stride, padding, dilation, op: str):
    """Validated (stride, pads, dilation, output shape) for NCHW x and (K, C, R, S) w."""
    x_shape, w_shape = tuple(int(d) for d in x_shape), tuple(int(d) for d in w_shape)
    if any(not 0 <= d < 2**62 for d in x_shape + w_shape):  # beyond int64 the binding rejects the list unnamed
        raise ValueError(f"[{op}] sizes must be in [0, 2^62), got x {x_shape} and w {w_shape}")
    if len(x_shape) != 4:
        raise ValueError(f"[{op}] x has {len(x_shape)} dims {x_shape}, expected 4 (N, C, H, W) in NCHW layout")
    if len(w_shape) != 4:
        raise ValueError(f"[{op}] w has {len(w_shape)} dims {w_shape}, expected 4 (K, C, R, S)")
    if x_shape[1] != w_shape[1]:
        if x_shape[3] == w_shape[1]:
            raise ValueError(f"[{op}] x {x_shape} looks channels-last (NHWC): its last dim matches w's C = "
                             f"{w_shape[1]}; pydl expects NCHW, e.g. x.transpose(0, 3, 1, 2)")
        raise ValueError(f"[{op}] channel mismatch: x {x_shape} has C = {x_shape[1]} but w {w_shape} expects "
                         f"C = {w_shape[1]} (NCHW layout)")
    st = _int_pair(stride, "stride", op, 1)
    dl = _int_pair(dilation, "dilation", op, 1)
    k_eff = ((w_shape[2] - 1) * dl[0] + 1, (w_shape[3] - 1) * dl[1] + 1)
    pads = resolve_padding(padding, x_shape[2:], k_eff, st, op)
    try:
        out = _core.conv2d_output_shape(list(x_shape), list(w_shape), st, pads, dl)
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith("[conv2d]") and op != "conv2d":  # the kernel's check names the forward op
            msg = f"[{op}]" + msg[len("[conv2d]"):]
        raise ValueError(f"{msg} (x {x_shape}, w {w_shape}, stride {st}, padding {pads}, dilation {dl})") from None
    n_out = 1
    for d in out:
        n_out *= int(d)
    if n_out >= 2**60:  # its bytes would not fit an int64: NumPy's unnamed "array is too big" otherwise
        raise ValueError(f"[{op}] output shape {tuple(out)} is too large to allocate (x {x_shape}, w {w_shape}, "
                         f"stride {st}, padding {pads}, dilation {dl})")
    return st, pads, dl, tuple(out)


def conv2d_output_shape(x_shape, w_shape, stride=1, padding=0, dilation=1) -> tuple:
    """(N, K, P, Q) of conv2d for these shapes and settings."""
    return _geometry(x_shape, w_shape, stride, padding, dilation, "conv2d")[3]


def _winograd_ok(w_shape, st, dl) -> bool:
    return tuple(w_shape[2:]) == (3, 3) and st == (1, 1) and dl == (1, 1)


# The rule behind algo="auto", one row per ISA the kernels were built for (the ISA selected at
# import, `pydl.config()["isa"]`), and per thread count (1, or 2 and more):
#   direct_max_c   input channels up to which the direct loops are used
#   winograd       whether Winograd is used at all for 3x3 / stride 1 / dilation 1
#   wino_min_ck    Winograd only with at least this many input and output channels
#   f4_min_out     F(4x4,3x3) instead of F(2x2,3x3) from this output size (min(P, Q)) on
# The rule never depends on the batch size, so a layer can fix its algorithm at build time.
# Timed with each algorithm forced (best of 7) on the project's 2-core machines; the figures
# behind each row are in docs/architecture.md ("Convolution: algorithm choice"):
#   avx512: direct for C <= 4 (Zen 4). F(4x4) from 20x20 outputs (Intel Xeon, N64 / N32 C32 K64,
#     with V and M holding only real tiles: 2 threads F(4x4) vs F(2x2) GFLOP/s 14x14 258 vs 321,
#     16x16 340 vs 329, 20x20 424 vs 352, 28x28 502 vs 386; 1 thread 20x20 297 vs 335, 24x24 395
#     vs 364, 28x28 465 vs 368). One threshold for both thread counts, so a result does not
#     depend on the thread count (1 thread loses ~10% at 20..23). Before that layout (phantom
#     tiles multiplied too) F(2x2) was faster up to 48x48 on Zen 4; with it Zen 4 agrees (20x20:
#     2 threads 323 vs 267, 1 thread 130 vs 111).
#   avx2 (Zen 3): direct for C <= 4 (N32 C1..4 28x28 K32, 2 threads: 0.43-0.80 ms vs >= 0.61 for
#     the others); Winograd from C, K >= 8; F(4x4) from 20x20 (N32 C32 20x20 K32: 2.25 vs 2.62 ms,
#     N64 C32 14x14 K64: 5.33 vs 4.59 ms for F(2x2)).
#   generic (SSE2): Winograd wins from C = 2 (N32 C2 28x28 K32, 2 threads: F(4x4) 1.22 ms =
#     direct 1.22, C4 1.49 vs 2.19), and F(4x4) from 14x14 (N64 C32 14x14 K64: 8.40 vs 9.66 ms).
AUTO_RULES = {
    ("avx512", 1): dict(direct_max_c=4, winograd=True, wino_min_ck=8, f4_min_out=20),
    ("avx512", 2): dict(direct_max_c=4, winograd=True, wino_min_ck=8, f4_min_out=20),
    ("avx2", 1): dict(direct_max_c=4, winograd=True, wino_min_ck=8, f4_min_out=20),
    ("avx2", 2): dict(direct_max_c=4, winograd=True, wino_min_ck=8, f4_min_out=20),
    ("generic", 1): dict(direct_max_c=1, winograd=True, wino_min_ck=2, f4_min_out=14),
    ("generic", 2): dict(direct_max_c=1, winograd=True, wino_min_ck=2, f4_min_out=14),
}


def auto_rule(isa: str | None = None, threads: int | None = None) -> dict:
    """The thresholds algo="auto" uses for `isa` and `threads` (default: the running ones)."""
    isa = _core.selected_isa() if isa is None else isa
    threads = _core.get_num_threads() if threads is None else threads
    key = (isa, 1 if threads <= 1 else 2)
    if key not in AUTO_RULES:
        raise ValueError(f"[conv2d] no algo='auto' rule for ISA {isa!r}; have {sorted({k[0] for k in AUTO_RULES})}")
    return AUTO_RULES[key]


def auto_context() -> tuple[str, int]:
    """(ISA, thread count): what algo="auto" depends on besides the shapes."""
    return _core.selected_isa(), _core.get_num_threads()


def _winograd_variant(out_shape, rule) -> tuple[str, str]:
    side = min(out_shape[2], out_shape[3])
    if side >= rule["f4_min_out"]:
        return "winograd_f4", f"output {out_shape[2]}x{out_shape[3]} >= {rule['f4_min_out']}: F(4x4,3x3)"
    return "winograd_f2", f"output {out_shape[2]}x{out_shape[3]} < {rule['f4_min_out']}: F(2x2,3x3)"


def _direct_padded_width(w_shape, st, dl, out_shape) -> tuple[int, int]:
    """(columns the direct loops' padded rows need, columns the outputs read): the loops read
    whole vectors of up to 32 outputs per row, so the row is rounded up to 32 strided outputs."""
    Q, S = out_shape[3], w_shape[3]
    need = (Q - 1) * st[1] + (S - 1) * dl[1] + 1
    return (-(-Q // 32) * 32 - 1) * st[1] + (S - 1) * dl[1] + 1, need


# The direct loops' zero-padded image copy may not exceed this (bytes, float64): only huge
# strides make it larger than the input.
_DIRECT_MAX_SCRATCH = 1 << 31


def _direct_scratch_bytes(x_shape, w_shape, st, dl, out_shape) -> int:
    P, R = out_shape[2], w_shape[2]
    rows = (P - 1) * st[0] + (R - 1) * dl[0] + 1
    return 8 * x_shape[1] * rows * _direct_padded_width(w_shape, st, dl, out_shape)[0]


def _auto(x_shape, w_shape, st, dl, out_shape) -> tuple[str, str]:
    """(algorithm, reason) of algo="auto" for the running ISA and thread count (see AUTO_RULES)."""
    isa, threads = _core.selected_isa(), _core.get_num_threads()
    rule = auto_rule(isa, threads)
    where = f"auto on {isa}, {threads} thread{'s' if threads != 1 else ''}: "
    C, K = x_shape[1], w_shape[0]
    if C <= rule["direct_max_c"]:
        padded, need = _direct_padded_width(w_shape, st, dl, out_shape)
        if padded > 2 * need + 64:
            return "im2col", where + (f"C = {C} <= {rule['direct_max_c']} but stride {st[1]} would make the direct "
                                      f"loops read {padded} columns for {need} -> im2col")
        # The direct loops first copy the input into a zero-padded image; padding much larger than
        # the image (huge dilation with padding="same") would make that copy the whole cost.
        scratch = _direct_scratch_bytes(x_shape, w_shape, st, dl, out_shape)
        image = 8 * C * x_shape[2] * x_shape[3]
        if scratch > 4 * image + (64 << 10):
            return "im2col", where + (f"C = {C} <= {rule['direct_max_c']} but the direct loops' padded copy of "
                                      f"the input would take {scratch} bytes for a {image}-byte image -> im2col")
        return "direct", where + f"C = {C} <= {rule['direct_max_c']} input channels -> direct"
    if _winograd_ok(w_shape, st, dl) and rule["winograd"]:
        m = rule["wino_min_ck"]
        if C >= m and K >= m:
            name, why = _winograd_variant(out_shape, rule)
            return name, where + f"3x3, stride 1, C = {C} and K = {K} >= {m} -> Winograd, {why}"
        return "im2col", where + f"3x3 but C = {C} or K = {K} < {m} -> im2col"
    return "im2col", where + "no faster special case for this shape -> im2col (unfold + SGEMM)"


def _resolve(algo, x_shape, w_shape, st, dl, out_shape, op: str) -> tuple[str, str]:
    if algo == CUDA_ALGO:
        raise ValueError(f"[{op}] algo {CUDA_ALGO!r} runs on CUDA (CuPy) arrays only; on the CPU use one of "
                         f"{', '.join(ALGOS)}")
    if not isinstance(algo, str) or algo not in ALGOS:
        raise ValueError(f"[{op}] unknown algo {algo!r}; expected one of {', '.join(ALGOS)}")
    if algo == "auto":
        return _auto(x_shape, w_shape, st, dl, out_shape)
    if algo.startswith("winograd"):
        if not _winograd_ok(w_shape, st, dl):
            raise ValueError(f"[{op}] algo {algo!r} needs a 3x3 filter with stride 1 and dilation 1, got filter "
                             f"{tuple(w_shape[2:])}, stride {st}, dilation {dl}")
        if algo == "winograd":
            name, why = _winograd_variant(out_shape, auto_rule())
            return name, f"winograd requested: {why}"
    if algo == "direct" and _direct_scratch_bytes(x_shape, w_shape, st, dl, out_shape) > _DIRECT_MAX_SCRATCH:
        raise ValueError(f"[{op}] algo 'direct' would copy the input into a padded buffer of more than 2 GiB for "
                         f"stride {st} (its loops read whole vectors of strided outputs); use 'im2col' or 'auto'")
    return algo, f"{algo} requested"


def _resolve_algo(algo, x_shape, w_shape, st, dl, out_shape, op: str) -> str:
    return _resolve(algo, x_shape, w_shape, st, dl, out_shape, op)[0]


# algo="auto" (and "winograd") on CUDA arrays:
#   wino_min_ck   Winograd only with at least this many input and output channels (below, the
#                 batched GEMM's reduction over C is too short to pay for the transforms)
#   f4_min_out    F(4x4,3x3) instead of F(2x2,3x3) from this output size (min(P, Q)) on
# Timed on an H200 (`python -m pydl.bench --device cuda`, each algorithm forced; the figures are in
# docs/architecture.md, "CUDA convolution"): F(4x4) 0.267 ms against the implicit GEMM's 0.822 on
# N64 C64 56x56 K64 and 0.353 against 1.192 on N128 C128 28x28 K128 (F(2x2) 0.41 and 0.56), but
# 0.124 against 0.091 on N128 C32 14x14 K64, where four launches and short reductions cost more
# than the multiplies they save.
CUDA_AUTO_RULE = dict(wino_min_ck=64, f4_min_out=8)


def _cuda_winograd_variant(out_shape) -> tuple[str, str]:
    m = CUDA_AUTO_RULE["f4_min_out"]
    if min(out_shape[2], out_shape[3]) >= m:
        return "winograd_f4", f"output {out_shape[2]}x{out_shape[3]} >= {m}: F(4x4,3x3)"
    return "winograd_f2", f"output {out_shape[2]}x{out_shape[3]} < {m}: F(2x2,3x3)"


def _resolve_cuda(algo, x_shape, w_shape, st, dl, out_shape, op: str) -> tuple[str, str]:
    """(algorithm, reason) for CuPy arrays: "implicit_gemm", "winograd_f2" or "winograd_f4"."""
    if algo == CUDA_ALGO:
        return CUDA_ALGO, "cuda: implicit_gemm requested"
    if not isinstance(algo, str) or algo not in ALGOS:
        raise ValueError(f"[{op}] unknown algo {algo!r}; expected one of {', '.join(ALGOS)} (or {CUDA_ALGO!r} "
                         f"on CUDA arrays)")
    wino = _winograd_ok(w_shape, st, dl)
    if algo.startswith("winograd") and not wino:
        raise ValueError(f"[{op}] algo {algo!r} needs a 3x3 filter with stride 1 and dilation 1, got filter "
                         f"{tuple(w_shape[2:])}, stride {st}, dilation {dl}")
    if algo in ("winograd_f2", "winograd_f4"):
        return algo, f"cuda: {algo} requested"
    if algo == "winograd":
        name, why = _cuda_winograd_variant(out_shape)
        return name, f"cuda: winograd requested: {why}"
    if algo == "auto":
        C, K, m = x_shape[1], w_shape[0], CUDA_AUTO_RULE["wino_min_ck"]
        if wino and C >= m and K >= m:
            name, why = _cuda_winograd_variant(out_shape)
            return name, f"cuda auto: 3x3, stride 1, C = {C} and K = {K} >= {m} -> Winograd, {why}"
        if wino:
            return CUDA_ALGO, (f"cuda auto: 3x3 but C = {C} or K = {K} < {m} -> implicit GEMM (input patches "
                               f"gathered on the fly)")
        return CUDA_ALGO, "cuda auto: implicit GEMM (input patches gathered on the fly) for this shape"
    return CUDA_ALGO, f"cuda: {algo!r} is a CPU algorithm; the GPU runs the implicit GEMM"


def _check_device_name(device_name, op: str) -> str:
    if device_name not in device.DEVICES:
        raise ValueError(f"[{op}] device must be 'cpu' or 'cuda', got {device_name!r}")
    return device_name


def conv2d_algo(x_shape, w_shape, stride=1, padding=0, dilation=1, algo: str = "auto", device: str = "cpu") -> str:
    """The algorithm conv2d runs for these shapes ('direct', 'im2col', 'winograd_f2', 'winograd_f4', 'naive';
    on device="cuda" 'implicit_gemm', 'winograd_f2' or 'winograd_f4').

    Raises ValueError for bad shapes or for a forced algorithm that does not apply.
    """
    return conv2d_explain(x_shape, w_shape, stride, padding, dilation, algo, device)[0]


def conv2d_explain(x_shape, w_shape, stride=1, padding=0, dilation=1, algo: str = "auto",
                   device: str = "cpu") -> tuple[str, str]:
    """(algorithm, reason): what conv2d runs for these shapes on this ISA and thread count, and why.
    device="cuda": what it runs on CuPy arrays (the implicit GEMM or Winograd, CUDA_AUTO_RULE).

    >>> conv2d_explain((32, 64, 56, 56), (64, 64, 3, 3), padding=1)   # doctest: +SKIP
    ('winograd_f4', 'auto on avx2, 2 threads: 3x3, stride 1, C = 64 and K = 64 >= 8 -> Winograd, ...')
    """
    dev = _check_device_name(device, "conv2d")
    st, _, dl, out = _geometry(x_shape, w_shape, stride, padding, dilation, "conv2d")
    if dev == "cuda":
        return _resolve_cuda(algo, x_shape, w_shape, st, dl, out, "conv2d")
    return _resolve(algo, x_shape, w_shape, st, dl, out, "conv2d")


def _as_input(x, name: str, op: str, dtype=None) -> np.ndarray:
    arr = as_float_array(x, name, op, dtype=dtype)
    return arr


def _as_cuda_input(x, name: str, op: str):
    return device.as_float_cuda(x, name, op)


def _check_4d(x: np.ndarray, name: str, op: str, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"[{op}] {name} has {x.ndim} dims {tuple(x.shape)}, expected 4 {what}")


# ---- public ops -----------------------------------------------------------------------------------

def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, algo: str = "auto", activation=None,
           out=None) -> np.ndarray:
    """y = activation(conv(x, w) + b) for NCHW x (N, C, H, W) and w (K, C, R, S); y is (N, K, P, Q).

    padding: "valid", "same" (stride 1 keeps H x W; stride > 1 gives ceil(H / stride) with the
    extra pixel after, as TF/Keras), an int, (pad_h, pad_w), ((top, bottom), (left, right)) or
    (top, bottom, left, right). stride and dilation: int or (h, w). activation: None/"linear"
    or "relu" (fused into the kernel's epilogue). `out`, if given, must be a C-contiguous array
    of the exact shape and dtype.
    """
    op = "conv2d"
    dev = device.dispatch(op, x=x, w=w, b=b, out=out)
    as_input = _as_input if dev == "cpu" else _as_cuda_input
    x = as_input(x, "x", op)
    w = as_input(w, "w", op)
    _check_4d(x, "x", op, "(N, C, H, W) in NCHW layout")
    _check_4d(w, "w", op, "(K, C, R, S)")
    if b is not None:
        b = as_input(b, "b", op)
        if b.shape != (w.shape[0],):
            raise ValueError(f"[{op}] b has shape {tuple(b.shape)}, expected ({w.shape[0]},) for w {tuple(w.shape)}")
    check_same_dtype(op, x=x, w=w, b=b)
    act = "linear" if activation is None else activation
    if act not in _FUSED_ACTIVATIONS:
        raise ValueError(f"[{op}] activation must be None, 'linear' or 'relu', got {activation!r}")
    st, pads, dl, yshape = _geometry(x.shape, w.shape, stride, padding, dilation, op)
    if dev == "cuda":
        name, _ = _resolve_cuda(algo, x.shape, w.shape, st, dl, yshape, op)
        from ..cuda import conv as cuda_conv
        cuda_conv.check_limits(op, x.shape, w.shape, yshape[2:], st, pads, dl)
        if out is not None:
            device.check_out_cuda(out, yshape, x.dtype, op, inputs={"x": x, "w": w, "b": b})
        return cuda_conv.forward(x, w, b, out, yshape, st, pads, dl, act, name)
    name = _resolve_algo(algo, x.shape, w.shape, st, dl, yshape, op)
    if out is not None:
        check_out(out, yshape, x.dtype, op, inputs={"x": x, "w": w, "b": b})
    return _core.conv2d_forward(x, w, b, out, st, pads, dl, name, "relu" if act == "relu" else "none")


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, need_dx: bool = True, has_bias: bool = True,
                    algo: str = "auto"):
    """Gradients of conv2d: (dx or None, dw, db or None), each written (not accumulated).

    dy is dL/dy of shape (N, K, P, Q) for the forward call with the same x, w and settings.
    algo selects how dx is computed (Winograd, im2col, direct or naive); dw and db always use
    im2col GEMMs (the naive loops with algo="naive").
    """
    op = "conv2d_backward"
    dev = device.dispatch(op, dy=dy, x=x, w=w)
    as_input = _as_input if dev == "cpu" else _as_cuda_input
    dy = as_input(dy, "dy", op)
    x = as_input(x, "x", op)
    w = as_input(w, "w", op)
    _check_4d(x, "x", op, "(N, C, H, W) in NCHW layout")
    _check_4d(w, "w", op, "(K, C, R, S)")
    _check_4d(dy, "dy", op, "(N, K, P, Q)")
    check_same_dtype(op, dy=dy, x=x, w=w)
    st, pads, dl, yshape = _geometry(x.shape, w.shape, stride, padding, dilation, op)
    if tuple(dy.shape) != yshape:
        raise ValueError(f"[{op}] dy has shape {tuple(dy.shape)}, expected {yshape} for x {tuple(x.shape)} and "
                         f"w {tuple(w.shape)}")
    if dev == "cuda":
        _resolve_cuda(algo, x.shape, w.shape, st, dl, yshape, op)
        from ..cuda import conv as cuda_conv
        cuda_conv.check_limits(op, x.shape, w.shape, yshape[2:], st, pads, dl)
        return cuda_conv.backward(dy, x, w, st, pads, dl, bool(need_dx), bool(has_bias))
    name = _resolve_algo(algo, x.shape, w.shape, st, dl, yshape, op)
    return _core.conv2d_backward(dy, x, w, st, pads, dl, name, bool(need_dx), bool(has_bias))
