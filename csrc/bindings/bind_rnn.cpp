// Recurrent layers (rnn.h). Every array is C-contiguous and of one dtype (float32 -> fast
// kernels, float64 -> the same algorithm in double); optional arrays are None. The cell kind is
// an int: 0 SimpleRNN tanh, 1 SimpleRNN relu, 2 LSTM, 3 GRU. Outputs are written, never
// resized, and must not overlap the inputs (pydl.ops.rnn allocates them fresh).
//
// mask is None or a uint8 (N, T) array (nonzero = the step runs); rscale None or (N, H) of the
// float dtype (recurrent-dropout scale of h_{t-1} in h U); see rnn.h.
//
//   rnn_forward(cell, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT, gates, hprev, cs, q)
//     (gates, hprev, cs, q all None: inference, no cache written)
//   rnn_backward(cell, gates, hprev, cs, q, x, W, U, c0, mask, rscale, dout, dhT, dcT,
//                dx, dh0, dc0, dW, dU, db, db_h)
//   rnn_forward_naive(cell, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT)
//   rnn_backward_naive(cell, x, W, U, b, b_h, h0, c0, mask, rscale, dout, dhT, dcT,
//                      dx, dh0, dc0, dW, dU, db, db_h)
#include <vector>

#include "array_check.h"
#include "rnn.h"

namespace py = pybind11;
using pydl::index_t;
using pydl::RnnCell;

