import os
import re
import subprocess
import sys

import numpy as np
import pytest

import pydl
from pydl import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


def test_demo_subprocess_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "pydl.demo", "--epochs", "3", "--out", str(out), "--verbose", "2"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "confusion matrix" in proc.stdout
    assert "Epoch 3/3" in proc.stdout
    assert (out / "model.npz").stat().st_size > 0
    png = (out / "training_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    model = pydl.load_model(out / "model.npz")
    assert model.compiled and model.name == "cnn"
    assert any(type(layer).__name__ == "Conv2D" for layer in model.layers)


def test_demo_mlp_reaches_95_percent(tmp_path, capsys):
    assert demo.main(["--model", "mlp", "--out", str(tmp_path), "--verbose", "0"]) == 0
    text = capsys.readouterr().out
    acc = float(re.search(r"test accuracy ([0-9.]+)", text).group(1))
    assert acc >= 0.95, text
    # the confusion matrix printed has 10 rows whose total is the test-set size
    rows = [l for l in text.splitlines() if re.match(r"^\s+\d( +\d+){10}$", l)]
    assert len(rows) == 10
    n = int(re.search(r"\((\d+)/(\d+)\)", text).group(2))
    assert sum(sum(int(v) for v in r.split()[1:]) for r in rows) == n
    # the saved model (with its scaler) reproduces the reported accuracy
    model = pydl.load_model(tmp_path / "model.npz")
    x, y = pydl.datasets.load_digits()
    _, _, (xte, yte) = pydl.data.train_val_test_split(x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=0)
    pred = model.predict(model.scaler.transform(xte.reshape(len(xte), -1)).astype(np.float32)).argmax(1)
    assert np.mean(pred == yte) == pytest.approx(acc, abs=1e-4)


def test_demo_default_cnn_reaches_97_percent(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--verbose", "0"]) == 0
    text = capsys.readouterr().out
    acc = float(re.search(r"test accuracy ([0-9.]+)", text).group(1))
    assert acc >= 0.97, text
    # the saved CNN reproduces the reported accuracy on the same test split
    model = pydl.load_model(tmp_path / "model.npz")
    x, y = pydl.datasets.load_digits()
    _, _, (xte, yte) = pydl.data.train_val_test_split(x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=0)
    pred = model.predict(xte.reshape(len(xte), 1, 8, 8)).argmax(1)
    assert np.mean(pred == yte) == pytest.approx(acc, abs=1e-4)


def test_demo_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0", "--out", str(tmp_path)])
    assert demo.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "cannot load the data" in capsys.readouterr().err
