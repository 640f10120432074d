"""Weights from other libraries.

`load_torch_state_dict(model, state_dict, strict=True)` copies a PyTorch module's `state_dict()` into
a built pydl model. The state dict may hold torch tensors or NumPy arrays (torch need not be
importable for NumPy input). Matching is by order: PyTorch's state dict lists parameters module by
module in registration order, and pydl's parameterised layers are taken in `model.layers` order;
the k-th torch module (the keys sharing a prefix before the last dot) goes to the k-th pydl layer
with weights, converted by the pydl layer's type and checked by shape:

    Dense                  <- Linear          W = weight.T, b = bias
    Conv2D                 <- Conv2d          W = weight (K, C, R, S: the same layout), b = bias
    Conv2DTranspose        <- ConvTranspose2d W = weight (C_in, K, R, S: the same layout), b = bias
    BatchNormalization     <- BatchNorm1d/2d  gamma = weight, beta = bias, moving_mean = running_mean,
                                              moving_variance = running_var (num_batches_tracked ignored)
    LayerNormalization     <- LayerNorm       gamma = weight, beta = bias
    Embedding              <- Embedding       W = weight
    SimpleRNN / LSTM / GRU <- RNN / LSTM / GRU (layer 0, one direction): W = weight_ih_l0.T,
                              U = weight_hh_l0.T; SimpleRNN and LSTM b = bias_ih_l0 + bias_hh_l0,
                              GRU b = bias_ih_l0 and b_h = bias_hh_l0. Gate orders are the same
                              (LSTM i f g o, GRU r z n).

What the weights do not carry is not changed: PyTorch's BatchNorm/LayerNorm epsilon is 1e-5 where
Keras's BatchNormalization and LayerNormalization default to 1e-3, and PyTorch's
BatchNorm momentum 0.1 means Keras momentum 0.9; the report's `notes` name every such layer whose
epsilon is not 1e-5. Build the pydl layers with epsilon=1e-5 for identical outputs.

The returned `TorchLoadReport` lists the pairs loaded, the torch keys not used and the pydl weights
not set (names and shapes). With strict=True (the default) anything left over or mismatched is a
ValueError listing it, and nothing is written.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["load_torch_state_dict", "TorchLoadReport"]


@dataclass
class TorchLoadReport:
    """What load_torch_state_dict placed and what it could not.

    loaded: (torch key(s), pydl weight "layer/name", shape) triples.
    unused_torch_keys: (key, shape) pairs of the state dict that went nowhere.
    missing_pydl_weights: ("layer/name", shape) pairs of pydl weights left unchanged.
    mismatches: one line per shape or type mismatch.
    notes: differences the weights cannot carry (epsilon, momentum).
    """
    loaded: list = field(default_factory=list)
    unused_torch_keys: list = field(default_factory=list)
    missing_pydl_weights: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unused_torch_keys or self.missing_pydl_weights or self.mismatches)

    def as_dict(self) -> dict:
        return {"loaded": list(self.loaded), "unused_torch_keys": list(self.unused_torch_keys),
                "missing_pydl_weights": list(self.missing_pydl_weights), "mismatches": list(self.mismatches),
                "notes": list(self.notes)}

    def problems(self) -> str:
        lines = []
        lines += [f"mismatch: {m}" for m in self.mismatches]
        lines += [f"torch key not loaded: {k} {tuple(s)}" for k, s in self.unused_torch_keys]
        lines += [f"pydl weight not set: {n} {tuple(s)}" for n, s in self.missing_pydl_weights]
        return "\n".join(lines)

    def __str__(self) -> str:
        head = f"loaded {len(self.loaded)} weights"
        rest = self.problems()
        notes = "\n".join(f"note: {n}" for n in self.notes)
        return "\n".join(x for x in (head, rest, notes) if x)


def _to_numpy(value, key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if callable(detach):  # a torch tensor, without importing torch
        return detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"[load_torch_state_dict] state_dict[{key!r}] is not an array or tensor: {exc}") from None
    if arr.dtype == object:
        raise TypeError(f"[load_torch_state_dict] state_dict[{key!r}] is not an array or tensor, got "
                        f"{type(value).__name__}")
    return arr


def _real_array(value, key: str) -> np.ndarray:
    """A state-dict entry as a real numeric array (bool, string and complex entries refused)."""
    arr = _to_numpy(value, key)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"[load_torch_state_dict] state_dict[{key!r}] must hold real numbers, got dtype {arr.dtype}")
    return arr


def _groups(state_dict) -> "OrderedDict[str, dict]":
    """{module prefix: {parameter name: array}} in the state dict's order."""
    groups: OrderedDict[str, dict] = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"[load_torch_state_dict] state_dict keys must be strings, got {key!r}")
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix, {})[name] = _real_array(value, key)
    return groups