namespace {

struct Dims {
  RnnCell cell;
  index_t N, T, C, H, G;
  bool lstm() const { return cell == RnnCell::lstm; }
  bool gru() const { return cell == RnnCell::gru; }
  std::vector<py::ssize_t> nh() const { return {N, H}; }
  std::vector<py::ssize_t> nth() const { return {N, T, H}; }
  std::vector<py::ssize_t> ntg() const { return {N, T, G * H}; }
};

RnnCell to_cell(int cell, const char* op) {
  PYDL_CHECK(cell >= 0 && cell <= 3, op, "cell must be 0 (rnn_tanh), 1 (rnn_relu), 2 (lstm) or 3 (gru), got ",
             cell);
  return static_cast<RnnCell>(cell);
}

// Sizes from x (N, T, C) and U (H, G*H); checks W and b against them.
template <typename F>
Dims dims_from(int cell_id, const py::array& x, const py::array& W, const py::array& U, const py::array& b,
               const char* op) {
  Dims d{};
  d.cell = to_cell(cell_id, op);
  d.G = pydl::rnn_gates(d.cell);
  pydl::check_array<F>(x, op, "x", 3);
  pydl::check_array<F>(U, op, "U", 2);
  d.N = x.shape(0), d.T = x.shape(1), d.C = x.shape(2), d.H = U.shape(0);
  PYDL_CHECK(d.C >= 1 && d.H >= 1, op, "x ", pydl::shape_str(x), " and U ", pydl::shape_str(U),
             " need at least one feature and one unit");
  const py::ssize_t GH = d.G * d.H;
  pydl::check_shape(U, {d.H, GH}, op, "U");
  pydl::check_array<F>(W, op, "W", 2);
  pydl::check_shape(W, {d.C, GH}, op, "W");
  pydl::check_array<F>(b, op, "b", 1);
  pydl::check_shape(b, {GH}, op, "b");
  return d;
}

template <typename F>
const F* opt_in(const py::object& o, const std::vector<py::ssize_t>& shape, const char* op, const char* name) {
  if (o.is_none()) return nullptr;
  PYDL_CHECK(py::isinstance<py::array>(o), op, name, " must be an array or None");
  py::array a = py::reinterpret_borrow<py::array>(o);
  const F* p = pydl::in_ptr<F>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return p;
}

const std::uint8_t* opt_mask(const py::object& o, index_t N, index_t T, const char* op) {
  if (o.is_none()) return nullptr;
  PYDL_CHECK(py::isinstance<py::array>(o), op, "mask must be an array or None");
  py::array a = py::reinterpret_borrow<py::array>(o);
  PYDL_CHECK(a.dtype().is(py::dtype::of<std::uint8_t>()), op, "mask must have dtype uint8, got ",
             std::string(py::str(a.dtype())));
  PYDL_CHECK(a.flags() & py::array::c_style, op, "mask must be C-contiguous");
  pydl::check_shape(a, {N, T}, op, "mask");
  return static_cast<const std::uint8_t*>(a.data());
}

template <typename F>
F* opt_out(const py::object& o, const std::vector<py::ssize_t>& shape, bool required, const char* op,
           const char* name) {
  if (o.is_none()) {
    PYDL_CHECK(!required, op, name, " is required for this cell");
    return nullptr;
  }
  PYDL_CHECK(py::isinstance<py::array>(o), op, name, " must be an array or None");
  py::array a = py::reinterpret_borrow<py::array>(o);
  F* p = pydl::out_ptr<F>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return p;
}

template <typename F>
void forward_impl(int cell_id, const py::array& x, const py::array& W, const py::array& U, const py::array& b,
                  const py::object& b_h, const py::object& h0, const py::object& c0, const py::object& mask,
                  const py::object& rscale, const py::object& out, const py::object& hT, const py::object& cT,
                  const py::object& gates, const py::object& hprev, const py::object& cs, const py::object& q) {
  const char* op = "rnn_forward";
  const Dims d = dims_from<F>(cell_id, x, W, U, b, op);
  const py::ssize_t GH = d.G * d.H;
  PYDL_CHECK(d.gru() || b_h.is_none(), op, "b_h is only used by the GRU");
  PYDL_CHECK(d.lstm() || c0.is_none(), op, "c0 is only used by the LSTM");
  const F* px = static_cast<const F*>(x.data());
  const F* pW = static_cast<const F*>(W.data());
  const F* pU = static_cast<const F*>(U.data());
  const F* pb = static_cast<const F*>(b.data());
  const F* pbh = opt_in<F>(b_h, {GH}, op, "b_h");
  const F* ph0 = opt_in<F>(h0, d.nh(), op, "h0");
  const F* pc0 = opt_in<F>(c0, d.nh(), op, "c0");
  const std::uint8_t* pm = opt_mask(mask, d.N, d.T, op);
  const F* prs = opt_in<F>(rscale, d.nh(), op, "rscale");
  F* pout = opt_out<F>(out, d.nth(), true, op, "out");
  F* phT = opt_out<F>(hT, d.nh(), true, op, "hT");
  F* pcT = opt_out<F>(cT, d.nh(), d.lstm(), op, "cT");
  // The caches: all given (training) or all None (inference, nothing kept for backward).
  const bool keep = !gates.is_none();
  F* pg = opt_out<F>(gates, d.ntg(), keep, op, "gates");
  F* php = opt_out<F>(hprev, d.nth(), keep, op, "hprev");
  F* pcs = opt_out<F>(cs, d.nth(), keep && d.lstm(), op, "cs");
  F* pq = opt_out<F>(q, d.nth(), keep && d.gru(), op, "q");
  PYDL_CHECK(keep || (hprev.is_none() && cs.is_none() && q.is_none()), op,
             "gates is None (inference): hprev, cs and q must be None too");
  PYDL_CHECK(d.lstm() || cs.is_none(), op, "cs is only used by the LSTM");
  PYDL_CHECK(d.gru() || q.is_none(), op, "q is only used by the GRU");
  py::gil_scoped_release release;
  pydl::rnn_forward<F>(d.cell, pout, phT, pcT, pg, php, pcs, pq, px, pW, pU, pb, pbh, ph0, pc0, pm, prs, d.N, d.T,
                       d.C, d.H);
}

template <typename F>
void backward_impl(int cell_id, const py::object& gates, const py::object& hprev, const py::object& cs,
                   const py::object& q, const py::array& x, const py::array& W, const py::array& U,
                   const py::object& c0, const py::object& mask, const py::object& rscale, const py::object& dout,
                   const py::object& dhT, const py::object& dcT, const py::object& dx, const py::object& dh0,
                   const py::object& dc0, const py::object& dW, const py::object& dU, const py::object& db,
                   const py::object& db_h) {
  const char* op = "rnn_backward";
  Dims d{};
  d.cell = to_cell(cell_id, op);
  d.G = pydl::rnn_gates(d.cell);
  pydl::check_array<F>(x, op, "x", 3);
  pydl::check_array<F>(U, op, "U", 2);
  d.N = x.shape(0), d.T = x.shape(1), d.C = x.shape(2), d.H = U.shape(0);
  PYDL_CHECK(d.C >= 1 && d.H >= 1, op, "x ", pydl::shape_str(x), " and U ", pydl::shape_str(U),
             " need at least one feature and one unit");
  const py::ssize_t GH = d.G * d.H;
  pydl::check_shape(U, {d.H, GH}, op, "U");
  pydl::check_array<F>(W, op, "W", 2);
  pydl::check_shape(W, {d.C, GH}, op, "W");
  PYDL_CHECK(d.lstm() || c0.is_none(), op, "c0 is only used by the LSTM");
  PYDL_CHECK(d.lstm() || dcT.is_none(), op, "dcT is only used by the LSTM");
  const F* pg = opt_in<F>(gates, d.ntg(), op, "gates");
  const F* php = opt_in<F>(hprev, d.nth(), op, "hprev");
  const F* pcs = opt_in<F>(cs, d.nth(), op, "cs");
  const F* pq = opt_in<F>(q, d.nth(), op, "q");
  PYDL_CHECK(pg && php, op, "the gates and hprev caches are required");
  PYDL_CHECK(!d.lstm() || pcs, op, "the LSTM needs the cs cache");
  PYDL_CHECK(!d.gru() || pq, op, "the GRU needs the q cache");
  const F* pc0 = opt_in<F>(c0, d.nh(), op, "c0");
  const std::uint8_t* pm = opt_mask(mask, d.N, d.T, op);
  const F* prs = opt_in<F>(rscale, d.nh(), op, "rscale");
  const F* pdout = opt_in<F>(dout, d.nth(), op, "dout");
  const F* pdhT = opt_in<F>(dhT, d.nh(), op, "dhT");
  const F* pdcT = opt_in<F>(dcT, d.nh(), op, "dcT");
  F* pdx = opt_out<F>(dx, {d.N, d.T, d.C}, false, op, "dx");
  F* pdh0 = opt_out<F>(dh0, d.nh(), true, op, "dh0");
  F* pdc0 = opt_out<F>(dc0, d.nh(), d.lstm(), op, "dc0");
  F* pdW = opt_out<F>(dW, {d.C, GH}, true, op, "dW");
  F* pdU = opt_out<F>(dU, {d.H, GH}, true, op, "dU");
  F* pdb = opt_out<F>(db, {GH}, true, op, "db");
  F* pdbh = opt_out<F>(db_h, {GH}, d.gru(), op, "db_h");
  const F* px = static_cast<const F*>(x.data());
  const F* pW = static_cast<const F*>(W.data());
  const F* pU = static_cast<const F*>(U.data());
  py::gil_scoped_release release;
  pydl::rnn_backward<F>(d.cell, pdx, pdh0, pdc0, pdW, pdU, pdb, pdbh, pg, php, pcs, pq, px, pW, pU, pc0, pm, prs,
                        pdout, pdhT, pdcT, d.N, d.T, d.C, d.H);
}

template <typename F>
void forward_naive_impl(int cell_id, const py::array& x, const py::array& W, const py::array& U,
                        const py::array& b, const py::object& b_h, const py::object& h0, const py::object& c0,
                        const py::object& mask, const py::object& rscale, const py::object& out,
                        const py::object& hT, const py::object& cT) {
  const char* op = "rnn_forward_naive";
  const Dims d = dims_from<F>(cell_id, x, W, U, b, op);
  const py::ssize_t GH = d.G * d.H;
  const F* pbh = opt_in<F>(b_h, {GH}, op, "b_h");
  const F* ph0 = opt_in<F>(h0, d.nh(), op, "h0");
  const F* pc0 = opt_in<F>(c0, d.nh(), op, "c0");
  const std::uint8_t* pm = opt_mask(mask, d.N, d.T, op);
  const F* prs = opt_in<F>(rscale, d.nh(), op, "rscale");
  F* pout = opt_out<F>(out, d.nth(), true, op, "out");
  F* phT = opt_out<F>(hT, d.nh(), true, op, "hT");
  F* pcT = opt_out<F>(cT, d.nh(), d.lstm(), op, "cT");
  py::gil_scoped_release release;
  pydl::rnn_forward_naive<F>(d.cell, pout, phT, pcT, static_cast<const F*>(x.data()),
                             static_cast<const F*>(W.data()), static_cast<const F*>(U.data()),
                             static_cast<const F*>(b.data()), pbh, ph0, pc0, pm, prs, d.N, d.T, d.C, d.H);
}

template <typename F>
void backward_naive_impl(int cell_id, const py::array& x, const py::array& W, const py::array& U,
                         const py::array& b, const py::object& b_h, const py::object& h0, const py::object& c0,
                         const py::object& mask, const py::object& rscale, const py::object& dout,
                         const py::object& dhT, const py::object& dcT, const py::object& dx,
                         const py::object& dh0, const py::object& dc0, const py::object& dW, const py::object& dU,
                         const py::object& db, const py::object& db_h) {
  const char* op = "rnn_backward_naive";
  const Dims d = dims_from<F>(cell_id, x, W, U, b, op);
  const py::ssize_t GH = d.G * d.H;
  const F* pbh = opt_in<F>(b_h, {GH}, op, "b_h");
  const F* ph0 = opt_in<F>(h0, d.nh(), op, "h0");
  const F* pc0 = opt_in<F>(c0, d.nh(), op, "c0");
  const std::uint8_t* pm = opt_mask(mask, d.N, d.T, op);
  const F* prs = opt_in<F>(rscale, d.nh(), op, "rscale");
  const F* pdout = opt_in<F>(dout, d.nth(), op, "dout");
  const F* pdhT = opt_in<F>(dhT, d.nh(), op, "dhT");
  const F* pdcT = opt_in<F>(dcT, d.nh(), op, "dcT");
  F* pdx = opt_out<F>(dx, {d.N, d.T, d.C}, false, op, "dx");
  F* pdh0 = opt_out<F>(dh0, d.nh(), true, op, "dh0");
  F* pdc0 = opt_out<F>(dc0, d.nh(), d.lstm(), op, "dc0");
  F* pdW = opt_out<F>(dW, {d.C, GH}, true, op, "dW");
  F* pdU = opt_out<F>(dU, {d.H, GH}, true, op, "dU");
  F* pdb = opt_out<F>(db, {GH}, true, op, "db");
  F* pdbh = opt_out<F>(db_h, {GH}, d.gru(), op, "db_h");
  py::gil_scoped_release release;
  pydl::rnn_backward_naive<F>(d.cell, pdx, pdh0, pdc0, pdW, pdU, pdb, pdbh, static_cast<const F*>(x.data()),
                              static_cast<const F*>(W.data()), static_cast<const F*>(U.data()),
                              static_cast<const F*>(b.data()), pbh, ph0, pc0, pm, prs, pdout, pdhT, pdcT, d.N,
                              d.T, d.C, d.H);
}

}  // namespace

