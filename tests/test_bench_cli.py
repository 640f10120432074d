"""`python -m pydl.bench`: the shipped benchmark command line (table, JSON, report, compare).

Timings are not asserted (a shared machine): only the table's shape, that every ratio is finite and
positive, that the report's files exist, and the comparison of two fixed JSON files.
"""
import json
import math
import os
import re
import subprocess
import sys
import time

import pytest

import pydl

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))


def _bench(args, cwd, timeout=240):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")  # the pydl under test
    return subprocess.run([sys.executable, "-m", "pydl.bench"] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gemm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    r = _bench(["--quick", "--only", "gemm", "--threads", "1", "--json", str(d / "run.json"),
                "--report", str(d / "report")], cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d, r


def _table(stdout):
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("family "))
    head = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for ln in lines[start + 2:]:
        if not ln.strip() or not ln.startswith("gemm"):
            break
        rows.append(dict(zip(head, re.split(r"\s{2,}", ln.strip()))))
    return head, rows


def test_quick_gemm_table(gemm_run):
    _, r = gemm_run
    head, rows = _table(r.stdout)
    for col in ("family", "case", "threads", "metric", "pydl", "numpy", "pydl/numpy"):
        assert col in head, head
    if "torch" in head:
        assert "pydl/torch" in head
    assert rows, r.stdout
    for row in rows:
        assert len(row) == len(head), row
        assert row["family"] == "gemm" and row["threads"] == "1" and row["metric"] == "GFLOP/s"
        assert re.fullmatch(r"\d+x\d+x\d+", row["case"])
        for col in head:
            if col == "pydl" or col.startswith("pydl/"):
                v = float(row[col])
                assert math.isfinite(v) and v > 0, (col, row)
    assert "pydl.bench" in r.stderr  # the progress bar
    assert f"pydl {pydl.__version__}" in r.stdout


def test_quick_gemm_json_and_report(gemm_run):
    d, _ = gemm_run
    doc = json.load(open(d / "run.json"))
    assert doc["rows"] and all(r["bench"] == "gemm" for r in doc["rows"])
    for r in doc["rows"]:
        assert r["noise"] >= 0
        for v in r["ratios"].values():
            assert math.isfinite(v) and v > 0
    # The two-thread scaling probe, before each family and at the end: a ratio of two positive
    # times, or None where the process has fewer than two threads.
    scaling = doc["two_thread_scaling"]
    assert set(scaling) == {"gemm", "end"}
    for v in scaling.values():
        assert v is None or (math.isfinite(v) and v > 0), scaling
    assert ("two-thread scaling before each family" in gemm_run[1].stdout) == (scaling["end"] is not None)
    m = doc["machine"]
    for key in ("cpu", "isa", "threads", "versions", "copy_gbps", "fma_peak_gflops"):
        assert key in m
    assert m["isa"] == pydl.config()["isa"] and m["copy_gbps"] > 0
    rep = d / "report"
    for name in ("report.md", "ratios.png", "gflops.png", "results.json"):
        assert (rep / name).stat().st_size > 0, name
    for name in ("ratios.png", "gflops.png"):
        assert (rep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (rep / "report.md").read_text()
    for part in ("## Machine", "CPU:", "ISA chosen by pydl", "Threads:", "Versions:", "](ratios.png)",
                 "](gflops.png)", "| gemm |"):
        assert part in text, part


def test_compare_fixed_files(tmp_path):
    r = _bench(["--compare", os.path.join(DATA, "bench_old.json"), os.path.join(DATA, "bench_new.json")],
               cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "2 faster, 1 slower, 1 within noise" in out
    faster = out[out.index("faster:"):out.index("slower:")]
    slower = out[out.index("slower:"):]
    assert "+30.0%" in faster and "512x512x512" in faster
    assert "+25.0%" in faster and "| step |" in faster          # a time that fell is faster
    assert "-20.0%" in slower and "1024x1024x1024" in slower.split("only in")[0]
    assert "64x784x128" not in out                               # +12% is within its measured noise
    assert "gone" in out.split("only in")[1] and "added" in out.split("only in")[2]


def test_bad_family_is_refused(tmp_path):
    r = _bench(["--only", "nosuchfamily"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "unknown families" in r.stderr


def test_isa_environment_holds_every_library_to_the_isa(monkeypatch):
    """--isa avx2 caps PyTorch's MKL too (its matmul and RNNs ignore ATEN_CPU_CAPABILITY)."""
    from pydl.bench.isa_env import isa_environment
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX512")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")
    env = isa_environment("avx2")
    assert env["PYDL_ISA"] == "avx2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    native = isa_environment("native")
    for var in ("PYDL_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                "OPENBLAS_CORETYPE"):
        assert var not in native


def test_mkl_path_from_its_verbose_banner():
    from pydl.bench.common import mkl_path_from_log
    intel = ("MKL_VERBOSE oneMKL 2024.0 Update 2 Product build 20240605 for Intel(R) 64 architecture Intel(R) "
             "Advanced Vector Extensions 2 (Intel(R) AVX2) enabled processors, Lnx 2.60GHz lp64 gnu_thread")
    assert mkl_path_from_log(intel) == "AVX2"
    amd = ("MKL_VERBOSE oneMKL 2024.0 Update 2 Product build 20240605 for Intel(R) 64 architecture Intel(R) "
           "Architecture processors, Lnx 2.60GHz lp64 gnu_thread")
    assert mkl_path_from_log(amd) == "path not named on this CPU"
    assert mkl_path_from_log("") == "unknown"


def test_alternate_interleaves_libraries_and_reports_each_median():
    from pydl.bench import common

    calls = []

    def fn(name, seconds):
        def call():
            calls.append(name)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                pass
        return call

    t = common.alternate({"a": fn("a", 0.002), "b": fn("b", 0.004)}, rounds=3, repeats=1, min_time=0.0)
    assert set(t) == {"a", "b"}
    assert 0.0015 < t["a"] < t["b"]
    # every round times a, then b: the calls come in 3 runs of a's each followed by b's
    runs = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert runs == ["a", "b"] * 3
