#!/usr/bin/env python3
"""Report stack traffic inside the hot loops of the per-ISA kernel files.

    python tools/check_spills.py                   # every csrc/*_avx2.cpp and *_avx512.cpp
    python tools/check_spills.py csrc/conv2d_avx2.cpp -v
    python tools/check_spills.py --strict          # exit 1 if any hot loop spills

Each file is compiled to assembly with the flags the build gives it (-O3, its ISA's -m flags,
OpenMP, no LTO, so the code is what the optimiser makes of this file alone). In every function the
innermost loops (natural loops of the control-flow graph that hold no other loop) that do packed
vector work (an FMA, at least 4 vector multiplies/adds/min/max, or at least 8 instructions on ymm
or zmm registers: loads, stores, compares, blends, shuffles) are inspected for vector loads and
stores addressed off %rsp or %rbp, and for calls:
  spill   a vector stored to the stack inside the loop (and loaded back): a register that did not
          fit, or an array of vectors kept in memory. A register tile that fits its ISA's register
          file has none.
  reload  vector loads from stack slots the loop never writes: loop invariants (constants,
          broadcast scalars) that the compiler hoisted out of the loop and keeps in memory for
          want of registers. Each is one load operand, as a constant read from .rodata would be.
  call    a call inside the loop (memcpy for a variable-length copy, a math function): the loop
          leaves registers at every call.
Register allocation is the compiler's: the kernels are checked with the GCC the wheels are built
with (tests/test_spills.py runs --strict under GCC 12); another compiler may differ.
"""
from __future__ import annotations

import argparse
import concurrent.futures
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
FMA = re.compile(r"\bvf(n)?m(add|sub)\w*p[sd]\b")  # packed only: scalar code holds no vector tile
STACK_VEC = re.compile(r"\(%r[sb]p\)")
STACK_STORE = re.compile(r"^v?mov\w*\s+%[xyz]mm\d+,\s*-?\w*\(%r[sb]p\)")
CALL = re.compile(r"^call\s")
VREG = re.compile(r"%[xyz]mm")
WIDE = re.compile(r"%[yz]mm")


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


def blocks_of(lines):
    """Basic blocks of one function's assembly: (labels, instructions, successor indices)."""
    blocks, cur = [], None
    for ln in lines:
        if not ln or (ln.startswith(".") and not re.match(r"\.L\w+:$", ln)):
            continue  # directives
        if ln.endswith(":"):
            if cur is None or cur[1]:
                cur = [[], []]
                blocks.append(cur)
            cur[0].append(ln[:-1])
            continue
        if cur is None:
            cur = [[], []]
            blocks.append(cur)
        cur[1].append(ln)
        if re.match(r"(notrack\s+)?(j\w+|ret\w*|ud2)\b", ln):
            cur = None
    where = {lab: i for i, (labs, _) in enumerate(blocks) for lab in labs}
    # A switch's jump table (.long / .quad .Lx entries) lists where an indirect jmp may go.
    table = sorted({where[t] for t in re.findall(r"\.(?:long|quad)\s+(\.L\w+)", "\n".join(lines)) if t in where})
    out = []
    for i, (labs, ins) in enumerate(blocks):
        last = ins[-1] if ins else ""
        succ = []
        j = re.match(r"(j\w+)\s+(\.L\w+)$", last)
        if j and j.group(2) in where:
            succ.append(where[j.group(2)])
        if re.match(r"(notrack\s+)?jmp\s+\*", last):
            succ.extend(table)
        ends = re.match(r"(notrack\s+)?(jmp|ret\w*|ud2)\b", last)
        if not ends and i + 1 < len(blocks):
            succ.append(i + 1)  # falls through (also after a conditional jump)
        out.append((labs, ins, succ))
    return out


def natural_loops(blocks):
    """{header: set of block indices} of the natural loops (back edges found by a depth-first walk)."""
    n = len(blocks)
    preds = [[] for _ in range(n)]
    for i, (_, _, succ) in enumerate(blocks):
        for j in succ:
            preds[j].append(i)
    state, back = [0] * n, []  # 0 new, 1 on the stack, 2 done
    stack = [(0, iter(blocks[0][2]))] if n else []
    if n:
        state[0] = 1
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            state[node] = 2
            stack.pop()
        elif state[nxt] == 1:
            back.append((node, nxt))
        elif state[nxt] == 0:
            state[nxt] = 1
            stack.append((nxt, iter(blocks[nxt][2])))
    loops = {}
    for tail, head in back:
        body, work = {head, tail}, ([tail] if tail != head else [])
        while work:
            x = work.pop()
            for p in preds[x]:
                if p not in body:
                    body.add(p)
                    work.append(p)
        loops.setdefault(head, set()).update(body)
    return loops


def loops(asm: str):
    """(function, n_instructions, n_fma, n_spill_stores, n_reloads, n_calls) per innermost hot loop.

    Loops are the natural loops of each function's control-flow graph (the compiler lays a loop's
    blocks out wherever it likes, so a loop is not a span of lines); innermost: holding no other
    loop's header."""
    funcs = re.split(r"\n(?=[A-Za-z_][\w.$]*:\n)", asm)
    for chunk in funcs:
        m = re.match(r"([A-Za-z_][\w.$]*):\n", chunk)
        if not m:
            continue
        blocks = blocks_of([ln.strip() for ln in chunk.splitlines()[1:]])
        found = natural_loops(blocks)
        for head, body_blocks in found.items():
            if any(h != head and h in body_blocks for h in found):
                continue  # not innermost
            body = [ln for i in sorted(body_blocks) for ln in blocks[i][1]]
            n_fma = sum(bool(FMA.search(ln)) for ln in body)
            n_ar = sum(bool(VEC_ARITH.search(ln)) and bool(VREG.search(ln)) for ln in body)
            n_wide = sum(bool(WIDE.search(ln)) for ln in body)
            if n_fma == 0 and n_ar < 4 and n_wide < 8:
                continue
            stack = [ln for ln in body if STACK_VEC.search(ln) and VREG.search(ln)]
            n_store = sum(bool(STACK_STORE.match(ln)) for ln in stack)
            n_calls = sum(bool(CALL.match(ln)) for ln in body)
            yield m.group(1), len(body), n_fma, n_store, len(stack) - n_store, n_calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every hot loop, not only those that spill")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any hot loop spills or calls")
    args = ap.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(ROOT, "csrc", "*_avx2.cpp")) +
                                 glob.glob(os.path.join(ROOT, "csrc", "*_avx512.cpp")))
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        asms = list(pool.map(lambda path: compile_asm(path, isa_of(path)), files))
    for path, asm in zip(files, asms):
        isa = isa_of(path)
        found = list(loops(asm))
        names = demangle([f for f, *_ in found])
        rows = [(n, *rest) for n, (_, *rest) in zip(names, found)]
        spilled = [r for r in rows if r[3] > 0 or r[5] > 0]
        reloads = [r for r in rows if r[3] == 0 and r[5] == 0 and r[4] > 0]
        bad += len(spilled)
        print(f"{os.path.relpath(path, ROOT)} ({isa}): {len(rows)} hot loops, {len(spilled)} spill or call, "
              f"{len(reloads)} reload invariants only")
        for name, n, fma, stores, loads, calls in (rows if args.verbose else spilled):
            short = name if len(name) < 100 else name[:97] + "..."
            print(f"  {stores:3d} spill {loads:3d} reload {calls:2d} call / {n:4d} instr, {fma:3d} FMA  {short}")
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
