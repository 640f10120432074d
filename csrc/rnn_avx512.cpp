// The point-wise recurrent cells (rnn_cell.h) compiled for AVX512; called only when
// pydl::selected_isa() allows it (rnn.cpp dispatches).
#define PYDL_RNN_NS rnn_avx512
#include "rnn_cell.h"

namespace pydl {
namespace detail {

const RnnRowKernels<float>* rnn_rows_avx512() { return rnn_avx512::row_table<float>(); }

}  // namespace detail
}  // namespace pydl
