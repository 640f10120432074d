"""CPU-side checks of the CUDA nn wrappers (no GPU needed): kind numbering and kernel entry points."""
import os
import re

import pydl.cuda
from pydl.cuda import nn as cuda_nn
from pydl.ops import nn


def test_activation_codes_follow_ops_order():
    assert tuple(cuda_nn.ACTIVATION_CODES) == nn.ACTIVATIONS
    assert list(cuda_nn.ACTIVATION_CODES.values()) == list(range(len(nn.ACTIVATIONS)))
    assert cuda_nn.NEEDS_INPUT == nn.NEEDS_INPUT


def test_kernel_sources_export_what_the_wrappers_launch():
    wanted = {"activations": ("act_forward", "act_backward", "bias_act", "softmax_forward", "softmax_backward"),
              "dense": ("column_sums",), "dropout": ("dropout_forward", "dropout_backward"),
              "batchnorm": ("batchnorm_forward", "batchnorm_backward")}
    for family, names in wanted.items():
        path = os.path.join(pydl.cuda.KERNEL_DIR, f"{family}.cu")
        src = pydl.cuda.source(family)
        for name in names:
            # written out per dtype, or generated per dtype by a macro
            assert (f" {name}_f32(" in src and f" {name}_f64(" in src) or f"{name}_##SUF(" in src, (path, name)
        if "##SUF" in src:
            assert re.search(r"\(float, f32\)", src) and re.search(r"\(double, f64\)", src)


def test_importing_the_wrappers_does_not_import_cupy():
    import subprocess
    import sys
    code = "import sys, pydl.ops.nn, pydl.cuda.nn; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
