// The recurrent cells (rnn_cell.h) compiled for AVX2 + FMA: 8-lane point-wise cells and the
// 6 x 16 register tile of the per-step products (kRnnTileAvx2: 12 ymm accumulators, 2 ymm of the
// B panel, 1 broadcast). Called only when pydl::selected_isa() allows it.
#include <immintrin.h>

#define PYDL_RNN_NS rnn_avx2
#include "rnn_cell.h"

namespace pydl {
namespace detail {

const RnnRowKernels<float>* rnn_rows_avx2() {
  return rnn_avx2::make_table<float, kRnnTileAvx2.MR, kRnnTileAvx2.NR>();
}

}  // namespace detail
}  // namespace pydl
