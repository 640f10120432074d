"""Validated, array-level operations: the layer between the Keras-like API and the kernels.

Each function checks its arguments (raising ValueError that names the argument and shapes),
allocates outputs, and calls one kernel in `pydl._core`. Layers call these, never `_core`.
One module per kernel family; everything is re-exported here.
"""
from .gemm import gemm, matmul
from .conv import conv2d, conv2d_algo, conv2d_backward, conv2d_explain, conv2d_output_shape
from .pool import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d, global_avg_pool2d_backward, max_pool2d,
                   max_pool2d_backward)
from .nn import (ACTIVATIONS, FUSABLE_ACTIVATIONS, LOSSES, activation, activation_backward, batchnorm_backward,
                 batchnorm_forward, dense_backward, dense_forward, dropout_backward, dropout_forward, loss)
from .optim import sgd_update, momentum_update, adagrad_update, rmsprop_update, adam_update, sum_squares, global_norm

__all__ = ["gemm", "matmul"]
__all__ += ["conv2d", "conv2d_algo", "conv2d_backward", "conv2d_explain", "conv2d_output_shape", "max_pool2d", "max_pool2d_backward",
            "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d", "global_avg_pool2d_backward"]
__all__ += ["ACTIVATIONS", "FUSABLE_ACTIVATIONS", "LOSSES", "activation", "activation_backward", "dense_forward",
            "dense_backward", "loss", "dropout_forward", "dropout_backward", "batchnorm_forward", "batchnorm_backward"]
__all__ += ["sgd_update", "momentum_update", "adagrad_update", "rmsprop_update", "adam_update", "sum_squares",
            "global_norm"]
from .rnn import rnn_forward, rnn_backward
__all__ += ["rnn_forward", "rnn_backward"]
from .attention import attention_backward, attention_forward, scaled_dot_product_attention
from .norm import layer_norm, layer_norm_backward
__all__ += ["scaled_dot_product_attention", "attention_forward", "attention_backward", "layer_norm",
            "layer_norm_backward"]
from . import device
from .device import device_of, to_device, to_host
__all__ += ["device", "device_of", "to_device", "to_host"]
from .optim import fused_update, l1l2_gradient, l1l2_penalty
__all__ += ["fused_update", "l1l2_penalty", "l1l2_gradient"]
from .embedding import embedding_backward, embedding_forward
__all__ += ["embedding_forward", "embedding_backward"]
