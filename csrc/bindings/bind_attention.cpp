// Fused attention (attention.h). Every array is C-contiguous and of one dtype (float32 -> fast
// kernels, float64 -> the same algorithm in double). q (B, H, T, d), k (B, H, S, d),
// v (B, H, S, dv); mask is None or a 4-D array of dims 1 or the full (B, H, T, S): bool (True =
// attend) or of q's dtype (added to the scores). Outputs are written, never resized, and must not
// overlap the inputs (pydl.ops.attention allocates them fresh).
//
//   attention_forward(q, k, v, mask, causal, dropout, scale, seed, out, lse)
//   attention_backward(q, k, v, out, lse, dout, mask, causal, dropout, scale, seed, dq, dk, dv)
//   attention_forward_naive(...)   same as attention_forward
//   attention_backward_naive(q, k, v, dout, mask, causal, dropout, scale, seed, dq, dk, dv)
#include <cstdint>

#include "array_check.h"
#include "attention.h"

namespace py = pybind11;
using pydl::index_t;

namespace {

template <typename F>
pydl::AttnSizes sizes_from(const py::array& q, const py::array& k, const py::array& v, bool causal, double dropout,
                           double scale, std::uint64_t seed, const char* op) {
  pydl::check_array<F>(q, op, "q", 4);
  pydl::check_array<F>(k, op, "k", 4);
  pydl::check_array<F>(v, op, "v", 4);
  pydl::AttnSizes z;
  z.B = q.shape(0), z.H = q.shape(1), z.T = q.shape(2), z.d = q.shape(3);
  z.S = k.shape(2), z.dv = v.shape(3);
  pydl::check_shape(k, {z.B, z.H, z.S, z.d}, op, "k");
  pydl::check_shape(v, {z.B, z.H, z.S, z.dv}, op, "v");
  z.causal = causal, z.dropout = dropout, z.scale = scale, z.seed = seed;
  return z;
}

template <typename F>
pydl::AttnMask mask_from(const py::object& m, const pydl::AttnSizes& z, const char* op) {
  pydl::AttnMask mk;
  if (m.is_none()) return mk;
  PYDL_CHECK(py::isinstance<py::array>(m), op, "mask must be an array or None");
  py::array a = py::reinterpret_borrow<py::array>(m);
  PYDL_CHECK(a.ndim() == 4, op, "mask has ", a.ndim(), " dims ", pydl::shape_str(a), ", expected 4 (after broadcasting)");
  PYDL_CHECK(a.flags() & py::array::c_style, op, "mask must be C-contiguous");
  if (a.dtype().is(py::dtype::of<bool>())) {
    mk.kind = pydl::AttnMaskKind::boolean;
  } else {
    PYDL_CHECK(a.dtype().is(py::dtype::of<F>()), op, "mask must be bool or ", pydl::dtype_name<F>(), ", got ",
               std::string(py::str(a.dtype())));
    mk.kind = pydl::AttnMaskKind::additive;
  }
  mk.data = a.data();
  mk.mB = a.shape(0), mk.mH = a.shape(1), mk.mT = a.shape(2), mk.mS = a.shape(3);
  pydl::attention_check(z, mk, op);
  return mk;
}

template <typename F>
F* out_of(py::array& a, const std::vector<py::ssize_t>& shape, const char* op, const char* name) {
  F* p = pydl::out_ptr<F>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return p;
}

template <typename F>
const F* in_of(const py::array& a, const std::vector<py::ssize_t>& shape, const char* op, const char* name) {
  const F* p = pydl::in_ptr<F>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return p;
}

template <typename F>
void forward_impl(bool naive, const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                  bool causal, double dropout, double scale, std::uint64_t seed, py::array& out, py::array& lse) {
  const char* op = naive ? "attention_forward_naive" : "attention_forward";
  const pydl::AttnSizes z = sizes_from<F>(q, k, v, causal, dropout, scale, seed, op);
  pydl::attention_check(z, pydl::AttnMask{}, op);
  const pydl::AttnMask mk = mask_from<F>(mask, z, op);
  F* po = out_of<F>(out, {z.B, z.H, z.T, z.dv}, op, "out");
  F* pl = out_of<F>(lse, {z.B, z.H, z.T}, op, "lse");
  const F* pq = static_cast<const F*>(q.data());
  const F* pk = static_cast<const F*>(k.data());
  const F* pv = static_cast<const F*>(v.data());
  py::gil_scoped_release release;
  if (naive) pydl::attention_forward_naive<F>(po, pl, pq, pk, pv, mk, z);
  else pydl::attention_forward<F>(po, pl, pq, pk, pv, mk, z);
}

template <typename F>
void backward_impl(bool naive, const py::array& q, const py::array& k, const py::array& v, const py::object& out,
                   const py::object& lse, const py::array& dout, const py::object& mask, bool causal, double dropout,
                   double scale, std::uint64_t seed, py::array& dq, py::array& dk, py::array& dv) {
  const char* op = naive ? "attention_backward_naive" : "attention_backward";
  const pydl::AttnSizes z = sizes_from<F>(q, k, v, causal, dropout, scale, seed, op);
  pydl::attention_check(z, pydl::AttnMask{}, op);
  const pydl::AttnMask mk = mask_from<F>(mask, z, op);
  const F* pdo = in_of<F>(dout, {z.B, z.H, z.T, z.dv}, op, "dout");
  const F* po = nullptr;
  const F* pl = nullptr;
  if (!naive) {
    PYDL_CHECK(py::isinstance<py::array>(out) && py::isinstance<py::array>(lse), op, "out and lse are required");
    po = in_of<F>(py::reinterpret_borrow<py::array>(out), {z.B, z.H, z.T, z.dv}, op, "out");
    pl = in_of<F>(py::reinterpret_borrow<py::array>(lse), {z.B, z.H, z.T}, op, "lse");
  }
  F* pdq = out_of<F>(dq, {z.B, z.H, z.T, z.d}, op, "dq");
  F* pdk = out_of<F>(dk, {z.B, z.H, z.S, z.d}, op, "dk");
  F* pdv = out_of<F>(dv, {z.B, z.H, z.S, z.dv}, op, "dv");
  const F* pq = static_cast<const F*>(q.data());
  const F* pk = static_cast<const F*>(k.data());
  const F* pv = static_cast<const F*>(v.data());
  py::gil_scoped_release release;
  if (naive) pydl::attention_backward_naive<F>(pdq, pdk, pdv, pq, pk, pv, mk, pdo, z);
  else pydl::attention_backward<F>(pdq, pdk, pdv, pq, pk, pv, po, pl, pdo, mk, z);
}

void forward_any(bool naive, const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                 bool causal, double dropout, double scale, std::uint64_t seed, py::array& out, py::array& lse) {
  if (pydl::is_float64(q)) forward_impl<double>(naive, q, k, v, mask, causal, dropout, scale, seed, out, lse);
  else forward_impl<float>(naive, q, k, v, mask, causal, dropout, scale, seed, out, lse);
}

void backward_any(bool naive, const py::array& q, const py::array& k, const py::array& v, const py::object& out,
                  const py::object& lse, const py::array& dout, const py::object& mask, bool causal, double dropout,
                  double scale, std::uint64_t seed, py::array& dq, py::array& dk, py::array& dv) {
  if (pydl::is_float64(q))
    backward_impl<double>(naive, q, k, v, out, lse, dout, mask, causal, dropout, scale, seed, dq, dk, dv);
  else
    backward_impl<float>(naive, q, k, v, out, lse, dout, mask, causal, dropout, scale, seed, dq, dk, dv);
}

}  // namespace