void init_rnn(py::module_& m) {
  using O = const py::object&;
  using A = const py::array&;
  m.def(
      "rnn_forward",
      [](int cell, A x, A W, A U, A b, O b_h, O h0, O c0, O mask, O rscale, O out, O hT, O cT, O gates, O hprev,
         O cs, O q) {
        if (pydl::is_float64(x))
          forward_impl<double>(cell, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT, gates, hprev, cs, q);
        else
          forward_impl<float>(cell, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT, gates, hprev, cs, q);
      },
      py::arg("cell"), py::arg("x"), py::arg("W"), py::arg("U"), py::arg("b"), py::arg("b_h"), py::arg("h0"),
      py::arg("c0"), py::arg("mask"), py::arg("rscale"), py::arg("out"), py::arg("hT"), py::arg("cT"),
      py::arg("gates"), py::arg("hprev"), py::arg("cs"), py::arg("q"));
  m.def(
      "rnn_backward",
      [](int cell, O gates, O hprev, O cs, O q, A x, A W, A U, O c0, O mask, O rscale, O dout, O dhT, O dcT, O dx,
         O dh0, O dc0, O dW, O dU, O db, O db_h) {
        if (pydl::is_float64(x))
          backward_impl<double>(cell, gates, hprev, cs, q, x, W, U, c0, mask, rscale, dout, dhT, dcT, dx, dh0, dc0,
                                dW, dU, db, db_h);
        else
          backward_impl<float>(cell, gates, hprev, cs, q, x, W, U, c0, mask, rscale, dout, dhT, dcT, dx, dh0, dc0,
                               dW, dU, db, db_h);
      },
      py::arg("cell"), py::arg("gates"), py::arg("hprev"), py::arg("cs"), py::arg("q"), py::arg("x"), py::arg("W"),
      py::arg("U"), py::arg("c0"), py::arg("mask"), py::arg("rscale"), py::arg("dout"), py::arg("dhT"),
      py::arg("dcT"), py::arg("dx"), py::arg("dh0"), py::arg("dc0"), py::arg("dW"), py::arg("dU"), py::arg("db"),
      py::arg("db_h"));
  m.def(
      "rnn_forward_naive",
      [](int cell, A x, A W, A U, A b, O b_h, O h0, O c0, O mask, O rscale, O out, O hT, O cT) {
        if (pydl::is_float64(x)) forward_naive_impl<double>(cell, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT);
        else forward_naive_impl<float>(cell, x, W, U, b, b_h, h0, c0, mask, rscale, out, hT, cT);
      },
      py::arg("cell"), py::arg("x"), py::arg("W"), py::arg("U"), py::arg("b"), py::arg("b_h"), py::arg("h0"),
      py::arg("c0"), py::arg("mask"), py::arg("rscale"), py::arg("out"), py::arg("hT"), py::arg("cT"));
  m.def(
      "rnn_backward_naive",
      [](int cell, A x, A W, A U, A b, O b_h, O h0, O c0, O mask, O rscale, O dout, O dhT, O dcT, O dx, O dh0,
         O dc0, O dW, O dU, O db, O db_h) {
        if (pydl::is_float64(x))
          backward_naive_impl<double>(cell, x, W, U, b, b_h, h0, c0, mask, rscale, dout, dhT, dcT, dx, dh0, dc0, dW,
                                      dU, db, db_h);
        else
          backward_naive_impl<float>(cell, x, W, U, b, b_h, h0, c0, mask, rscale, dout, dhT, dcT, dx, dh0, dc0, dW,
                                     dU, db, db_h);
      },
      py::arg("cell"), py::arg("x"), py::arg("W"), py::arg("U"), py::arg("b"), py::arg("b_h"), py::arg("h0"),
      py::arg("c0"), py::arg("mask"), py::arg("rscale"), py::arg("dout"), py::arg("dhT"), py::arg("dcT"),
      py::arg("dx"), py::arg("dh0"), py::arg("dc0"), py::arg("dW"), py::arg("dU"), py::arg("db"), py::arg("db_h"));
}
