// The point-wise recurrent cells (rnn_cell.h) compiled for AVX2; called only when
// pydl::selected_isa() allows it (rnn.cpp dispatches).
#define PYDL_RNN_NS rnn_avx2
#include "rnn_cell.h"

namespace pydl {
namespace detail {

const RnnRowKernels<float>* rnn_rows_avx2() { return rnn_avx2::row_table<float>(); }

}  // namespace detail
}  // namespace pydl
