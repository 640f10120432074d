"""Helpers for tests/test_fuzz.py: crash-isolated case runner, hostile values, array layouts.

Each case runs in a forked child (`run_isolated`) with a memory cap and a timeout, so a
segfault, abort, hang or runaway allocation in a kernel fails one test with the case's
description instead of killing the pytest run. The child only runs NumPy and pydl (no torch).
"""
from __future__ import annotations

import math
import os
import re
import resource
import select
import signal
import time
import traceback

import numpy as np

TIMEOUT_S = 20.0
MEM_CAP = 3 << 30  # bytes of address space a child may add to what the parent already maps

# ---- hostile values --------------------------------------------------------------------------

HUGE_INTS = [2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, -2**63, -2**31]
# every kind of wrong thing an int-like geometry argument can be
HOSTILE_SIZES = HUGE_INTS + [-1, 0, -7, 1.0, 2.5, float("nan"), float("inf"), True, False, "2", "same ", None,
                             (1,), (1, 2, 3), (2, -1), (1, 2**63), (1.0, 1), (True, 1), [], np.int64(2),
                             np.uint64(2**64 - 1), np.float32(2), ((1, 1), (1,)), ((1, 2**31), (0, 0)),
                             complex(1, 0)]
HOSTILE_SCALARS = HUGE_INTS + [-1, 0, -0.5, 1.5, float("nan"), float("inf"), -float("inf"), True, "0.1", None,
                               (0.1,), np.float64(1e308), np.float32(np.nan), complex(0.1, 0), [0.1], object()]

# dtype -> tag; '>' are the byte-swapped forms
DTYPES = ["<f4", ">f4", "<f8", ">f8", "<f2", "i1", "<i4", "<i8", "u1", "?", "<c8", "O"]
SANE_DTYPES = ["<f4", ">f4", "<f8", ">f8", "<f2", "i1", "<i4", "<i8", "u1", "?"]
FLOAT_DTYPES = ["<f4", ">f4", "<f8", ">f8", "<f2"]
LAYOUTS = ["c", "strided", "neg", "T", "misaligned", "readonly"]


def is_f8(dtype) -> bool:
    d = np.dtype(dtype)
    return d.kind == "f" and d.itemsize == 8


def compute_dtype(*dtypes):
    """What pydl computes in: float64 for any float64 (either byte order), else float32."""
    return np.dtype(np.float64) if any(is_f8(d) for d in dtypes) else np.dtype(np.float32)


def same_compute(*dtypes) -> bool:
    return len({compute_dtype(d) for d in dtypes}) == 1


# ---- arrays ----------------------------------------------------------------------------------

def values(shape, seed: int, nonfinite=None, scale: float = 2.0) -> np.ndarray:
    """float64 values in [-scale, scale] (multiples of 1/16), with NaN/Inf injected when asked."""
    rng = np.random.default_rng(seed)
    v = np.asarray(np.round(rng.uniform(-scale, scale, size=shape) * 16) / 16, np.float64)
    if nonfinite and v.size:
        k = max(1, v.size // 5)
        idx = rng.choice(v.size, size=k, replace=False)
        pool = {"nan": [np.nan], "inf": [np.inf, -np.inf], "mix": [np.nan, np.inf, -np.inf]}[nonfinite]
        v.flat[idx] = rng.choice(pool, size=k)
    return v


def cast(v: np.ndarray, dtype: str) -> np.ndarray:
    d = np.dtype(dtype)
    if d.kind in "iu":
        w = np.nan_to_num(np.rint(v), nan=0.0, posinf=3.0, neginf=-3.0)
        return (np.abs(w) if d.kind == "u" else w).astype(d)
    if d.kind == "b":
        return np.asarray(v > 0)
    if d.kind == "O":
        return v.astype(object)
    return v.astype(d)


def layout(a: np.ndarray, how: str) -> np.ndarray:
    """The same values as `a` in memory laid out as `how` (view kinds of the hardening issue)."""
    if how == "c" or a.ndim == 0:
        out = np.array(a, copy=True, order="C")
    elif how == "strided":
        base = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        base[..., ::2] = a
        out = base[..., ::2]
    elif how == "neg":
        out = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    elif how == "T":
        out = np.ascontiguousarray(a.T).T
    elif how == "misaligned":
        if a.dtype == object or a.dtype.itemsize == 1:
            return layout(a, "strided")
        raw = bytearray(a.nbytes + a.dtype.itemsize)
        out = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        out[...] = a
    elif how == "readonly":
        out = np.array(a, copy=True)
        out.flags.writeable = False
    else:  # pragma: no cover
        raise ValueError(how)
    assert out.shape == a.shape
    return out


def make(shape, dtype="<f4", lay="c", seed=0, nonfinite=None, scale=2.0) -> np.ndarray:
    return layout(cast(values(shape, seed, nonfinite, scale), dtype), lay)


def describe(v) -> str:
    if isinstance(v, np.ndarray):
        f = v.flags
        kind = "C" if f.c_contiguous else ("F" if f.f_contiguous else "strided")
        extra = ("" if f.aligned else " misaligned") + ("" if f.writeable else " readonly")
        nf = ""
        if v.dtype.kind == "f" and v.size and not np.all(np.isfinite(v)):
            nf = " nonfinite"
        return f"array({v.shape}, {v.dtype.str}, {kind}{extra}{nf})"
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"{type(v).__name__}(len {len(v)})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={describe(x)}" for k, x in v.items()) + "}"
    return repr(v)


