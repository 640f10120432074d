// The recurrent cells (rnn_cell.h) compiled for AVX-512: 16-lane point-wise cells and the
// 8 x 32 register tile of the per-step products (kRnnTileAvx512: 16 zmm accumulators, 2 zmm of
// the B panel, 1 broadcast). Called only when pydl::selected_isa() allows it.
#include <immintrin.h>

#define PYDL_RNN_NS rnn_avx512
#include "rnn_cell.h"

namespace pydl {
namespace detail {

const RnnRowKernels<float>* rnn_rows_avx512() {
  return rnn_avx512::make_table<float, kRnnTileAvx512.MR, kRnnTileAvx512.NR>();
}

}  // namespace detail
}  // namespace pydl
