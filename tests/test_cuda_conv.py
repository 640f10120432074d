"""conv2d / conv2d_backward on CuPy arrays (implicit-GEMM kernels of pydl/cuda/kernels/conv.cu)
against pydl's CPU op on the same inputs, PyTorch-free finite differences, bad inputs, and Conv2D /
Conv2DTranspose models trained on CPU and GPU from the same weights. Shapes are small on purpose."""
import numpy as np
import pytest

import pydl
from cuda_support import cp, needs_cuda, poisoned
from pydl.ops import conv as conv_ops

pytestmark = needs_cuda

# (x shape, w shape, stride, padding, dilation): odd sizes, C = 1, K = 1, strides 1..3, dilation 2,
# non-square filters, asymmetric padding, 'same' / 'valid', N = 1, K and C*R*S past one 64 tile
CASES = [
    ((2, 3, 7, 6), (5, 3, 3, 3), 1, "same", 1),
    ((1, 1, 9, 11), (1, 1, 2, 3), (2, 3), (0, 1, 2, 0), 1),
    ((2, 4, 8, 9), (3, 4, 3, 2), (3, 2), ((1, 2), (0, 1)), 2),
    ((1, 5, 10, 7), (70, 5, 1, 1), 1, "valid", 1),
    ((3, 9, 6, 5), (4, 9, 3, 3), (1, 2), "same", (2, 1)),
    ((1, 2, 13, 12), (66, 2, 3, 3), 2, 1, 1),
    ((2, 8, 5, 5), (1, 8, 5, 3), 1, (2, 1), 1),
]


def _rand(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_matches_cpu(case, dtype):
    xs, ws, st, pad, dl = CASES[case]
    x, w, b = _rand(xs, dtype, 1), _rand(ws, dtype, 2), _rand(ws[:1], dtype, 3)
    for bias, act in ((None, None), (b, "relu"), (b, "linear")):
        want = conv_ops.conv2d(x, w, bias, st, pad, dl, activation=act)
        got = conv_ops.conv2d(cp.asarray(x), cp.asarray(w), None if bias is None else cp.asarray(bias), st, pad,
                              dl, activation=act)
        assert isinstance(got, cp.ndarray) and got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(cp.asnumpy(got), want, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_backward_matches_cpu(case, dtype):
    xs, ws, st, pad, dl = CASES[case]
    x, w = _rand(xs, dtype, 4), _rand(ws, dtype, 5)
    yshape = conv_ops.conv2d_output_shape(xs, ws, st, pad, dl)
    dy = _rand(yshape, dtype, 6)
    want = conv_ops.conv2d_backward(dy, x, w, st, pad, dl)
    got = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), st, pad, dl)
    assert len(got) == 3
    for g, r in zip(got, want):
        assert isinstance(g, cp.ndarray) and g.dtype == dtype and g.shape == r.shape
        np.testing.assert_allclose(cp.asnumpy(g), r, **_tol(dtype))
    dx, dw, db = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), st, pad, dl, need_dx=False,
                                          has_bias=False)
    assert dx is None and db is None
    np.testing.assert_allclose(cp.asnumpy(dw), want[1], **_tol(dtype))


def test_weight_gradient_split_reduction():
    """Enough positions for the reduction over N*P*Q to be split: same result as the CPU, and the
    same bits on a second run (no atomics)."""
    x, w = _rand((4, 3, 20, 20), np.float32, 7), _rand((2, 3, 3, 3), np.float32, 8)
    dy = _rand((4, 2, 20, 20), np.float32, 9)
    from pydl.cuda import conv as cuda_conv
    splits, _ = cuda_conv.split_plan(4 * 400, 2, 27, cuda_conv.sm_count())
    assert splits > 1
    want = conv_ops.conv2d_backward(dy, x, w, 1, "same")
    a = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), 1, "same")
    b = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), 1, "same")
    for g, r in zip(a, want):
        np.testing.assert_allclose(cp.asnumpy(g), r, rtol=1e-4, atol=1e-4)
    for g1, g2 in zip(a, b):
        assert bool((g1 == g2).all())


