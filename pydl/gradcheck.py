"""Finite-difference check of a layer's or a model's backward pass, in float64.

    errors = pydl.gradcheck(Dense(5, activation="tanh"), x)            # projection loss
    errors = pydl.gradcheck(model, x, y, loss="sparse_categorical_crossentropy")
    errors = pydl.gradcheck(Add(), [a, b])                             # a multi-input layer
    errors = pydl.gradcheck(model, [x1, x2], [y1, y2], loss=["mse", "mae"], loss_weights=[1, 0.5])

Any model works (Sequential, functional, subclassed; shared layers, several inputs and outputs):
it runs through the model's own graph, so a layer used twice is checked once, against the sum of
its two uses. The parameters and state of every layer are swapped for float64 copies for the
duration of the check (the originals are put back afterwards, untouched). The scalar checked is
  f = sum_k sum(output_k * r_k)    r_k ~ N(0, 1) drawn from `seed`, when y is None, or
  f = sum_k w_k loss_k(y_k, output_k)  otherwise (softmax + cross-entropy fused as in fit),
plus every layer's regularization penalty. dL/dx for every input and every grads[k] are compared
with central differences (f(w + eps) - f(w - eps)) / 2 eps, element by element.

Stochastic layers replay the same randomness on every forward pass (the global generator and
each layer's own generator are rewound), so Dropout is checked with a fixed mask.

Returns {"x": max_abs_err (or "x:<input name>" per input of a multi-input model, "x0", "x1", ...
for a multi-input layer), "<layer>/<param>": max_abs_err, ...}. An element fails when
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


def _as64(x, who="x") -> np.ndarray:
    a = np.array(x, dtype=np.float64)  # a private copy, perturbed in place
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"[gradcheck] {who} must hold at least one sample, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"[gradcheck] {who} contains NaN or Inf")
    return a


def _resolve_loss(loss):
    if isinstance(loss, dict):
        return {k: None if v is None else _losses.get(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [None if v is None else _losses.get(v) for v in loss]
    return _losses.get(loss)


def gradcheck(target, x, y=None, loss="mse", eps=1e-6, rtol=1e-4, atol=1e-6, seed=0, training=True,
              loss_weights=None) -> dict:
    """Check `target`'s (a Layer or any Model) gradients by central differences; see the module doc."""
    from .model import Model

    if isinstance(target, Model):
        return _check_model(target, x, y, loss, loss_weights, eps, rtol, atol, seed, training)
    if isinstance(target, Layer):
        return _check_layer(target, x, y, loss, eps, rtol, atol, seed, training)
    raise TypeError(f"[gradcheck] expected a pydl Layer or Model, got {type(target).__name__}")


def _compare(checks, f, eps, rtol, atol) -> dict:
    results, failures = {}, []
    for name, analytic, w in checks:
        if analytic.shape != w.shape:
            raise AssertionError(f"[gradcheck] gradient for {name} has shape {analytic.shape}, expected {w.shape}")
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


class _Swap:
    """float64 copies of every layer's params and state, the randomness rewound per forward."""

    def __init__(self, layers):
        self.layers = layers
        self.saved = [(l, l.params, l.state, l.need_input_grad, l.grads) for l in layers]
        self.global_state = get_rng().bit_generator.state
        self.layer_rng = [l.get_rng_state() for l in layers]
        for l in layers:
            l.params = {k: np.array(v, dtype=np.float64) for k, v in l.params.items()}
            l.state = {k: np.array(v, dtype=np.float64) for k, v in l.state.items()}
            l.need_input_grad = True
            l.grads = {}
        self.states0 = [{k: v.copy() for k, v in l.state.items()} for l in layers]

    def rewind(self):
        get_rng().bit_generator.state = self.global_state
        for l, s, st in zip(self.layers, self.layer_rng, self.states0):
            l.set_rng_state(s)
            for k, v in st.items():
                l.state[k][...] = v

    def param_checks(self):
        checks = []
        for l in self.layers:
            for k, p in l.params.items():
                if k not in l.grads:
                    raise AssertionError(f"[gradcheck] layer '{l.name}' filled no gradient for {k!r}")
                checks.append((f"{l.name}/{k}", np.array(l.grads[k], dtype=np.float64), p))
        return checks

    def restore(self):
        for l, params, state, need, grads in self.saved:
            l.params, l.state, l.need_input_grad = params, state, need
            l.grads = {}
        get_rng().bit_generator.state = self.global_state
        for l, s in zip(self.layers, self.layer_rng):
            l.set_rng_state(s)


