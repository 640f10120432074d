"""Float64 NumPy references for the optimizers, written from the Keras 3 update rules.

Independent of pydl: plain formulas over float64 copies. `RefOptimizer(kind, **hp)` mirrors the
constructor arguments of pydl.optimizers and keeps its own slots.
"""
from __future__ import annotations

import math

import numpy as np


def clip_gradients(grads, clipnorm=None, clipvalue=None, global_clipnorm=None):
    grads = [np.asarray(g, dtype=np.float64) for g in grads]
    if clipnorm is not None:
        out = []
        for g in grads:
            norm = math.sqrt(float(np.sum(g * g)))
            out.append(g * clipnorm / max(norm, clipnorm))
        return out
    if global_clipnorm is not None:
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        return [g * global_clipnorm / max(norm, global_clipnorm) for g in grads]
    if clipvalue is not None:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


class RefOptimizer:
    def __init__(self, kind: str, learning_rate=0.01, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, **hp):
        self.kind = kind
        self.lr = learning_rate
        self.wd = weight_decay
        self.clip = dict(clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        self.hp = hp
        self.t = 0
        self.slots = None

    def _init_slots(self, params):
        k, hp = self.kind, self.hp
        z = [np.zeros_like(p, dtype=np.float64) for p in params]
        if k == "sgd":
            return {"v": [a.copy() for a in z]}
        if k == "adagrad":
            return {"acc": [np.full(p.shape, hp.get("initial_accumulator_value", 0.1)) for p in params]}
        if k == "rmsprop":
            return {"a": [a.copy() for a in z], "mom": [a.copy() for a in z], "mg": [a.copy() for a in z]}
        if k in ("adam", "adamw"):
            return {"m": [a.copy() for a in z], "v": [a.copy() for a in z], "vhat": [a.copy() for a in z]}
        raise ValueError(k)

    def step(self, params, grads, lr=None):
        """params: list of float64 arrays updated in place."""
        lr = self.lr if lr is None else lr
        if self.slots is None:
            self.slots = self._init_slots(params)
        self.t += 1
        t, hp, S = self.t, self.hp, self.slots
        grads = clip_gradients(grads, **self.clip)
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.wd:
                p -= p * self.wd * lr
            if self.kind == "sgd":
                mu = hp.get("momentum", 0.0)
                if mu > 0:
                    S["v"][i] = mu * S["v"][i] - lr * g
                    if hp.get("nesterov", False):
                        p += mu * S["v"][i] - lr * g
                    else:
                        p += S["v"][i]
                else:
                    p -= lr * g
            elif self.kind == "adagrad":
                eps = hp.get("epsilon", 1e-7)
                S["acc"][i] += g * g
                p -= lr * g / np.sqrt(S["acc"][i] + eps)
            elif self.kind == "rmsprop":
                rho, mu, eps = hp.get("rho", 0.9), hp.get("momentum", 0.0), hp.get("epsilon", 1e-7)
                S["a"][i] = rho * S["a"][i] + (1 - rho) * g * g
                if hp.get("centered", False):
                    S["mg"][i] = rho * S["mg"][i] + (1 - rho) * g
                    den = S["a"][i] - S["mg"][i] ** 2 + eps
                else:
                    den = S["a"][i] + eps
                inc = lr * g / np.sqrt(den)
                if mu > 0:
                    S["mom"][i] = mu * S["mom"][i] + inc
                    p -= S["mom"][i]
                else:
                    p -= inc
            else:
                b1, b2, eps = hp.get("beta_1", 0.9), hp.get("beta_2", 0.999), hp.get("epsilon", 1e-7)
                S["m"][i] = b1 * S["m"][i] + (1 - b1) * g
                S["v"][i] = b2 * S["v"][i] + (1 - b2) * g * g
                v = S["v"][i]
                if hp.get("amsgrad", False):
                    S["vhat"][i] = np.maximum(S["vhat"][i], S["v"][i])
                    v = S["vhat"][i]
                alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p -= alpha * S["m"][i] / (np.sqrt(v) + eps)