def _weight_slots(layer):
    """(store, name) of every weight of a pydl layer: params then state."""
    return [(layer.params, k) for k in layer.params] + [(getattr(layer, "state", {}), k)
                                                        for k in getattr(layer, "state", {})]


def _plan(layer, tg: dict):
    """The arrays for one pydl layer from one torch module's parameters.

    Returns ({pydl weight name: (array, torch key names)}, set of torch names used) or raises
    KeyError naming what the torch module lacks for this layer type."""
    kind = type(layer).__name__
    out = {}

    def put(name, arr, *src):
        out[name] = (arr, src)

    if kind == "Dense":
        put("W", tg["weight"].T, "weight")
        if "b" in layer.params and "bias" in tg:
            put("b", tg["bias"], "bias")
    elif kind in ("Conv2D", "Conv2DTranspose"):
        put("W", tg["weight"], "weight")
        if "b" in layer.params and "bias" in tg:
            put("b", tg["bias"], "bias")
    elif kind == "BatchNormalization":
        if "gamma" in layer.params and "weight" in tg:
            put("gamma", tg["weight"], "weight")
        if "beta" in layer.params and "bias" in tg:
            put("beta", tg["bias"], "bias")
        put("moving_mean", tg["running_mean"], "running_mean")
        put("moving_variance", tg["running_var"], "running_var")
    elif kind == "LayerNormalization":
        if "gamma" in layer.params and "weight" in tg:
            put("gamma", tg["weight"], "weight")
        if "beta" in layer.params and "bias" in tg:
            put("beta", tg["bias"], "bias")
    elif kind == "Embedding":
        put("W", tg["weight"], "weight")
    elif kind in ("SimpleRNN", "LSTM", "GRU"):
        put("W", tg["weight_ih_l0"].T, "weight_ih_l0")
        put("U", tg["weight_hh_l0"].T, "weight_hh_l0")
        if "bias_ih_l0" in tg and "bias_hh_l0" in tg:
            if kind == "GRU":
                put("b", tg["bias_ih_l0"], "bias_ih_l0")
                put("b_h", tg["bias_hh_l0"], "bias_hh_l0")
            else:
                bi, bh = tg["bias_ih_l0"], tg["bias_hh_l0"]
                if bi.shape != bh.shape:  # summed below: a mismatch must not broadcast
                    raise ValueError(f"[load_torch_state_dict] {kind} '{layer.name}': bias_ih_l0 {bi.shape} and "
                                     f"bias_hh_l0 {bh.shape} must have one shape")
                put("b", bi.astype(np.float64) + bh, "bias_ih_l0", "bias_hh_l0")
    else:
        raise NotImplementedError(kind)
    return out


def _layers_with_weights(model):
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"[load_torch_state_dict] model must be a pydl Model or Sequential, got {type(model).__name__}")
    return [layer for layer in layers if layer.params or getattr(layer, "state", None)]


