"""Keras's `keras.utils` names: `Sequence` (base class for a sequence of batches) and
`to_categorical` (one-hot encoding); the same objects as in `pydl.data`."""
from __future__ import annotations

from .data import to_categorical
from .data_adapters import Sequence

__all__ = ["Sequence", "to_categorical"]
