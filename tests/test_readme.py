"""The README's tour is code users paste: it must run as written."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_tour_runs(tmp_path, monkeypatch):
    if not os.path.exists(README):
        pytest.skip("README.md is not beside the tests (installed test run)")
    text = open(README, encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    import pydl

    old = pydl.get_num_threads()
    try:
        for code in blocks:
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    finally:
        pydl.set_num_threads(old)
    assert (tmp_path / "digits_cnn.npz").exists()
