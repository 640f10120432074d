"""`python -m pydl.bench --only generic`: the generic (SSE2) kernels against their naive twins and the
native ISA, in one process.

Timings are not asserted (a shared machine): only which kernels have rows, that each row carries
the naive baseline (and the native one where the CPU has AVX2 or AVX-512), that every time and
ratio is finite and positive, that a kernel whose result differs from its twin is refused before
timing, and that the ISA selected before the run is selected after it.
"""
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

import pydl
from pydl import _core

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))
NATIVE = next((isa for isa in ("avx512", "avx2") if isa in _core.available_isas()), None)


def _env():
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")  # the pydl under test
    return env


@pytest.fixture(scope="module")
def generic_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_generic")
    r = subprocess.run([sys.executable, "-m", "pydl.bench", "--quick", "--only", "generic", "--threads", "1",
                        "--json", str(d / "r.json")], cwd=d, env=_env(), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.load(open(d / "r.json")), r


def _rows_for(rows, prefix):
    return [r for r in rows if r["case"].startswith(prefix)]


def test_rows_cover_the_kernel_families(generic_run):
    doc, _ = generic_run
    rows = doc["rows"]
    assert rows and all(r["bench"] == "generic" for r in rows)
    assert all(r["threads"] == 1 and r["metric"] == "ms" for r in rows)
    for prefix in ("gemm ", "conv2d "):
        assert _rows_for(rows, prefix), (prefix, [r["case"] for r in rows])
    assert [r for r in rows if r["case"].split()[0] in ("sgd_update", "momentum_update", "adagrad_update",
                                                        "rmsprop_update", "adam_update", "nadam_update")]
    assert [r for r in rows if r["case"].split()[0] in ("max_pool2d_forward", "avg_pool2d_forward")]
    # conv2d's case names the algorithm algo="auto" runs under generic
    conv = _rows_for(rows, "conv2d ")[0]["case"]
    assert "auto: generic " in conv, conv


def test_every_row_has_its_baselines(generic_run):
    doc, _ = generic_run
    for r in doc["rows"]:
        assert "generic vs naive" in r["case"], r["case"]
        assert math.isfinite(r["pydl"]) and r["pydl"] > 0, r
        assert math.isfinite(r["baselines"]["naive"]) and r["baselines"]["naive"] > 0, r
        if NATIVE:
            assert "native" in r["baselines"], r
            assert f"vs {NATIVE}" in r["case"], r["case"]
        else:
            assert "native" not in r["baselines"], r
        assert set(r["ratios"]) == set(r["baselines"])
        for name, v in r["ratios"].items():
            assert math.isfinite(v) and v > 0, (name, r)
            assert v == pytest.approx(r["baselines"][name] / r["pydl"])  # ms: baseline / pydl


def test_table_shows_both_ratios(generic_run):
    _, r = generic_run
    head = next(ln for ln in r.stdout.splitlines() if ln.startswith("family "))
    assert "pydl/naive" in head.split()
    assert ("pydl/native" in head.split()) == (NATIVE is not None)


def test_mismatch_is_refused_and_isa_restored():
    """A kernel that disagrees with its twin is never timed, and run() puts back the ISA it found."""
    script = textwrap.dedent("""
        import numpy as np
        from pydl import _core
        from pydl.bench import bench_generic as bg

        fam = bg._Family(1, bg.native_isa())
        a = np.arange(8, dtype=np.float32)
        try:
            fam.add("broken", lambda: a + 1, lambda: a)
        except AssertionError as e:
            assert "broken: generic vs naive" in str(e), e
        else:
            raise SystemExit("a result differing from the naive twin was timed")
        assert fam.rows == []

        def failing(fam, rng, quick):
            _core.select_isa(bg.native_isa() or "generic")
            raise RuntimeError("kernel failed")

        _core.select_isa("generic")
        bg.KERNELS = (failing,)
        try:
            bg.run(quick=True)
        except RuntimeError:
            pass
        assert _core.selected_isa() == "generic", _core.selected_isa()
        if bg.native_isa():
            _core.select_isa(bg.native_isa())
            bg.KERNELS = (bg._sum_squares,)
            rows = bg.run(quick=True)
            assert _core.selected_isa() == bg.native_isa()
            assert len(rows) == 1 and set(rows[0].baselines) == {"naive", "native"}
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
