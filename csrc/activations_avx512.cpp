// The activation loops of activations_kernels.inc compiled for AVX-512 (16 floats per op,
// masked tails). Called only when pydl::selected_isa() is avx512.
#define PYDL_ACT_NS act_avx512
#include "activations_kernels.inc"