# K and C just past 128 with N*P*Q, N*H*W and C*R*S (odd) past one tile: partial tiles along both
# dimensions of every product in the 128x128, 64x256 and 64x64 tiles; the second is strided
TILE_CASES = [
    ((2, 29, 9, 8), (131, 29, 3, 3), 1, "same", 1),
    ((1, 130, 7, 6), (70, 130, 3, 3), (2, 1), (1, 1, 0, 2), (1, 2)),
]


@pytest.mark.parametrize("tile", ["l", "w", "s"])
@pytest.mark.parametrize("case", range(len(TILE_CASES)))
def test_each_tile_matches_cpu(case, tile, monkeypatch):
    from pydl.cuda import conv as cuda_conv
    monkeypatch.setattr(cuda_conv, "FORCE_TILE", tile)
    xs, ws, st, pad, dl = TILE_CASES[case]
    x, w, b = _rand(xs, np.float32, 21), _rand(ws, np.float32, 22), _rand(ws[:1], np.float32, 23)
    want = conv_ops.conv2d(x, w, b, st, pad, dl, activation="relu")
    got = conv_ops.conv2d(cp.asarray(x), cp.asarray(w), cp.asarray(b), st, pad, dl, activation="relu")
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-4, atol=1e-4)
    assert 0 < float((want == 0).mean()) < 1  # relu clipped some, not all
    dy = _rand(want.shape, np.float32, 24)
    want = conv_ops.conv2d_backward(dy, x, w, st, pad, dl)
    got = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), st, pad, dl)
    for g, r in zip(got, want):
        np.testing.assert_allclose(cp.asnumpy(g), r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", ["l", "w"])
def test_large_tile_weight_gradient_split(tile, monkeypatch):
    """The split reduction of the weight gradient in a large tile: same as the CPU, same bits twice;
    float64 keeps the 64x64 tile whatever is forced."""
    from pydl.cuda import conv as cuda_conv
    monkeypatch.setattr(cuda_conv, "FORCE_TILE", tile)
    x, w = _rand((2, 15, 20, 20), np.float32, 25), _rand((130, 15, 3, 3), np.float32, 26)
    dy = _rand((2, 130, 20, 20), np.float32, 27)
    assert cuda_conv.choose_tile(130, 135, np.float32, cuda_conv.sm_count()) == tile
    assert cuda_conv.choose_tile(130, 135, np.float64, cuda_conv.sm_count()) == "s"
    splits, _ = cuda_conv.split_plan(2 * 400, 130, 135, cuda_conv.sm_count(), tile)
    assert splits == 3
    want = conv_ops.conv2d_backward(dy, x, w, 1, "same")
    a = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), 1, "same", need_dx=False)
    c = conv_ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), 1, "same", need_dx=False)
    assert a[0] is None
    np.testing.assert_allclose(cp.asnumpy(a[1]), want[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(a[2]), want[2], rtol=1e-4, atol=1e-4)
    assert bool((a[1] == c[1]).all())
    d64 = conv_ops.conv2d_backward(cp.asarray(dy.astype(np.float64)), cp.asarray(x.astype(np.float64)),
                                   cp.asarray(w.astype(np.float64)), 1, "same", need_dx=False)
    np.testing.assert_allclose(cp.asnumpy(d64[1]), want[1], rtol=1e-4, atol=1e-4)


def test_float64_gradient_by_finite_differences():
    rng = np.random.default_rng(10)
    x = cp.asarray(rng.standard_normal((1, 2, 5, 4)))
    w = cp.asarray(rng.standard_normal((3, 2, 2, 3)))
    b = cp.asarray(rng.standard_normal(3))
    st, pad, dl = (2, 1), (1, 0, 2, 1), (1, 2)
    g = cp.asarray(rng.standard_normal(conv_ops.conv2d_output_shape(x.shape, w.shape, st, pad, dl)))

    def loss(xv, wv, bv):
        return float((conv_ops.conv2d(xv, wv, bv, st, pad, dl) * g).sum())

    dx, dw, db = conv_ops.conv2d_backward(g, x, w, st, pad, dl)
    eps = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        flat = arr.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 7)):
            old = float(flat[i])
            flat[i] = old + eps
            up = loss(x, w, b)
            flat[i] = old - eps
            down = loss(x, w, b)
            flat[i] = old
            assert (up - down) / (2 * eps) == pytest.approx(float(grad.reshape(-1)[i]), rel=1e-6, abs=1e-8)


