#!/usr/bin/env python3
"""Report stack traffic inside the hot loops of the per-ISA kernel files.

    python tools/check_spills.py                   # every csrc/*_avx2.cpp and *_avx512.cpp
    python tools/check_spills.py csrc/conv2d_avx2.cpp -v

Each file is compiled to assembly with the flags the build gives it (-O3, its ISA's -m flags,
OpenMP, no LTO, so the code is what the optimiser makes of this file alone). In every function the
innermost loops (a backward jump to a label, containing no other loop) that do vector arithmetic
(FMA, or at least 4 vector multiplies/adds) are listed with their count of vector loads/stores
addressed off %rsp or %rbp, i.e. spilled registers or arrays of vectors kept in memory. A register
tile that fits its ISA's register file shows 0. Exit status 1 if any such loop has stack traffic
and --strict is given.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "generic": [],
}
VEC_ARITH = re.compile(r"\bv?(fmadd|fnmadd|fmsub|mul|add|sub|max|min)[0-9]*p[sd]\b")
FMA = re.compile(r"\bvf(n)?m(add|sub)")
STACK_VEC = re.compile(r"\(%r[sb]p\)")
VREG = re.compile(r"%[xyz]mm")


def isa_of(path: str) -> str:
    for isa in ("avx512", "avx2"):
        if path.endswith(f"_{isa}.cpp"):
            return isa
    return "generic"


def compile_asm(path: str, isa: str) -> str:
    cmd = ["g++", "-std=c++17", "-O3", "-fno-math-errno", "-fopenmp", "-DPYDL_X86=1", "-fPIC",
           "-I", os.path.join(ROOT, "csrc"), *FLAGS[isa], "-S", "-o", "-", path]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
        return out.splitlines()
    except OSError:  # pragma: no cover
        return list(names)


def loops(asm: str):
    """(function, n_instructions, n_fma, n_vector_arith, n_stack_vector_ops) per innermost loop."""
    funcs = re.split(r"\n(?=[A-Za-z_][\w.$]*:\n)", asm)
    for chunk in funcs:
        m = re.match(r"([A-Za-z_][\w.$]*):\n", chunk)
        if not m:
            continue
        lines = [ln.strip() for ln in chunk.splitlines()[1:]]
        labels = {ln[:-1]: i for i, ln in enumerate(lines) if re.match(r"\.L\w+:$", ln)}
        spans = []
        for i, ln in enumerate(lines):
            j = re.match(r"j\w+\s+(\.L\w+)$", ln)
            if j and j.group(1) in labels and labels[j.group(1)] < i:
                spans.append((labels[j.group(1)], i))
        for a, b in spans:
            if any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans):
                continue  # not innermost
            body = [ln for ln in lines[a:b + 1] if ln and not ln.startswith(".")]
            n_fma = sum(bool(FMA.search(ln)) for ln in body)
            n_ar = sum(bool(VEC_ARITH.search(ln)) and bool(VREG.search(ln)) for ln in body)
            if n_fma == 0 and n_ar < 4:
                continue
            n_stack = sum(bool(STACK_VEC.search(ln)) and bool(VREG.search(ln)) for ln in body)
            yield m.group(1), len(body), n_fma, n_ar, n_stack


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("-v", "--verbose", action="store_true", help="list loops without stack traffic too")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any hot loop has stack traffic")
    args = ap.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(ROOT, "csrc", "*_avx2.cpp")) +
                                 glob.glob(os.path.join(ROOT, "csrc", "*_avx512.cpp")))
    bad = 0
    for path in files:
        isa = isa_of(path)
        found = list(loops(compile_asm(path, isa)))
        names = demangle([f for f, *_ in found])
        worst = [(n, *rest) for n, (_, *rest) in zip(names, found)]
        spilled = [w for w in worst if w[4] > 0]
        bad += len(spilled)
        print(f"{os.path.relpath(path, ROOT)} ({isa}): {len(worst)} hot loops, {len(spilled)} with stack traffic")
        for name, n, fma, ar, st in (worst if args.verbose else spilled):
            short = name if len(name) < 110 else name[:107] + "..."
            print(f"  {st:3d} stack vector ops / {n:4d} instr, {fma:3d} FMA  {short}")
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
