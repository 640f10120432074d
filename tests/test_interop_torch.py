"""pydl.interop.load_torch_state_dict: PyTorch models and their pydl equivalents give the same outputs
after loading (MNIST CNN, LSTM and GRU classifiers, BatchNorm in eval mode, ConvTranspose2d,
Embedding + LayerNorm), NumPy state dicts load without torch, and mismatches are reported (strict
raises and writes nothing)."""
from __future__ import annotations

import numpy as np
import pytest

import pydl
from pydl import layers as L
from pydl.interop import TorchLoadReport, load_torch_state_dict


def _np_state(sd):
    return {k: v.detach().numpy().copy() for k, v in sd.items()}


def test_mnist_cnn_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    F = torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            return self.fc2(x)

    torch.manual_seed(0)
    net = Net().eval()
    model = pydl.Sequential([L.Conv2D(32, 3, activation="relu", input_shape=(1, 28, 28)),
                             L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                             L.Dense(128, activation="relu"), L.Dense(10)])
    report = load_torch_state_dict(model, net.state_dict())
    assert isinstance(report, TorchLoadReport) and report.ok
    assert len(report.loaded) == 8
    assert report.loaded[4] == ("fc1.weight", f"{model.layers[4].name}/W", (9216, 128))
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_recurrent_classifier_matches_torch(cell):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Clf(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, cell)(5, 12, batch_first=True)
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    torch.manual_seed(1)
    net = Clf().eval()
    rnn = {"LSTM": L.LSTM, "GRU": L.GRU, "RNN": L.SimpleRNN}[cell](12, input_shape=(7, 5))
    model = pydl.Sequential([rnn, L.Dense(3)])
    report = load_torch_state_dict(model, net.state_dict())
    assert report.ok
    x = np.random.default_rng(2).standard_normal((4, 7, 5)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-4, atol=1e-5)


