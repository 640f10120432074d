// gemm(a, b, out, trans_a, trans_b, alpha, beta): out = alpha * op(a) @ op(b) + beta * out.
// a, b, out: C-contiguous 2-D arrays of one dtype (float32 -> sgemm, float64 -> dgemm).
// With trans_a, `a` holds op(a)^T, i.e. it is stored (K, M); likewise b is (N, K) with trans_b.
#include "array_check.h"
#include "gemm.h"

namespace py = pybind11;
using pydl::index_t;

namespace {

template <typename T>
void gemm_impl(const py::array& a, const py::array& b, py::array& out, bool ta, bool tb, double alpha,
               double beta) {
  const char* op = "matmul";
  const T* A = pydl::in_ptr<T>(a, op, "a", 2);
  const T* B = pydl::in_ptr<T>(b, op, "b", 2);
  T* C = pydl::out_ptr<T>(out, op, "out", 2);
  const index_t M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
  const index_t Kb = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
  PYDL_CHECK(K == Kb, op, "inner dimensions differ: a ", pydl::shape_str(a), (ta ? " (transposed)" : ""),
             " and b ", pydl::shape_str(b), (tb ? " (transposed)" : ""));
  pydl::check_shape(out, {static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(N)}, op, "out");
  py::gil_scoped_release release;
  pydl::gemm(ta, tb, M, N, K, static_cast<T>(alpha), A, a.shape(1), B, b.shape(1), static_cast<T>(beta), C, N);
}

template <typename T>
void gemm_naive_impl(const py::array& a, const py::array& b, py::array& out, bool ta, bool tb, double alpha,
                     double beta) {
  const char* op = "matmul_naive";
  const T* A = pydl::in_ptr<T>(a, op, "a", 2);
  const T* B = pydl::in_ptr<T>(b, op, "b", 2);
  T* C = pydl::out_ptr<T>(out, op, "out", 2);
  const index_t M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
  const index_t Kb = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
  PYDL_CHECK(K == Kb, op, "inner dimensions differ: a ", pydl::shape_str(a), " and b ", pydl::shape_str(b));
  pydl::check_shape(out, {static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(N)}, op, "out");
  py::gil_scoped_release release;
  pydl::gemm_naive<T>(ta, tb, M, N, K, static_cast<T>(alpha), A, a.shape(1), B, b.shape(1),
                      static_cast<T>(beta), C, N);
}

}  // namespace

void init_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](const py::array& a, const py::array& b, py::array& out, bool ta, bool tb, double alpha, double beta) {
        if (pydl::is_float64(a)) gemm_impl<double>(a, b, out, ta, tb, alpha, beta);
        else gemm_impl<float>(a, b, out, ta, tb, alpha, beta);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0);
  m.def(
      "gemm_naive",
      [](const py::array& a, const py::array& b, py::array& out, bool ta, bool tb, double alpha, double beta) {
        if (pydl::is_float64(a)) gemm_naive_impl<double>(a, b, out, ta, tb, alpha, beta);
        else gemm_naive_impl<float>(a, b, out, ta, tb, alpha, beta);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0);
}
