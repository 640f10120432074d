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


def serialize(obj) -> dict:
    """{"class_name": ..., "config": ...}: the form every registered object is saved in."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(reg: Registry, identifier: dict, who: str):
    """Rebuild an object from {"class_name", "config"}, resolving the class through `reg` only."""
    if "class_name" not in identifier or set(identifier) - {"class_name", "config"}:
        raise ValueError(f"[{who}] a config must be {{'class_name', 'config'}}, got {identifier!r}")
    try:
        cls = reg.get(identifier["class_name"])
    except ValueError as exc:
        raise ValueError(f"[{who}] {exc}") from None
    cfg = identifier.get("config") or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"[{who}] config must be a dict, got {cfg!r}")
    try:
        return cls.from_config(cfg)
    except TypeError as exc:
        raise ValueError(f"[{who}] bad config for {identifier['class_name']}: {exc}") from None


def resolve(reg: Registry, identifier, base: type, aliases: dict, who: str):
    """An instance of `base` from an instance, a name (an alias, case-insensitive, or a class name)
    or a {"class_name", "config"} dict; anything else is a ValueError listing the known names."""
    if isinstance(identifier, base):
        return identifier
    known = ", ".join(sorted(aliases))
    if isinstance(identifier, str):
        key = aliases.get(identifier.lower(), identifier)
        if key not in reg:
            raise ValueError(f"[{who}] unknown {reg.kind} {identifier!r}; known names: {known}")
        return reg.get(key)()
    if isinstance(identifier, dict):
        return deserialize(reg, identifier, who)
    raise ValueError(f"[{who}] cannot interpret {identifier!r} as a {reg.kind} (known names: {known})")
