"""Keras's `keras.utils` names: `Sequence` (base class for a sequence of batches),
`to_categorical` (one-hot encoding) and `pad_sequences` (variable-length sequences to one
array); the same objects as in `pydl.data`."""
from __future__ import annotations

from .data import pad_sequences, to_categorical
from .data_adapters import Sequence

__all__ = ["Sequence", "to_categorical", "pad_sequences"]