def test_batchnorm_eval_mode_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    # non-trivial running statistics and affine parameters
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(16, 2, 6, 6) * 2 + 0.5)
        for m in net:
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    net.eval()
    model = pydl.Sequential([L.Conv2D(4, 3, padding="same", input_shape=(2, 6, 6)),
                             L.BatchNormalization(epsilon=1e-5, momentum=0.9), L.ReLU(), L.Flatten(), L.Dense(8),
                             L.BatchNormalization(epsilon=1e-5, momentum=0.9), L.Dense(2)])
    report = load_torch_state_dict(model, net.state_dict())
    assert report.ok
    assert not any("epsilon" in n for n in report.notes)
    assert any("momentum" in n for n in report.notes)
    x = np.random.default_rng(4).standard_normal((5, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-4, atol=1e-4)


def test_batchnorm_epsilon_difference_is_noted():
    model = pydl.Sequential([L.Dense(3, input_shape=(2,)), L.BatchNormalization()])
    sd = {"0.weight": np.ones((3, 2), np.float32), "0.bias": np.zeros(3, np.float32),
          "1.weight": np.ones(3, np.float32), "1.bias": np.zeros(3, np.float32),
          "1.running_mean": np.full(3, 0.5, np.float32), "1.running_var": np.full(3, 2.0, np.float32),
          "1.num_batches_tracked": np.array(7)}
    report = load_torch_state_dict(model, sd)
    assert report.ok
    assert any("epsilon=0.001" in n for n in report.notes)
    np.testing.assert_array_equal(model.layers[1].state["moving_variance"], 2.0)


def test_conv_transpose_embedding_layernorm_match_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(5)
    deconv = nn.ConvTranspose2d(3, 2, 3, stride=2).eval()
    model = pydl.Sequential([L.Conv2DTranspose(2, 3, strides=2, input_shape=(3, 5, 5))])
    assert load_torch_state_dict(model, deconv.state_dict()).ok
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 5)).astype(np.float32)
    with torch.no_grad():
        want = deconv(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-4, atol=1e-5)

    class Tok(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.norm = nn.LayerNorm(6)
            self.out = nn.Linear(6, 4)

        def forward(self, t):
            return self.out(self.norm(self.emb(t)))

    net = Tok().eval()
    with torch.no_grad():
        net.norm.weight.uniform_(0.5, 1.5)
        net.norm.bias.uniform_(-0.5, 0.5)
    model = pydl.Sequential([L.Embedding(20, 6, input_shape=(7,)), L.LayerNormalization(epsilon=1e-5), L.Dense(4)])
    assert load_torch_state_dict(model, net.state_dict()).ok
    tokens = np.random.default_rng(7).integers(0, 20, (3, 7))
    with torch.no_grad():
        want = net(torch.tensor(tokens)).numpy()
    np.testing.assert_allclose(model.predict(tokens, verbose=0), want, rtol=1e-4, atol=1e-5)


def test_numpy_state_dict_without_torch():
    rng = np.random.default_rng(8)
    W1, b1 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    W2, b2 = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    model = pydl.Sequential([L.Dense(4, activation="relu", input_shape=(3,)), L.Dense(2)])
    report = load_torch_state_dict(model, {"fc1.weight": W1, "fc1.bias": b1, "fc2.weight": W2, "fc2.bias": b2})
    assert report.ok and len(report.loaded) == 4
    x = rng.standard_normal((5, 3)).astype(np.float32)
    want = np.maximum(x @ W1.T + b1, 0) @ W2.T + b2
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    assert report.as_dict()["unused_torch_keys"] == []


def test_mismatches_reported_and_strict_raises_without_writing():
    rng = np.random.default_rng(9)
    model = pydl.Sequential([L.Dense(4, input_shape=(3,)), L.Dense(2)])
    before = [w.copy() for w in model.get_weights()]
    sd = {"a.weight": rng.standard_normal((4, 3)), "a.bias": rng.standard_normal(4),
          "b.weight": rng.standard_normal((2, 5)), "b.bias": rng.standard_normal(2),
          "c.weight": rng.standard_normal((7, 7))}
    with pytest.raises(ValueError) as exc:
        load_torch_state_dict(model, sd)
    msg = str(exc.value)
    assert "b.weight (2, 5)" in msg and "shapes do not match" in msg
    assert "torch key not loaded: c.weight (7, 7)" in msg
    assert f"pydl weight not set: {model.layers[1].name}/W (4, 2)" in msg
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    report = load_torch_state_dict(model, sd, strict=False)
    assert not report.ok
    assert ("c.weight", (7, 7)) in report.unused_torch_keys
    assert (f"{model.layers[1].name}/W", (4, 2)) in report.missing_pydl_weights
    np.testing.assert_allclose(model.layers[0].params["W"], sd["a.weight"].T.astype(np.float32))
    np.testing.assert_allclose(model.layers[1].params["b"], sd["b.bias"].astype(np.float32))
    np.testing.assert_array_equal(model.layers[1].params["W"], before[2])


def test_too_few_torch_modules_and_bad_input():
    model = pydl.Sequential([L.Dense(4, input_shape=(3,)), L.Dense(2)])
    with pytest.raises(ValueError, match="pydl weight not set"):
        load_torch_state_dict(model, {"fc.weight": np.zeros((4, 3)), "fc.bias": np.zeros(4)})
    with pytest.raises(TypeError, match="mapping"):
        load_torch_state_dict(model, [np.zeros(3)])
    with pytest.raises(TypeError, match="not an array"):
        load_torch_state_dict(model, {"fc.weight": object()})
    with pytest.raises(ValueError, match="build the model"):
        load_torch_state_dict(pydl.Sequential([L.Dense(2)]), {})


def test_recurrent_biases_of_two_shapes_and_non_real_entries_are_refused():
    # NumPy state dicts: no torch needed
    m = pydl.Sequential([L.LSTM(5, input_shape=(7, 3))])
    sd = {"weight_ih_l0": np.zeros((20, 3), np.float32), "weight_hh_l0": np.zeros((20, 5), np.float32),
          "bias_ih_l0": np.zeros(20, np.float32), "bias_hh_l0": np.zeros(20, np.float32)}
    load_torch_state_dict(m, sd)
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(ValueError, match=r"bias_ih_l0 \(20,\) and bias_hh_l0 \(3,\) must have one shape"):
        load_torch_state_dict(m, {**sd, "bias_hh_l0": np.ones(3, np.float32)})
    for bad in (np.zeros(20, np.complex64), np.array(["a"] * 20), np.zeros(20, bool)):
        with pytest.raises(TypeError, match=r"state_dict\['bias_hh_l0'\] must hold real numbers"):
            load_torch_state_dict(m, {**sd, "bias_hh_l0": bad})
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)
