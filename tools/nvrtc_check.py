"""Compile every CUDA kernel source of pydl with NVRTC, without a GPU or a driver.

    python tools/nvrtc_check.py                 # sm_80 and sm_90; table of registers / spills / smem
    python tools/nvrtc_check.py --arch sm_90 --verbose

Needs `pip install nvidia-cuda-nvrtc cuda-bindings` (both in the test extras). Compiles each
`pydl/cuda/kernels/*.cu` with the options the runtime uses (pydl.cuda.NVRTC_OPTIONS) plus
`-arch=sm_XX --ptxas-options=-v -Werror all-warnings`-style checks: any NVRTC error or warning
fails, and so does any spill in a kernel whose name is listed in NO_SPILL_PREFIXES.
Exit status 0 when everything compiled cleanly. `check()` is what tests/test_cuda_compile.py calls.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KERNEL_DIR = os.path.join(ROOT, "pydl", "cuda", "kernels")
# Kernel files whose kernels must not spill (SGEMM, convolution, recurrent cells, pooling).
NO_SPILL_PREFIXES = ("gemm", "conv", "rnn", "pool", "winograd")


def _nvrtc():
    from cuda.bindings import nvrtc
    return nvrtc


def _options():
    sys.path.insert(0, ROOT)
    try:
        import importlib.util
        spec = importlib.util.spec_from_file_location("_pydl_cuda_init", os.path.join(ROOT, "pydl", "cuda", "__init__.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return tuple(mod.NVRTC_OPTIONS)
    finally:
        sys.path.pop(0)


def compile_file(path: str, arch: str) -> tuple[bool, str]:
    """(ok, log) for one source compiled to a cubin for `arch` (e.g. "sm_90")."""
    nvrtc = _nvrtc()
    with open(path, "rb") as f:
        src = f.read()
    err, prog = nvrtc.nvrtcCreateProgram(src, os.path.basename(path).encode(), 0, [], [])
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return False, f"nvrtcCreateProgram: {err}"
    opts = [o.encode() for o in _options()] + [f"-arch={arch}".encode(), b"--ptxas-options=-v",
                                                 b"--ptxas-options=--warn-on-spills"]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * n
    nvrtc.nvrtcGetProgramLog(prog, log)
    text = log.decode(errors="replace").rstrip("\x00 \n")
    ok = err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    if ok:
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        ok = size > 0
    nvrtc.nvrtcDestroyProgram(prog)
    return ok, text


def parse_ptxas(log: str) -> dict:
    """{kernel: {"registers", "spill_stores", "spill_loads", "smem", "stack"}} from a ptxas -v log."""
    out: dict = {}
    cur = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            cur = out.setdefault(m.group(1), {"registers": 0, "spill_stores": 0, "spill_loads": 0, "smem": 0,
                                              "stack": 0})
            continue
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            cur = out.setdefault(m.group(1), {"registers": 0, "spill_stores": 0, "spill_loads": 0, "smem": 0,
                                              "stack": 0})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            cur["smem"] = int(m.group(1))
    return out


def _problems(log: str) -> list[str]:
    """Warning and error lines of an NVRTC log (ptxas's `info` lines are not problems)."""
    bad = []
    for line in log.splitlines():
        low = line.lower()
        if ("warning" in low or "error" in low) and "ptxas info" not in low:
            bad.append(line.strip())
    return bad


def check(archs=("sm_80", "sm_90"), verbose: bool = False, stream=sys.stdout) -> bool:
    files = sorted(f for f in os.listdir(KERNEL_DIR) if f.endswith(".cu"))
    all_ok = True
    print(f"{'file':<16} {'arch':<6} {'kernel':<44} {'regs':>5} {'spill st/ld':>12} {'smem':>7}", file=stream)
    for fname in files:
        for arch in archs:
            ok, log = compile_file(os.path.join(KERNEL_DIR, fname), arch)
            problems = _problems(log)
            if not ok or problems:
                all_ok = False
                print(f"FAIL {fname} {arch}:\n{log}", file=stream)
                continue
            for name, info in sorted(parse_ptxas(log).items()):
                spills = info["spill_stores"] + info["spill_loads"]
                flag = ""
                if spills and fname.startswith(NO_SPILL_PREFIXES):
                    flag = "  <- spills"
                    all_ok = False
                print(f"{fname:<16} {arch:<6} {name[:44]:<44} {info['registers']:>5} "
                      f"{info['spill_stores']:>5}/{info['spill_loads']:<6} {info['smem']:>7}{flag}", file=stream)
            if verbose:
                print(log, file=stream)
    return all_ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="sm_80, sm_90, ... (repeatable; default sm_80 and sm_90)")
    ap.add_argument("--verbose", action="store_true", help="print the whole NVRTC log of each file")
    args = ap.parse_args(argv)
    ok = check(tuple(args.arch or ("sm_80", "sm_90")), args.verbose)
    print("all kernel sources compiled cleanly" if ok else "kernel compile check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