void init_attention(py::module_& m) {
  m.def(
      "attention_forward",
      [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, bool causal,
         double dropout, double scale, std::uint64_t seed, py::array& out, py::array& lse) {
        forward_any(false, q, k, v, mask, causal, dropout, scale, seed, out, lse);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("causal"), py::arg("dropout"),
      py::arg("scale"), py::arg("seed"), py::arg("out"), py::arg("lse"));
  m.def(
      "attention_forward_naive",
      [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, bool causal,
         double dropout, double scale, std::uint64_t seed, py::array& out, py::array& lse) {
        forward_any(true, q, k, v, mask, causal, dropout, scale, seed, out, lse);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("causal"), py::arg("dropout"),
      py::arg("scale"), py::arg("seed"), py::arg("out"), py::arg("lse"));
  m.def(
      "attention_backward",
      [](const py::array& q, const py::array& k, const py::array& v, const py::array& out, const py::array& lse,
         const py::array& dout, const py::object& mask, bool causal, double dropout, double scale,
         std::uint64_t seed, py::array& dq, py::array& dk, py::array& dv) {
        backward_any(false, q, k, v, out, lse, dout, mask, causal, dropout, scale, seed, dq, dk, dv);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("mask"),
      py::arg("causal"), py::arg("dropout"), py::arg("scale"), py::arg("seed"), py::arg("dq"), py::arg("dk"),
      py::arg("dv"));
  m.def(
      "attention_backward_naive",
      [](const py::array& q, const py::array& k, const py::array& v, const py::array& dout, const py::object& mask,
         bool causal, double dropout, double scale, std::uint64_t seed, py::array& dq, py::array& dk,
         py::array& dv) {
        backward_any(true, q, k, v, py::none(), py::none(), dout, mask, causal, dropout, scale, seed, dq, dk, dv);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("dout"), py::arg("mask"), py::arg("causal"),
      py::arg("dropout"), py::arg("scale"), py::arg("seed"), py::arg("dq"), py::arg("dk"), py::arg("dv"));
  m.def("attention_dropout_row_key", &pydl::attn_row_key, py::arg("seed"), py::arg("b"), py::arg("h"), py::arg("i"),
        py::arg("H"), py::arg("T"), "The dropout hash's 32-bit key of query row (b, h, i) (for tests).");
}