def _check_model(model, x, y, loss, loss_weights, eps, rtol, atol, seed, training) -> dict:
    if not model.built:
        xs0 = x if isinstance(x, (list, tuple)) and len(x) > 1 else [x]
        shapes = [(None,) + np.shape(a)[1:] for a in xs0]
        model.build(shapes if len(shapes) > 1 else shapes[0])
    if not model.layers:
        raise ValueError("[gradcheck] the model has no layers")
    n_in = len(model._inputs)
    if n_in > 1:
        if isinstance(x, dict):
            x = [x[k] for k in model.input_names]
        if not isinstance(x, (list, tuple)) or len(x) != n_in:
            raise ValueError(f"[gradcheck] the model has {n_in} inputs; pass x as a list of {n_in} arrays")
        xs = [_as64(a, f"x[{i}]") for i, a in enumerate(x)]
    else:
        xs = [_as64(x)]
    plan = None
    if y is not None:
        plan = model._make_output_plan(_resolve_loss(loss), loss_weights)
    swap = _Swap(model.layers)
    try:
        ys = None if y is None else model._prepare_y(y, xs[0].shape[0], "gradcheck", plan=plan)
        bplan = model._backward_plan(force_all=True, out_plan=plan if plan is not None else
                                     [(None, 1.0, False, [])] * len(model._outputs))
        rs = None

        def forward():
            swap.rewind()
            return model._run_forward(xs, training)

        def objective(vals, need_grad):
            nonlocal rs
            reg = model.regularization_loss()
            if ys is None:
                outs = [vals[s] for s in model._output_slots]
                if rs is None:
                    rng = np.random.default_rng(seed)
                    rs = [rng.standard_normal(o.shape) for o in outs]
                seeds = {}
                for s, r in zip(model._output_slots, rs):
                    seeds[s] = r if s not in seeds else seeds[s] + r
                return float(sum(np.sum(o * r) for o, r in zip(outs, rs))) + reg, seeds, {}
            total, _, seeds, fused = model._losses(vals, ys, plan, need_grad=need_grad)
            return total + reg, seeds, fused

        _, seeds, fused = objective(forward(), True)
        grads = model._run_backward(bplan, seeds, fused)
        for l in model.layers:
            l.add_regularization_grads()

        def f():
            return objective(forward(), False)[0]

        checks = []
        for k, (t, a) in enumerate(zip(model._inputs, xs)):
            g = grads[model._input_slots[k]]
            g = np.zeros_like(a) if g is None else np.asarray(g, dtype=np.float64)
            checks.append(("x" if n_in == 1 else f"x:{t.name}", g, a))
        checks += swap.param_checks()
        return _compare(checks, f, eps, rtol, atol)
    finally:
        swap.restore()
        model._bplan = None


def _check_layer(layer, x, y, loss, eps, rtol, atol, seed, training) -> dict:
    multi = bool(layer.multi_input)
    xs = [_as64(a, f"x[{i}]") for i, a in enumerate(x)] if multi else [_as64(x)]
    if not layer.built:
        shapes = [(None,) + a.shape[1:] for a in xs]
        layer.build(shapes if multi else shapes[0])
    loss_obj = None if y is None else _losses.get(loss)
    y_arr = None
    if y is not None:
        y_arr = np.asarray(y)
        if loss_obj.kind != "sparse_categorical_crossentropy":
            y_arr = y_arr.astype(np.float64)
    swap = _Swap([layer])
    try:
        r = None

        def forward():
            swap.rewind()
            return layer.forward(xs if multi else xs[0], training=training)

        def objective(out):
            nonlocal r
            reg = layer.regularization_loss()
            if y_arr is None:
                if r is None:
                    r = np.random.default_rng(seed).standard_normal(np.shape(out))
                return float(np.sum(out * r)) + reg, r
            value, grad = loss_obj.forward_backward(y_arr, out)
            return value + reg, grad

        _, grad = objective(forward())
        dx = layer.backward(grad)
        layer.add_regularization_grads()

        def f():
            return objective(forward())[0]

        if multi:
            checks = [(f"x{i}", np.zeros_like(a) if d is None else np.asarray(d, dtype=np.float64), a)
                      for i, (d, a) in enumerate(zip(dx, xs))]  # None: no gradient (a mask input)
        else:
            checks = [("x", np.asarray(dx, dtype=np.float64), xs[0])]
        checks += swap.param_checks()
        return _compare(checks, f, eps, rtol, atol)
    finally:
        swap.restore()


__all__ = ["gradcheck"]
