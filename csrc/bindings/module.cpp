// The one extension module, pydl._core. Each kernel family binds itself in
// bind_<family>.cpp; this file only lists them.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void init_config(py::module_& m);
void init_gemm(py::module_& m);
void init_conv(py::module_& m);
void init_nn(py::module_& m);
void init_optim(py::module_& m);
void init_rnn(py::module_& m);
void init_attention(py::module_& m);
void init_layernorm(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "pydl compiled kernels (C++ / OpenMP). Use the validated wrappers in pydl.ops.";
  init_config(m);
  init_gemm(m);
  init_conv(m);
  init_nn(m);
  init_optim(m);
  init_rnn(m);
  init_attention(m);
  init_layernorm(m);
}
