"""Finite-difference check of a layer's or a model's backward pass, in float64.

    errors = pydl.gradcheck(Dense(5, activation="tanh"), x)            # projection loss
    errors = pydl.gradcheck(model, x, y, loss="sparse_categorical_crossentropy")

The parameters and state of every layer are swapped for float64 copies for the duration of
the check (the originals are put back afterwards, untouched). The scalar checked is
  f = sum(output * r)          r ~ N(0, 1) drawn from `seed`, when y is None, or
  f = loss(y, output)          otherwise (a model fuses softmax + cross-entropy as in fit),
plus every layer's regularization penalty. backward's dL/dx and every grads[k] are compared
with central differences (f(w + eps) - f(w - eps)) / 2 eps, element by element.

Stochastic layers replay the same randomness on every forward pass (the global generator and
each layer's own generator are rewound), so Dropout is checked with a fixed mask.

Returns {"x": max_abs_err, "<layer>/<param>": max_abs_err, ...}. An element fails when
|analytic - numeric| > atol + rtol * |numeric|; any failure raises AssertionError naming the
tensor, the worst element and both values.
"""
from __future__ import annotations

import numpy as np

from . import losses as _losses
from .layers.base import Layer
from .random import get_rng


def _central_diff(f, w: np.ndarray, eps: float) -> np.ndarray:
    g = np.zeros_like(w)
    flat, gflat = w.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2.0 * eps)
    return g


def gradcheck(target, x, y=None, loss="mse", eps=1e-6, rtol=1e-4, atol=1e-6, seed=0, training=True) -> dict:
    """Check `target`'s (a Layer or a Sequential) gradients by central differences; see the module doc."""
    from .model import Sequential

    if isinstance(target, Sequential):
        model, layers = target, target.layers
        if not layers:
            raise ValueError("[gradcheck] the model has no layers")
    elif isinstance(target, Layer):
        model, layers = None, [target]
    else:
        raise TypeError(f"[gradcheck] expected a pydl Layer or Sequential, got {type(target).__name__}")
    x64 = np.array(x, dtype=np.float64)  # a private copy, perturbed in place
    if x64.ndim < 1 or x64.shape[0] == 0:
        raise ValueError(f"[gradcheck] x must hold at least one sample, got shape {x64.shape}")
    if not np.all(np.isfinite(x64)):
        raise ValueError("[gradcheck] x contains NaN or Inf")
    loss_obj = None if y is None else _losses.get(loss)

    if model is not None:
        if not model.built:
            model.build((None,) + x64.shape[1:])
    elif not target.built:
        target.build((None,) + x64.shape[1:])

    saved = [(l, l.params, l.state, l.need_input_grad) for l in layers]
    global_state = get_rng().bit_generator.state
    layer_rng = [l.get_rng_state() for l in layers]
    try:
        for l in layers:
            l.params = {k: np.array(v, dtype=np.float64) for k, v in l.params.items()}
            l.state = {k: np.array(v, dtype=np.float64) for k, v in l.state.items()}
            l.need_input_grad = True
        fused = model is not None and loss_obj is not None and model._fused(loss_obj)
        y_arr = None
        if y is not None:
            if model is not None:
                y_arr = model._prepare_y(y, x64.shape[0], "gradcheck", loss=loss_obj)
            else:
                y_arr = np.asarray(y)
                if loss_obj.kind != "sparse_categorical_crossentropy":
                    y_arr = y_arr.astype(np.float64)
        # Every forward pass in the check sees the same state: moving statistics and randomness.
        states0 = [{k: v.copy() for k, v in l.state.items()} for l in layers]

        def forward():
            get_rng().bit_generator.state = global_state
            for l, s, st in zip(layers, layer_rng, states0):
                l.set_rng_state(s)
                for k, v in st.items():
                    l.state[k][...] = v
            out = x64
            for l in layers:
                out = l.forward(out, training=training)
            return out

        r = None

        def objective(out):
            nonlocal r
            reg = sum(l.regularization_loss() for l in layers)
            if y_arr is None:
                if r is None:
                    r = np.random.default_rng(seed).standard_normal(out.shape)
                return float(np.sum(out * r)) + reg, r
            if model is not None:
                value, grad = model._loss_grad(loss_obj, y_arr, out, fused)
            else:
                value, grad = loss_obj.forward_backward(y_arr, out)
            return value + reg, grad

        out = forward()
        _, grad = objective(out)
        if fused:
            grad = layers[-1].backward_logits(grad)
            rest = layers[:-1]
        else:
            rest = layers
        for l in reversed(rest):
            grad = l.backward(grad)
        dx = grad
        for l in layers:
            l.add_regularization_grads()

        def f():
            return objective(forward())[0]

        checks = [("x", np.asarray(dx, dtype=np.float64), x64)]
        for l in layers:
            for k, p in l.params.items():
                if k not in l.grads:
                    raise AssertionError(f"[gradcheck] layer '{l.name}' filled no gradient for {k!r}")
                checks.append((f"{l.name}/{k}", np.array(l.grads[k], dtype=np.float64), p))
        results, failures = {}, []
        for name, analytic, w in checks:
            if analytic.shape != w.shape:
                raise AssertionError(f"[gradcheck] gradient for {name} has shape {analytic.shape}, "
                                     f"expected {w.shape}")
            numeric = _central_diff(f, w, eps)
            err = np.abs(analytic - numeric)
            results[name] = float(err.max()) if err.size else 0.0
            tol = atol + rtol * np.abs(numeric)
            bad = ~(err <= tol)
            if bad.any():
                i = np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), err.shape)
                failures.append(f"{name}{list(i)}: analytic {analytic[i]:.8g}, numeric {numeric[i]:.8g} "
                                f"(max abs err {results[name]:.3e})")
        if failures:
            raise AssertionError("[gradcheck] gradient mismatch: " + "; ".join(failures))
        return results
    finally:
        for l, params, state, need in saved:
            l.params, l.state, l.need_input_grad = params, state, need
            l.grads = {}
        get_rng().bit_generator.state = global_state
        for l, s in zip(layers, layer_rng):
            l.set_rng_state(s)


__all__ = ["gradcheck"]
