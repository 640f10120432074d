"""Layers: configuration in __init__, weights in build, forward/backward on NumPy arrays."""
from .base import Layer, register_layer
from .core import Dense, Activation, ReLU, LeakyReLU, ELU, Softmax, Dropout, BatchNormalization, Flatten, Reshape
from .conv import AvgPool2D, Conv2D, GlobalAveragePooling2D, MaxPool2D
from .recurrent import GRU, LSTM, Embedding, SimpleRNN

__all__ = ["Layer", "register_layer",
           "Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "BatchNormalization",
           "Flatten", "Reshape",
           "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAveragePooling2D",
           "SimpleRNN", "LSTM", "GRU", "Embedding"]