def test_batch_zero_and_out():
    x = cp.zeros((0, 3, 5, 5), cp.float32)
    w = cp.asarray(_rand((4, 3, 3, 3), np.float32, 11))
    y = conv_ops.conv2d(x, w, padding=1)
    assert y.shape == (0, 4, 5, 5)
    dx, dw, db = conv_ops.conv2d_backward(cp.zeros((0, 4, 5, 5), cp.float32), x, w, padding=1)
    assert dx.shape == (0, 3, 5, 5) and float(cp.abs(dw).max()) == 0.0 and float(cp.abs(db).max()) == 0.0
    xs = _rand((2, 3, 6, 5), np.float32, 12)
    out = poisoned((2, 4, 6, 5), cp.float32)
    got = conv_ops.conv2d(cp.asarray(xs), w, padding="same", activation="relu", out=out)
    assert got is out
    np.testing.assert_allclose(cp.asnumpy(out), conv_ops.conv2d(xs, cp.asnumpy(w), padding="same", activation="relu"),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algo", ["implicit_gemm", "winograd_f2", "winograd_f4"])
def test_views_and_int_inputs_are_converted(algo):
    x = _rand((2, 3, 8, 8), np.float32, 13)
    w = _rand((4, 3, 3, 3), np.float32, 14)
    xv = cp.asarray(x)[:, :, ::2, ::2]  # a strided view: copied, not read through raw pointers
    got = conv_ops.conv2d(xv, cp.asarray(w), padding=1, algo=algo)
    np.testing.assert_allclose(cp.asnumpy(got), conv_ops.conv2d(x[:, :, ::2, ::2], w, padding=1), rtol=1e-4,
                               atol=1e-4)
    wv = cp.asarray(np.repeat(w, 2, axis=0))[::2]  # a strided view of the filters (each one twice)
    got = conv_ops.conv2d(cp.asarray(x), wv, padding=1, algo=algo)
    np.testing.assert_allclose(cp.asnumpy(got), conv_ops.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    xi = np.arange(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) % 5
    got = conv_ops.conv2d(cp.asarray(xi), cp.asarray(w), algo=algo)
    assert got.dtype == np.float32
    np.testing.assert_allclose(cp.asnumpy(got), conv_ops.conv2d(xi, w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("algo", ["winograd_f2", "winograd_f4"])
def test_bad_inputs_raise_on_winograd(algo):
    x = cp.ones((2, 3, 6, 6), cp.float32)
    w = cp.ones((4, 3, 3, 3), cp.float32)
    with pytest.raises(ValueError, match=r"out has shape"):
        conv_ops.conv2d(x, w, padding=1, algo=algo, out=cp.empty((2, 4, 4, 4), cp.float32))
    with pytest.raises(ValueError, match=r"out has dtype"):
        conv_ops.conv2d(x, w, padding=1, algo=algo, out=cp.empty((2, 4, 6, 6), cp.float64))
    with pytest.raises(ValueError, match=r"C-contiguous"):
        conv_ops.conv2d(x, w, padding=1, algo=algo, out=cp.empty((2, 4, 6, 12), cp.float32)[:, :, :, ::2])
    with pytest.raises(ValueError, match=r"channel mismatch"):
        conv_ops.conv2d(x, cp.ones((4, 2, 3, 3), cp.float32), algo=algo)
    with pytest.raises(ValueError, match=r"winograd.*(stride|3x3)"):
        conv_ops.conv2d(x, w, stride=2, algo=algo)
    with pytest.raises(ValueError, match=r"winograd.*3x3 filter"):
        conv_ops.conv2d(x, cp.ones((4, 3, 5, 5), cp.float32), algo=algo)
    # a failed call leaves nothing behind: the next one is right
    ref = conv_ops.conv2d(x, w, padding=1)
    np.testing.assert_allclose(cp.asnumpy(conv_ops.conv2d(x, w, padding=1, algo=algo)), cp.asnumpy(ref),
                               rtol=1e-5, atol=1e-4)


def test_bad_inputs_raise_like_cpu():
    x = cp.ones((2, 3, 5, 5), cp.float32)
    w = cp.ones((4, 3, 3, 3), cp.float32)
    with pytest.raises(ValueError, match=r"\[conv2d\].*x on cuda, w on cpu"):
        conv_ops.conv2d(x, np.ones((4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[conv2d_backward\].*dy on cpu, x on cuda"):
        conv_ops.conv2d_backward(np.ones((2, 4, 3, 3), np.float32), x, w)
    with pytest.raises(ValueError, match=r"share one dtype"):
        conv_ops.conv2d(x, w.astype(cp.float64))
    with pytest.raises(ValueError, match=r"channel mismatch"):
        conv_ops.conv2d(x, cp.ones((4, 2, 3, 3), cp.float32))
    with pytest.raises(ValueError, match=r"b has shape"):
        conv_ops.conv2d(x, w, cp.ones(3, cp.float32))
    with pytest.raises(ValueError, match=r"activation must be"):
        conv_ops.conv2d(x, w, activation="tanh")
    with pytest.raises(ValueError, match=r"expected \(2, 4, 3, 3\)"):
        conv_ops.conv2d_backward(cp.ones((2, 4, 4, 3), cp.float32), x, w)
    with pytest.raises(ValueError, match=r"out has dtype"):
        conv_ops.conv2d(x, w, out=cp.empty((2, 4, 3, 3), cp.float64))
    with pytest.raises(ValueError, match=r"C-contiguous"):
        conv_ops.conv2d(x, w, out=cp.empty((2, 4, 3, 6), cp.float32)[:, :, :, ::2])
    with pytest.raises(TypeError, match=r"real"):
        conv_ops.conv2d(x.astype(cp.complex64), w)
    with pytest.raises(ValueError, match=r"winograd.*3x3 filter"):
        conv_ops.conv2d(x, cp.ones((4, 3, 2, 2), cp.float32), algo="winograd")
    with pytest.raises(ValueError, match=r"unknown algo"):
        conv_ops.conv2d(x, w, algo="fft")


def test_algo_on_cuda():
    x = cp.asarray(_rand((1, 2, 6, 6), np.float32, 15))
    w = cp.asarray(_rand((3, 2, 3, 3), np.float32, 16))
    ref = conv_ops.conv2d(x, w, padding=1, algo="implicit_gemm")
    for algo in ("auto", "im2col", "direct", "naive"):  # the CPU's names run the implicit GEMM
        assert bool((conv_ops.conv2d(x, w, padding=1, algo=algo) == ref).all()), algo
    for algo in ("winograd", "winograd_f2", "winograd_f4"):
        np.testing.assert_allclose(cp.asnumpy(conv_ops.conv2d(x, w, padding=1, algo=algo)), cp.asnumpy(ref),
                                   rtol=1e-4, atol=1e-4)
    assert conv_ops.conv2d_explain(x.shape, w.shape, padding=1, device="cuda")[0] == "implicit_gemm"


# (x shape, K, padding): output sizes that are and are not multiples of the tile (2, 4), C a multiple
# of 4 or not (the batched GEMM's vector and scalar loads), Q a multiple of 4 or not (vector or
# scalar row stores), asymmetric padding, 'valid', a 1x1 output, N = 1 and K past one 64-row tile
WINO_CASES = [
    ((2, 3, 7, 9), 5, "same"),
    ((1, 8, 8, 8), 4, "same"),
    ((2, 4, 9, 6), 3, "valid"),
    ((3, 5, 6, 11), 2, (0, 2, 1, 0)),
    ((1, 2, 3, 3), 70, "valid"),
    ((2, 12, 10, 12), 8, ((2, 1), (1, 2))),
]


def _wino_tol(dtype, mo, c):
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-10)
    scale = np.sqrt(9 * c)  # the sums' typical size for standard-normal inputs
    return dict(rtol=1e-4, atol=(2e-5 if mo == 2 else 2e-4) * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algo", ["winograd_f2", "winograd_f4"])
@pytest.mark.parametrize("case", range(len(WINO_CASES)))
def test_winograd_matches_float64_reference(case, algo, dtype):
    xs, k, pad = WINO_CASES[case]
    x, w, b = _rand(xs, dtype, 21), _rand((k, xs[1], 3, 3), dtype, 22), _rand((k,), dtype, 23)
    for bias, act in ((None, None), (b, "relu"), (b, "linear")):
        want = conv_ops.conv2d(x.astype(np.float64), w.astype(np.float64),
                               None if bias is None else bias.astype(np.float64), 1, pad, algo="naive",
                               activation=act)
        got = conv_ops.conv2d(cp.asarray(x), cp.asarray(w), None if bias is None else cp.asarray(bias), 1, pad,
                              algo=algo, activation=act)
        assert isinstance(got, cp.ndarray) and got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(cp.asnumpy(got), want, **_wino_tol(dtype, int(algo[-1]), xs[1]))


def test_winograd_writes_every_output_and_honours_out():
    x, w, b = (cp.asarray(_rand(s, np.float32, 24 + i)) for i, s in enumerate([(2, 4, 7, 10), (3, 4, 3, 3), (3,)]))
    for algo in ("winograd_f2", "winograd_f4"):
        out = poisoned((2, 3, 7, 10), np.float32)
        y = conv_ops.conv2d(x, w, b, padding="same", algo=algo, out=out)
        assert y is out and not bool(cp.isnan(out).any())
        ref = conv_ops.conv2d(x, w, b, padding="same", algo="implicit_gemm")
        np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(ref), rtol=1e-4, atol=1e-3)
        empty = conv_ops.conv2d(cp.zeros((0, 4, 7, 10), cp.float32), w, b, padding="same", algo=algo)
        assert empty.shape == (0, 3, 7, 10)
    # NaN and inf in the input reach only the outputs whose windows hold them
    xn = cp.asarray(np.zeros((1, 1, 8, 8), np.float32))
    xn[0, 0, 0, 0] = cp.nan
    y = conv_ops.conv2d(xn, cp.ones((1, 1, 3, 3), cp.float32), padding="valid", algo="winograd_f4")
    bad = cp.asnumpy(cp.isnan(y))[0, 0]
    assert bad[0, 0] and bad.sum() == 1


@pytest.mark.parametrize("algo", ["winograd_f2", "winograd_f4"])
def test_winograd_in_chunks_of_images_matches_one_launch(algo, monkeypatch):
    """A scratch cap smaller than the batch needs: the batch runs in chunks of whole images (and a
    last, shorter chunk) with the same result as one pass."""
    from pydl.cuda import winograd
    x, w, b = (cp.asarray(_rand(s, np.float32, 30 + i)) for i, s in enumerate([(5, 6, 7, 8), (4, 6, 3, 3), (4,)]))
    whole = conv_ops.conv2d(x, w, b, padding="same", algo=algo, activation="relu")
    mo = int(algo[-1])
    per_image = (mo + 2) ** 2 * (6 + 4) * (-(-7 // mo)) * (-(-8 // mo)) * 4
    monkeypatch.setattr(winograd, "SCRATCH_LIMIT", 2 * per_image)  # 2 images per chunk: 2 + 2 + 1
    assert winograd.chunk_images(5, 6, 4, 7, 8, mo, 4) == 2
    out = poisoned((5, 4, 7, 8), np.float32)
    got = conv_ops.conv2d(x, w, b, padding="same", algo=algo, activation="relu", out=out)
    assert got is out
    np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(whole), rtol=1e-6, atol=1e-6)


def test_auto_runs_winograd_for_wide_layers():
    m = conv_ops.CUDA_AUTO_RULE["wino_min_ck"]
    x, w = cp.asarray(_rand((1, m, 8, 8), np.float32, 27)), cp.asarray(_rand((m, m, 3, 3), np.float32, 28))
    assert conv_ops.conv2d_algo(x.shape, w.shape, padding=1, device="cuda") == "winograd_f4"
    got = conv_ops.conv2d(x, w, padding=1)
    np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(conv_ops.conv2d(x, w, padding=1, algo="winograd_f4")),
                               rtol=0, atol=0)
    want = conv_ops.conv2d(cp.asnumpy(x).astype(np.float64), cp.asnumpy(w).astype(np.float64), padding=1,
                           algo="naive")
    np.testing.assert_allclose(cp.asnumpy(got), want, **_wino_tol(np.float32, 4, m))


def _conv_model(transpose=False):
    layers = [pydl.layers.Conv2D(4, 3, padding="same", activation="relu", input_shape=(2, 7, 7)),
              pydl.layers.Conv2D(3, (2, 3), strides=2, activation="tanh")]
    if transpose:
        layers += [pydl.layers.Conv2DTranspose(2, 3, strides=2, padding="same", activation="relu"),
                   pydl.layers.Conv2DTranspose(2, 3, activation="linear")]
    layers += [pydl.layers.Flatten(), pydl.layers.Dense(3, activation="softmax")]
    return pydl.Sequential(layers)


@pytest.mark.parametrize("transpose", [False, True])
def test_conv_model_fit_on_gpu_matches_cpu(transpose):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((24, 2, 7, 7)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    pydl.seed(3)
    cpu = _conv_model(transpose)
    cpu.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.SGD(0.05, momentum=0.9))
    cpu.build((None, 2, 7, 7))
    gpu = _conv_model(transpose)
    gpu.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.SGD(0.05, momentum=0.9))
    gpu.build((None, 2, 7, 7))
    gpu.set_weights(cpu.get_weights())
    gpu.to("cuda")
    assert gpu.layers[0].algo_used == "implicit_gemm" and "cuda" in gpu.layers[0].algo_reason
    h_cpu = cpu.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    h_gpu = gpu.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-4)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=3e-5)
    gpu.to("cpu")
    assert gpu.layers[0].algo_used == cpu.layers[0].algo_used


def test_wide_conv_model_fit_on_gpu_matches_cpu():
    """A Conv2D layer wide enough for the CUDA rule's Winograd: the same fit on both devices."""
    m = conv_ops.CUDA_AUTO_RULE["wino_min_ck"]
    rng = np.random.default_rng(29)
    x = rng.standard_normal((16, m, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def build():
        model = pydl.Sequential([pydl.layers.Conv2D(m, 3, padding="same", activation="relu", input_shape=(m, 6, 6)),
                                 pydl.layers.Flatten(), pydl.layers.Dense(3, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.SGD(0.01))
        model.build((None, m, 6, 6))
        return model

    pydl.seed(5)
    cpu = build()
    gpu = build()
    gpu.set_weights(cpu.get_weights())
    gpu.to("cuda")
    assert gpu.layers[0].algo_used == "winograd_f2" and "Winograd" in gpu.layers[0].algo_reason
    h_cpu = cpu.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    h_gpu = gpu.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-3)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