def load_torch_state_dict(model, state_dict, strict: bool = True) -> TorchLoadReport:
    """Copy a PyTorch state dict into a built pydl model (see the module docstring for the mapping).

    Returns a TorchLoadReport. strict=True raises ValueError (writing nothing) when any torch key is
    left unused, any pydl weight is left unset, or a shape does not match; strict=False writes
    what matched and reports the rest.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"[load_torch_state_dict] state_dict must be a mapping of names to tensors or arrays, got "
                        f"{type(state_dict).__name__}")
    if not getattr(model, "built", True):
        raise ValueError("[load_torch_state_dict] build the model first (give input_shape, or call it on data)")
    groups = list(_groups(state_dict).items())
    layers = _layers_with_weights(model)
    report = TorchLoadReport()
    writes = []
    gi = 0
    for layer in layers:
        lname = layer.name
        slots = _weight_slots(layer)
        kind = type(layer).__name__
        if kind in ("BatchNormalization", "LayerNormalization") and abs(getattr(layer, "epsilon", 1e-5) - 1e-5) > 1e-12:
            report.notes.append(f"{kind} '{lname}' has epsilon={layer.epsilon:g}; PyTorch's default is 1e-05 "
                                f"(build it with epsilon=1e-5 for the same outputs)")
        if kind == "BatchNormalization":
            report.notes.append(f"BatchNormalization '{lname}': PyTorch momentum m corresponds to Keras momentum "
                                f"1 - m (0.1 -> 0.9); pydl's is {layer.momentum:g}")
        if gi >= len(groups):
            report.missing_pydl_weights += [(f"{lname}/{k}", tuple(store[k].shape)) for store, k in slots]
            continue
        prefix, tg = groups[gi]
        try:
            plan = _plan(layer, tg)
        except NotImplementedError:
            report.mismatches.append(f"pydl layer '{lname}' ({kind}) has no PyTorch counterpart in this loader")
            report.missing_pydl_weights += [(f"{lname}/{k}", tuple(store[k].shape)) for store, k in slots]
            continue
        except KeyError as exc:
            report.mismatches.append(f"pydl layer '{lname}' ({kind}) vs torch module '{prefix}' (keys "
                                     f"{sorted(tg)}): the module lacks {exc.args[0]!r}")
            report.missing_pydl_weights += [(f"{lname}/{k}", tuple(store[k].shape)) for store, k in slots]
            report.unused_torch_keys += [(f"{prefix}.{k}" if prefix else k, tuple(v.shape)) for k, v in tg.items()]
            gi += 1
            continue
        gi += 1
        used = set()
        for store, k in slots:
            if k not in plan:
                report.missing_pydl_weights.append((f"{lname}/{k}", tuple(store[k].shape)))
                continue
            arr, src = plan[k]
            keys = [f"{prefix}.{s}" if prefix else s for s in src]
            if tuple(arr.shape) != tuple(store[k].shape):
                report.mismatches.append(f"{' + '.join(keys)} {tuple(tg[src[0]].shape)} -> pydl '{lname}/{k}' "
                                         f"{tuple(store[k].shape)}: shapes do not match")
                report.missing_pydl_weights.append((f"{lname}/{k}", tuple(store[k].shape)))
                continue
            writes.append((store, k, arr))
            used.update(src)
            report.loaded.append((" + ".join(keys), f"{lname}/{k}", tuple(store[k].shape)))
        for k, v in tg.items():
            if k not in used and not (kind == "BatchNormalization" and k == "num_batches_tracked"):
                report.unused_torch_keys.append((f"{prefix}.{k}" if prefix else k, tuple(v.shape)))
    for prefix, tg in groups[gi:]:
        report.unused_torch_keys += [(f"{prefix}.{k}" if prefix else k, tuple(v.shape)) for k, v in tg.items()]
    if strict and not report.ok:
        raise ValueError("[load_torch_state_dict] the state dict does not match the model:\n" + report.problems())
    for store, k, arr in writes:
        np.copyto(store[k], np.asarray(arr), casting="unsafe")
    return report
