"""Name -> class registries used by `compile(...)` string names and by `load_model`.

Loading a model resolves every class name through these registries only, never through
imports or pickle, so a saved file cannot name arbitrary code.
"""
from __future__ import annotations


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type] = {}

    def register(self, cls=None, *, name: str | None = None):
        def deco(c):
            key = name or c.__name__
            self._items[key] = c
            return c
        return deco(cls) if cls is not None else deco

    def get(self, name: str):
        if not isinstance(name, str) or name not in self._items:
            known = ", ".join(sorted(self._items))
            raise ValueError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def __contains__(self, name) -> bool:
        return name in self._items

    def names(self):
        return sorted(self._items)


layers = Registry("layer")
losses = Registry("loss")
optimizers = Registry("optimizer")
schedules = Registry("learning-rate schedule")
initializers = Registry("initializer")
regularizers = Registry("regularizer")
callbacks = Registry("callback")
metrics = Registry("metric")
scalers = Registry("scaler")
