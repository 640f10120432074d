"""Layers: configuration in __init__, weights in build, forward/backward on NumPy arrays."""
from .base import Layer, register_layer
from .recurrent import GRU, LSTM, Embedding, SimpleRNN

__all__ = ["Layer", "register_layer"]
__all__ += ["SimpleRNN", "LSTM", "GRU", "Embedding"]
