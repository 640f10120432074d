// The activation loops of activations_kernels.inc compiled for AVX2 + FMA (8 floats per op).
// Called only when pydl::selected_isa() is avx2.
#define PYDL_ACT_NS act_avx2
#include "activations_kernels.inc"
