"""Keras's `keras.models` names: Model, Sequential, load_model, model_from_json, clone_model."""
from __future__ import annotations

from .model import Model, Sequential, clone_model, load_model, model_from_json

__all__ = ["Model", "Sequential", "load_model", "model_from_json", "clone_model"]
