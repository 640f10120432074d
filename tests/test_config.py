import os
import subprocess
import sys

import pytest

import pydl
from pydl import _core


def test_version_and_config():
    cfg = pydl.config()
    assert cfg["version"] == pydl.__version__
    assert cfg["isa"] in cfg["isa_available"]
    assert "generic" in cfg["isa_available"]
    assert cfg["num_threads"] >= 1


def test_l1d_ways_matches_the_kernel_cache_description():
    """The L1 associativity the SGEMM packing rule uses, against what Linux read from the CPU."""
    ways = pydl.config()["l1d_ways"]
    assert isinstance(ways, int) and 1 <= ways <= 1024
    base = "/sys/devices/system/cpu/cpu0/cache"
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("read from CPUID on x86-64 only (elsewhere the default, 8)")
    if not os.path.isdir(base):
        pytest.skip("no sysfs cache description on this system")
    for entry in sorted(os.listdir(base)):
        d = os.path.join(base, entry)
        try:
            level = open(os.path.join(d, "level")).read().strip()
            kind = open(os.path.join(d, "type")).read().strip()
            sys_ways = int(open(os.path.join(d, "ways_of_associativity")).read())
        except (OSError, ValueError):
            continue
        if level == "1" and kind in ("Data", "Unified") and sys_ways > 0:
            assert ways == sys_ways
            return
    pytest.skip("sysfs names no level-1 data cache")


def test_show_config_prints(capsys):
    pydl.show_config()
    out = capsys.readouterr().out
    assert "isa" in out and "num_threads" in out


def test_set_get_num_threads():
    old = pydl.get_num_threads()
    try:
        pydl.set_num_threads(1)
        assert pydl.get_num_threads() == 1
        with pytest.raises(ValueError, match="set_num_threads"):
            pydl.set_num_threads(0)
        with pytest.raises(TypeError):
            pydl.set_num_threads(1.5)
    finally:
        pydl.set_num_threads(old)


def test_thread_setting_is_process_wide():
    import threading

    old = pydl.get_num_threads()
    try:
        pydl.set_num_threads(1)
        seen = []
        t = threading.Thread(target=lambda: seen.append(pydl.get_num_threads()))
        t.start()
        t.join()
        assert seen == [1]
    finally:
        pydl.set_num_threads(old)


def test_omp_num_threads_is_default():
    code = "import pydl; print(pydl.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_forced_isa(isa):
    code = "import pydl; print(pydl.config()['isa'])"
    env = dict(os.environ, PYDL_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if isa in _core.available_isas():
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == isa
    else:
        assert out.returncode != 0
        assert "does not support" in out.stderr


def test_unknown_isa_is_clear_error():
    env = dict(os.environ, PYDL_ISA="sse9")
    out = subprocess.run([sys.executable, "-c", "import pydl"], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "unknown ISA 'sse9'" in out.stderr
