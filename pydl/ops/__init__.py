"""Validated, array-level operations: the layer between the Keras-like API and the kernels.

Each function checks its arguments (raising ValueError that names the argument and shapes),
allocates outputs, and calls one kernel in `pydl._core`. Layers call these, never `_core`.
One module per kernel family; everything is re-exported here.
"""
from .gemm import gemm, matmul
from .rnn import rnn_forward, rnn_backward

__all__ = ["gemm", "matmul"]
__all__ += ["rnn_forward", "rnn_backward"]