def case_desc(name: str, **kw) -> str:
    return f"{name}(" + ", ".join(f"{k}={describe(v)}" for k, v in kw.items()) + ")"


# ---- the outcome contract --------------------------------------------------------------------

_INT = re.compile(r"(?<![\w.])-?\d+(?![\d.]*e)")


def user_numbers(*args) -> set:
    """Every integer written in the repr of the (non-array) arguments: numbers a message may echo."""
    found = set()
    for a in args:
        if isinstance(a, np.ndarray):
            continue
        for m in re.finditer(r"-?\d+", repr(a)):
            found.add(int(m.group()))
    return found


def overflowed_numbers(msg: str, allowed: set) -> list:
    """Integers in `msg` that look like wrapped arithmetic: huge or strongly negative, not passed."""
    bad = []
    ok = set(allowed) | {2**31 - 1, 2**62, 2**63, 2**64, 2**63 - 1}
    for m in _INT.finditer(msg):
        n = int(m.group())
        # a small multiple of a passed number (a dilated kernel (k-1)*d+1, a padded size) is derived, not wrapped
        if (abs(n) >= 2**31 or n < -1) and not any(abs(n - m * a) <= 8 for a in ok for m in range(1, 9)):
            bad.append(n)
    return bad


def expect(call, tags, sane: bool, check=None, numbers=(), must_fail: bool = False):
    """Run `call()` and enforce the contract: it returns, or raises ValueError/TypeError whose
    message starts with one of `tags` ("[op") and holds no wrapped number; a sane call must
    return and pass `check(result)`; a `must_fail` call must raise. Returns the result or None."""
    if isinstance(tags, str):
        tags = (tags,)
    try:
        res = call()
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if sane:
            raise AssertionError(f"a sane call raised {type(exc).__name__}: {msg}") from exc
        if not any(msg.startswith("[" + t) for t in tags):
            raise AssertionError(f"{type(exc).__name__} message does not name the op {tags}: {msg!r}") from exc
        if "incompatible function arguments" in msg:
            raise AssertionError(f"pybind11 argument error leaked: {msg!r}") from exc
        bad = overflowed_numbers(msg, set(numbers))
        if bad:
            raise AssertionError(f"message holds overflowed numbers {bad}: {msg!r}") from exc
        return None
    if must_fail:
        raise AssertionError(f"the call should have raised, returned {describe(res)}")
    if sane and check is not None:
        check(res)
    return res


def assert_close(got, ref, dtype, scale=1.0, what="result"):
    """got (pydl's) against ref (float64) with a tolerance for got's dtype; non-finite
    positions must agree exactly (NaN where ref is NaN, +Inf where +Inf, -Inf where -Inf)."""
    got = np.asarray(got)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, reference {ref.shape}"
    g = got.astype(np.float64)
    for name, f in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        mg, mr = f(g), f(ref)
        if not np.array_equal(mg, mr):
            where = np.argwhere(mg != mr)[:4].tolist()
            raise AssertionError(f"{what}: {name} positions differ from the reference at {where} "
                                 f"(got {g[tuple(np.argwhere(mg != mr)[0])]}, ref {ref[tuple(np.argwhere(mg != mr)[0])]})")
    fin = np.isfinite(ref)
    if np.dtype(dtype) == np.float64:
        rtol, atol = 1e-9, 1e-9 * scale
    else:
        rtol, atol = 2e-4, 2e-3 * scale
    np.testing.assert_allclose(g[fin], ref[fin], rtol=rtol, atol=atol, err_msg=what)


# ---- crash isolation -------------------------------------------------------------------------

def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover


def run_isolated(body, desc: str, timeout: float = TIMEOUT_S) -> None:
    """Run `body()` in a forked child under a memory cap and a timeout.

    The child reports PASS or the formatted exception through a pipe and leaves by os._exit.
    A child that raises, dies by a signal, exits without a report or outlives `timeout` fails
    the calling test with `desc`.
    """
    limit = _vm_bytes() + MEM_CAP
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            try:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                body()
                msg = b"PASS"
            except BaseException:
                msg = ("FAIL " + traceback.format_exc(limit=-6)).encode("utf-8", "replace")[:16000]
            view = memoryview(msg)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    chunks, timed_out = [], False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                data = os.read(r, 65536)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(r)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    report = b"".join(chunks).decode("utf-8", "replace")
    if timed_out:
        raise AssertionError(f"TIMEOUT after {timeout:.0f} s (killed): {desc}")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        raise AssertionError(f"CRASH: child killed by signal {sig} ({signal.Signals(sig).name}): {desc}")
    if report == "PASS":
        return
    if report.startswith("FAIL "):
        raise AssertionError(f"{desc}\n{report[5:]}")
    raise AssertionError(f"child exited (status {status}) without a report: {desc}")


def nan_safe_int(v):
    try:
        return int(v)
    except Exception:
        return None


__all__ = [n for n in dir() if not n.startswith("_")] + ["math"]
