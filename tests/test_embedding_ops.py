"""pydl.ops.embedding_forward / embedding_backward on the CPU: values against plain loops (and
PyTorch's embedding where importable), accumulation into `out`, and bad input."""
import numpy as np
import pytest

from pydl import ops


def _loops_backward(dy, ids, V):
    D = dy.shape[-1]
    want = np.zeros((V, D), np.float64)
    for r, i in enumerate(ids.reshape(-1)):
        want[i] += dy.reshape(-1, D)[r]
    return want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (0, 3)])
def test_forward_backward_values(dtype, shape, rng):
    V, D = 11, 6
    W = rng.standard_normal((V, D)).astype(dtype)
    ids = rng.integers(0, V, shape)
    y = ops.embedding_forward(ids, W)
    assert y.shape == shape + (D,) and y.dtype == dtype
    for idx in np.ndindex(*shape):
        np.testing.assert_array_equal(y[idx], W[ids[idx]])
    dy = rng.standard_normal(shape + (D,)).astype(dtype)
    dW = ops.embedding_backward(dy, ids, W.shape)
    assert dW.shape == (V, D) and dW.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(dW, _loops_backward(dy.astype(np.float64), ids, V), rtol=tol, atol=tol)
    # V alone: D comes from dy
    np.testing.assert_array_equal(ops.embedding_backward(dy, ids, V), dW)


def test_repeated_ids_add_up_and_out_accumulates(rng):
    W = rng.standard_normal((4, 3))
    ids = np.array([[1, 1, 1], [3, 1, 0]])
    dy = rng.standard_normal((2, 3, 3))
    out = np.full((4, 3), 0.5)
    res = ops.embedding_backward(dy, ids, W.shape, out=out)
    assert res is out
    want = 0.5 + _loops_backward(dy, ids, 4)
    np.testing.assert_allclose(out, want, rtol=1e-14)
    assert np.all(out[2] == 0.5)  # never looked up: untouched
    # dy is cast to out's dtype
    out32 = np.zeros((4, 3), np.float32)
    ops.embedding_backward(dy, ids, (4, 3), out=out32)
    np.testing.assert_allclose(out32, _loops_backward(dy, ids, 4), rtol=1e-6)


def test_whole_number_float_ids(rng):
    W = rng.standard_normal((5, 2)).astype(np.float32)
    ids = np.array([[0, 4, 2]])
    np.testing.assert_array_equal(ops.embedding_forward(ids.astype(np.float64), W), ops.embedding_forward(ids, W))


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    W = rng.standard_normal((9, 5))
    ids = rng.integers(0, 9, (4, 6))
    dy = rng.standard_normal((4, 6, 5))
    Wt = torch.tensor(W, requires_grad=True)
    yt = torch.nn.functional.embedding(torch.tensor(ids), Wt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(ops.embedding_forward(ids, W), yt.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(ops.embedding_backward(dy, ids, W.shape), Wt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_bad_ids():
    W = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"\[embedding_forward\] id 5 is out of range for input_dim=5 .*"
                                         r"table of shape \(5, 2\); ids shape \(1, 3\)"):
        ops.embedding_forward(np.array([[0, 5, 1]]), W)
    with pytest.raises(ValueError, match=r"id -1 is out of range"):
        ops.embedding_forward(np.array([-1, 0]), W)
    with pytest.raises(ValueError, match=r"id \d+ is out of range"):
        ops.embedding_forward(np.array([2**63 + 5], np.uint64), W)
    with pytest.raises(ValueError, match="whole-number"):
        ops.embedding_forward(np.array([0.5, 1.0]), W)
    with pytest.raises(ValueError, match="whole-number"):
        ops.embedding_forward(np.array([np.nan, 1.0]), W)
    with pytest.raises(ValueError, match="whole-number"):
        ops.embedding_forward(np.array([np.inf]), W)
    for bad in (np.array([True, False]), np.array(["a", "b"]), np.array([1 + 0j])):
        with pytest.raises(TypeError, match=r"\[embedding_forward\] ids must be integer indices"):
            ops.embedding_forward(bad, W)
    with pytest.raises(ValueError, match=r"\[embedding_backward\] id 7 is out of range for input_dim=5"):
        ops.embedding_backward(np.zeros((1, 2)), np.array([7]), (5, 2))
    with pytest.raises(ValueError, match=r"\[my layer\] id 9"):
        ops.embedding_forward(np.array([9]), W, op="my layer")


def test_bad_table_dy_out():
    ids = np.array([[0, 1]])
    with pytest.raises(ValueError, match=r"table has 1 dims \(5,\), expected 2"):
        ops.embedding_forward(ids, np.zeros(5))
    with pytest.raises(TypeError, match="table"):
        ops.embedding_forward(ids, np.array([["a"]]))
    with pytest.raises(ValueError, match=r"dy has shape \(1, 2, 3\), expected \(1, 2, 2\)"):
        ops.embedding_backward(np.zeros((1, 2, 3)), ids, (5, 2))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 2\), expected \(1, 2, 2\)"):
        ops.embedding_backward(np.zeros((2, 2)), ids, 5)
    with pytest.raises(ValueError, match="table_shape"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, (5, 2, 1))
    with pytest.raises(ValueError, match="table_shape"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, "5")
    with pytest.raises(ValueError, match="V >= 1"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, (0, 2))
    with pytest.raises(ValueError, match=r"out has shape \(4, 2\), expected \(5, 2\)"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, (5, 2), out=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="out has dtype int64"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, (5, 2), out=np.zeros((5, 2), np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, (5, 2), out=np.zeros((2, 5)).T)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        ops.embedding_backward(np.zeros((1, 2, 2)), ids, (5, 2), out=[[0.0] * 2] * 5)


def test_layer_uses_ops_and_keeps_behaviour(rng):
    from pydl.layers import Embedding
    emb = Embedding(6, 3, mask_zero=True, name="tok")
    x = np.array([[0, 2, 5], [5, 5, 1]])
    y = emb.forward(x)
    np.testing.assert_array_equal(y, ops.embedding_forward(x, emb.params["W"]))
    np.testing.assert_array_equal(emb.compute_mask(x), x != 0)
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    emb.backward(dy)
    emb.backward(dy)  # a second call accumulates
    np.testing.assert_allclose(emb.grads["W"], 2 * _loops_backward(dy.astype(np.float64), x, 6), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[Embedding tok\] id 6 is out of range for input_dim=6"):
        emb.forward(np.array([[6]]))
