"""The package as a release: top-level layout, one version number, and the ImportError an unbuilt
checkout gives."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import pydl

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
PKG = os.path.dirname(os.path.abspath(pydl.__file__))
IN_CHECKOUT = os.path.exists(os.path.join(ROOT, "pyproject.toml"))


def _pyproject_version(path):
    text = open(path, encoding="utf-8").read()
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)
    return re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)


def _copy_package(dst, with_core):
    ignore = shutil.ignore_patterns("__pycache__", *(() if with_core else ("_core*.so", "_core*.pyd")))
    shutil.copytree(PKG, os.path.join(dst, "pydl"), ignore=ignore)
    libs = os.path.join(os.path.dirname(PKG), "pydl_nn.libs")  # libraries auditwheel vendored
    if with_core and os.path.isdir(libs):
        shutil.copytree(libs, os.path.join(dst, "pydl_nn.libs"))


def _run(code, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(cwd)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(not IN_CHECKOUT, reason="needs the source checkout")
def test_top_level_layout():
    for name in ("CMakeLists.txt", "pyproject.toml", "csrc", "pydl", "tests", "bench"):
        assert os.path.exists(os.path.join(ROOT, name)), name
    assert not os.path.exists(os.path.join(ROOT, "src", "pydl")), "the package moved to pydl/ at the top"
    assert os.path.exists(os.path.join(ROOT, "pydl", "__init__.py"))
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert re.search(r'^wheel\.packages\s*=\s*\["pydl"\]', text, re.M)


@pytest.mark.skipif(not IN_CHECKOUT, reason="needs the source checkout")
def test_version_comes_from_pyproject():
    assert pydl.__version__ == _pyproject_version(os.path.join(ROOT, "pyproject.toml"))
    assert pydl.config()["version"] == pydl.__version__


def test_version_matches_installed_metadata():
    from importlib.metadata import PackageNotFoundError, version
    try:
        meta = version("pydl-nn")
    except PackageNotFoundError:
        pytest.skip("pydl-nn is not installed")
    if os.path.exists(os.path.join(os.path.dirname(PKG), "pyproject.toml")):
        pytest.skip("the imported pydl is a checkout; an installed copy may be another version")
    assert pydl.__version__ == meta


def test_checkout_version_is_parsed_from_its_pyproject(tmp_path):
    """A checkout reads pyproject.toml beside the package, whatever is installed elsewhere."""
    _copy_package(tmp_path, with_core=True)
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\n\n[project]\nname = "pydl-nn"\nversion = "9.8.7.dev3"\n\n'
        '[tool.other]\nversion = "0.0.0"\n')
    r = _run("import pydl; print(pydl.__file__); print(pydl.__version__)", tmp_path)
    assert r.returncode == 0, r.stderr
    where, ver = r.stdout.split()
    assert where.startswith(str(tmp_path)) and ver == "9.8.7.dev3"


def test_unbuilt_checkout_says_how_to_build(tmp_path):
    _copy_package(tmp_path, with_core=False)
    assert not any(n.startswith("_core") for n in os.listdir(tmp_path / "pydl"))
    r = _run("import pydl", tmp_path)
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "pip install ." in r.stderr and "tools/build_inplace.sh" in r.stderr, r.stderr
    assert "No module named" not in r.stderr, r.stderr
