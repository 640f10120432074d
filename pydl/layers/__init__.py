"""Layers: configuration in __init__, weights in build, forward/backward on NumPy arrays with a
per-call context (see pydl.layers.base for the contract)."""
from .base import Context, Layer, register_layer
from .core import Dense, Activation, ReLU, LeakyReLU, ELU, Softmax, Dropout, BatchNormalization, Flatten, Reshape
from .conv import (AveragePooling2D, AvgPool2D, Conv2D, Conv2DTranspose, GlobalAveragePooling1D,
                   GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPool2D, MaxPooling2D, UpSampling2D)
from .merge import Add, Concatenate, Multiply, Subtract
from .recurrent import GRU, LSTM, Bidirectional, Embedding, SimpleRNN
from .attention import (LayerNormalization, MultiHeadAttention, PositionalEmbedding, SinusoidalPositionalEncoding,
                        TransformerEncoder)

# Keras's other names of the same layers
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalAvgPool1D = GlobalAveragePooling1D
from ..graph import Input  # noqa: E402  (keras.layers.Input; graph needs .base, imported above)

__all__ = ["Layer", "Input", "GlobalAvgPool2D", "GlobalAvgPool1D", "Context", "register_layer",
           "Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "BatchNormalization",
           "Flatten", "Reshape",
           "Conv2D", "Conv2DTranspose", "MaxPool2D", "MaxPooling2D", "AvgPool2D", "AveragePooling2D",
           "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "UpSampling2D",
           "Add", "Subtract", "Multiply", "Concatenate",
           "SimpleRNN", "LSTM", "GRU", "Embedding", "Bidirectional",
           "LayerNormalization", "MultiHeadAttention", "PositionalEmbedding", "SinusoidalPositionalEncoding",
           "TransformerEncoder"]
