// Bindings of the nn kernel families: activations, dense, losses, dropout, batchnorm.
//
// Every function takes its outputs as preallocated arrays (pydl.ops.nn allocates them) and checks
// every dtype, layout and shape here, so no call from Python can read or write out of bounds.
// The dtype of the first input picks float32 or float64; all other float arrays must match it.
#include <cstdint>

#include "activations.h"
#include "array_check.h"
#include "batchnorm.h"
#include "dense.h"
#include "dropout.h"
#include "losses.h"

namespace py = pybind11;
using pydl::index_t;

namespace {

std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

// (rows, last-axis length) of an array; a 0-d array is one row of one element.
void rows_cols(const py::array& a, index_t& R, index_t& D) {
  D = a.ndim() ? a.shape(a.ndim() - 1) : 1;
  R = D ? static_cast<index_t>(a.size()) / D : 0;
  if (a.ndim() > 1 && D == 0) {
    R = 1;
    for (py::ssize_t i = 0; i + 1 < a.ndim(); ++i) R *= a.shape(i);
  }
}

template <typename T>
T* opt_out(py::object o, const char* op, const char* name, const std::vector<py::ssize_t>& shape) {
  if (o.is_none()) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(o);
  T* p = pydl::out_ptr<T>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return p;
}

template <typename T>
const T* opt_in(py::object o, const char* op, const char* name, const std::vector<py::ssize_t>& shape) {
  if (o.is_none()) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(o);
  const T* p = pydl::in_ptr<T>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return p;
}

void require_array(const py::object& o, const char* op, const char* name) {
  PYDL_CHECK(o.is_none() || py::isinstance<py::array>(o), op, name, " must be a numpy array or None");
}

// ---- activations ----

template <typename T>
void act_forward(const std::string& kind, const py::array& x, py::array& y, double alpha, bool naive) {
  const char* op = "activation";
  const pydl::Act act = pydl::parse_activation(kind, op);
  const T* X = pydl::in_ptr<T>(x, op, "x");
  T* Y = pydl::out_ptr<T>(y, op, "y");
  pydl::check_shape(y, shape_of(x), op, "y");
  PYDL_CHECK(!pydl::act_is_rowwise(act) || x.ndim() >= 1, op, kind, " needs at least 1 dim, got a 0-d array");
  index_t R, D;
  rows_cols(x, R, D);
  py::gil_scoped_release release;
  if (naive) pydl::activation_forward_naive<T>(Y, X, R, D, act, static_cast<T>(alpha));
  else pydl::activation_forward<T>(Y, X, R, D, act, static_cast<T>(alpha));
}

template <typename T>
void act_backward(const std::string& kind, const py::array& dy, const py::array& y, py::array& dx, double alpha,
                  const py::object& x, bool naive) {
  const char* op = "activation_backward";
  const pydl::Act act = pydl::parse_activation(kind, op);
  const T* DY = pydl::in_ptr<T>(dy, op, "dy");
  const T* Y = pydl::in_ptr<T>(y, op, "y");
  require_array(x, op, "x");
  PYDL_CHECK(!x.is_none() || !pydl::act_needs_input(act), op, kind, " needs the forward input x");
  const T* X = opt_in<T>(x, op, "x", shape_of(dy));
  T* DX = pydl::out_ptr<T>(dx, op, "dx");
  pydl::check_shape(y, shape_of(dy), op, "y");
  pydl::check_shape(dx, shape_of(dy), op, "dx");
  PYDL_CHECK(!pydl::act_is_rowwise(act) || dy.ndim() >= 1, op, kind, " needs at least 1 dim, got a 0-d array");
  index_t R, D;
  rows_cols(dy, R, D);
  py::gil_scoped_release release;
  if (naive) pydl::activation_backward_naive<T>(DX, DY, X, Y, R, D, act, static_cast<T>(alpha));
  else pydl::activation_backward<T>(DX, DY, X, Y, R, D, act, static_cast<T>(alpha));
}

// ---- dense ----

template <typename T>
void dense_fwd(const py::array& x, const py::array& W, const py::object& b, py::array& y, const std::string& kind,
               double alpha, const py::object& z, bool naive) {
  const char* op = "dense_forward";
  const pydl::Act act = pydl::parse_activation(kind, op);
  const T* X = pydl::in_ptr<T>(x, op, "x", 2);
  const T* Wp = pydl::in_ptr<T>(W, op, "W", 2);
  const index_t N = x.shape(0), C = x.shape(1), K = W.shape(1);
  PYDL_CHECK(W.shape(0) == C, op, "W has shape ", pydl::shape_str(W), " but x ", pydl::shape_str(x), " has ", C,
             " features");
  require_array(b, op, "b");
  const T* B = opt_in<T>(b, op, "b", {K});
  T* Y = pydl::out_ptr<T>(y, op, "y", 2);
  pydl::check_shape(y, {N, K}, op, "y");
  require_array(z, op, "z");
  PYDL_CHECK(!z.is_none() || !pydl::act_needs_input(act), op, kind, " needs a z array for x @ W + b");
  T* Z = opt_out<T>(z, op, "z", {N, K});
  PYDL_CHECK(!Z || Z != Y, op, "z and y must be different arrays");
  py::gil_scoped_release release;
  if (naive) pydl::dense_forward_naive<T>(Y, X, Wp, B, N, C, K, act, static_cast<T>(alpha), Z);
  else pydl::dense_forward<T>(Y, X, Wp, B, N, C, K, act, static_cast<T>(alpha), Z);
}

template <typename T>
void dense_bwd(const py::array& dy, const py::array& x, const py::array& W, const py::array& y, const py::object& dx,
               py::array& dW, const py::object& db, const std::string& kind, double alpha, const py::object& z,
               bool naive) {
  const char* op = "dense_backward";
  const pydl::Act act = pydl::parse_activation(kind, op);
  const T* X = pydl::in_ptr<T>(x, op, "x", 2);
  const T* Wp = pydl::in_ptr<T>(W, op, "W", 2);
  const index_t N = x.shape(0), C = x.shape(1), K = W.shape(1);
  PYDL_CHECK(W.shape(0) == C, op, "W has shape ", pydl::shape_str(W), " but x ", pydl::shape_str(x), " has ", C,
             " features");
  const T* DY = pydl::in_ptr<T>(dy, op, "dy", 2);
  pydl::check_shape(dy, {N, K}, op, "dy");
  const T* Y = pydl::in_ptr<T>(y, op, "y", 2);
  pydl::check_shape(y, {N, K}, op, "y");
  require_array(dx, op, "dx");
  require_array(db, op, "db");
  T* DX = opt_out<T>(dx, op, "dx", {N, C});
  T* DW = pydl::out_ptr<T>(dW, op, "dW", 2);
  pydl::check_shape(dW, {C, K}, op, "dW");
  T* DB = opt_out<T>(db, op, "db", {K});
  require_array(z, op, "z");
  PYDL_CHECK(!z.is_none() || !pydl::act_needs_input(act), op, kind, " needs z = x @ W + b");
  const T* Z = opt_in<T>(z, op, "z", {N, K});
  py::gil_scoped_release release;
  if (naive) pydl::dense_backward_naive<T>(DX, DW, DB, DY, X, Wp, Y, N, C, K, act, static_cast<T>(alpha), Z);
  else pydl::dense_backward<T>(DX, DW, DB, DY, X, Wp, Y, N, C, K, act, static_cast<T>(alpha), Z);
}

// ---- losses ----

template <typename T>
double loss_impl(const std::string& kind, const py::array& t, const py::array& p, py::array& grad, bool from_logits) {
  const char* op = "loss";
  const T* P = pydl::in_ptr<T>(p, op, "y_pred");
  const T* Tt = pydl::in_ptr<T>(t, op, "y_true");
  pydl::check_shape(t, shape_of(p), op, "y_true");
  T* G = pydl::out_ptr<T>(grad, op, "grad");
  pydl::check_shape(grad, shape_of(p), op, "grad");
  const index_t E = static_cast<index_t>(p.size());
  if (kind == "mse" || kind == "mae" || kind == "binary_crossentropy") {
    PYDL_CHECK(E > 0, kind, "y_pred is empty ", pydl::shape_str(p));
    py::gil_scoped_release release;
    if (kind == "mse") return pydl::mse_loss<T>(G, Tt, P, E);
    if (kind == "mae") return pydl::mae_loss<T>(G, Tt, P, E);
    return pydl::binary_crossentropy_loss<T>(G, Tt, P, E, from_logits);
  }
  PYDL_CHECK(kind == "categorical_crossentropy", op, "unknown loss '", kind,
             "', expected mse, mae, binary_crossentropy or categorical_crossentropy");
  PYDL_CHECK(p.ndim() >= 1 && E > 0, kind, "y_pred must be a non-empty array with a class axis, got ",
             pydl::shape_str(p));
  index_t R, D;
  rows_cols(p, R, D);
  py::gil_scoped_release release;
  return pydl::categorical_crossentropy_loss<T>(G, Tt, P, R, D, from_logits);
}

template <typename T>
double sparse_impl(const py::array& labels, const py::array& p, py::array& grad, bool from_logits) {
  const char* op = "sparse_categorical_crossentropy";
  const T* P = pydl::in_ptr<T>(p, op, "y_pred");
  PYDL_CHECK(p.ndim() >= 1 && p.size() > 0, op, "y_pred must be a non-empty array with a class axis, got ",
             pydl::shape_str(p));
  index_t R, D;
  rows_cols(p, R, D);
  PYDL_CHECK(labels.dtype().is(py::dtype::of<std::int64_t>()), op, "y_true labels must have dtype int64, got ",
             std::string(py::str(labels.dtype())));
  PYDL_CHECK(labels.flags() & py::array::c_style, op, "y_true must be C-contiguous");
  PYDL_CHECK(static_cast<index_t>(labels.size()) == R, op, "y_true has shape ", pydl::shape_str(labels),
             " but y_pred ", pydl::shape_str(p), " has ", R, " rows");
  const std::int64_t* L = static_cast<const std::int64_t*>(labels.data());
  T* G = pydl::out_ptr<T>(grad, op, "grad");
  pydl::check_shape(grad, shape_of(p), op, "grad");
  // label range checked while the GIL is held: no exception leaves the released region
  for (index_t r = 0; r < R; ++r)
    PYDL_CHECK(L[r] >= 0 && L[r] < D, op, "y_true[", r, "] = ", L[r], " is not a class index in [0, ", D,
               ") for y_pred with ", D, " classes");
  py::gil_scoped_release release;
  return pydl::sparse_categorical_crossentropy_loss<T>(G, L, P, R, D, from_logits);
}

// ---- dropout ----

const std::uint8_t* mask_in(const py::array& m, const char* op) {
  PYDL_CHECK(m.dtype().is(py::dtype::of<std::uint8_t>()), op, "mask must have dtype uint8, got ",
             std::string(py::str(m.dtype())));
  PYDL_CHECK(m.flags() & py::array::c_style, op, "mask must be C-contiguous");
  return static_cast<const std::uint8_t*>(m.data());
}

template <typename T>
void dropout_fwd(const py::array& x, py::array& y, py::array& mask, double rate, std::uint64_t seed) {
  const char* op = "dropout_forward";
  const T* X = pydl::in_ptr<T>(x, op, "x");
  T* Y = pydl::out_ptr<T>(y, op, "y");
  pydl::check_shape(y, shape_of(x), op, "y");
  mask_in(mask, op);
  PYDL_CHECK(mask.writeable(), op, "mask must be writeable");
  pydl::check_shape(mask, shape_of(x), op, "mask");
  std::uint8_t* Mk = static_cast<std::uint8_t*>(mask.mutable_data());
  PYDL_CHECK(rate >= 0.0 && rate < 1.0, op, "rate must be in [0, 1), got ", rate);
  const index_t n = static_cast<index_t>(x.size());
  py::gil_scoped_release release;
  pydl::dropout_forward<T>(Y, Mk, X, n, rate, seed);
}

template <typename T>
void dropout_bwd(const py::array& dy, const py::array& mask, py::array& dx, double rate) {
  const char* op = "dropout_backward";
  const T* DY = pydl::in_ptr<T>(dy, op, "dy");
  const std::uint8_t* Mk = mask_in(mask, op);
  pydl::check_shape(mask, shape_of(dy), op, "mask");
  T* DX = pydl::out_ptr<T>(dx, op, "dx");
  pydl::check_shape(dx, shape_of(dy), op, "dx");
  PYDL_CHECK(rate >= 0.0 && rate < 1.0, op, "rate must be in [0, 1), got ", rate);
  const index_t n = static_cast<index_t>(dy.size());
  py::gil_scoped_release release;
  pydl::dropout_backward<T>(DX, DY, Mk, n, rate);
}

// ---- batchnorm ----

void bn_dims(const py::array& x, const char* op, index_t& N, index_t& C, index_t& S) {
  PYDL_CHECK(x.ndim() == 2 || x.ndim() == 4, op, "x has ", x.ndim(), " dims ", pydl::shape_str(x),
             ", expected 2 (N, C) or 4 (N, C, H, W)");
  N = x.shape(0);
  C = x.shape(1);
  S = x.ndim() == 4 ? x.shape(2) * x.shape(3) : 1;
}

template <typename T>
void bn_forward(const py::array& x, const py::array& gamma, const py::array& beta, py::array& running_mean,
                py::array& running_var, py::array& y, py::array& mean, py::array& inv_std, double momentum,
                double eps, bool training) {
  const char* op = "batchnorm_forward";
  index_t N, C, S;
  bn_dims(x, op, N, C, S);
  const T* X = pydl::in_ptr<T>(x, op, "x");
  const T* G = pydl::in_ptr<T>(gamma, op, "gamma");
  pydl::check_shape(gamma, {C}, op, "gamma");
  const T* B = pydl::in_ptr<T>(beta, op, "beta");
  pydl::check_shape(beta, {C}, op, "beta");
  T* RM = pydl::out_ptr<T>(running_mean, op, "running_mean");
  pydl::check_shape(running_mean, {C}, op, "running_mean");
  T* RV = pydl::out_ptr<T>(running_var, op, "running_var");
  pydl::check_shape(running_var, {C}, op, "running_var");
  T* Y = pydl::out_ptr<T>(y, op, "y");
  pydl::check_shape(y, shape_of(x), op, "y");
  double* MU = pydl::out_ptr<double>(mean, op, "mean");
  pydl::check_shape(mean, {C}, op, "mean");
  double* IS = pydl::out_ptr<double>(inv_std, op, "inv_std");
  pydl::check_shape(inv_std, {C}, op, "inv_std");
  py::gil_scoped_release release;
  if (training) pydl::batchnorm_forward_train<T>(Y, MU, IS, RM, RV, X, G, B, N, C, S, momentum, eps);
  else pydl::batchnorm_forward_infer<T>(Y, MU, IS, X, G, B, RM, RV, N, C, S, eps);
}

template <typename T>
void bn_backward(const py::array& dy, const py::array& x, const py::array& gamma, const py::array& mean,
                 const py::array& inv_std, py::array& dx, py::array& dgamma, py::array& dbeta, bool batch_stats) {
  const char* op = "batchnorm_backward";
  index_t N, C, S;
  bn_dims(x, op, N, C, S);
  const T* X = pydl::in_ptr<T>(x, op, "x");
  const T* DY = pydl::in_ptr<T>(dy, op, "dy");
  pydl::check_shape(dy, shape_of(x), op, "dy");
  const T* G = pydl::in_ptr<T>(gamma, op, "gamma");
  pydl::check_shape(gamma, {C}, op, "gamma");
  const double* MU = pydl::in_ptr<double>(mean, op, "mean");
  pydl::check_shape(mean, {C}, op, "mean");
  const double* IS = pydl::in_ptr<double>(inv_std, op, "inv_std");
  pydl::check_shape(inv_std, {C}, op, "inv_std");
  T* DX = pydl::out_ptr<T>(dx, op, "dx");
  pydl::check_shape(dx, shape_of(x), op, "dx");
  T* DG = pydl::out_ptr<T>(dgamma, op, "dgamma");
  pydl::check_shape(dgamma, {C}, op, "dgamma");
  T* DB = pydl::out_ptr<T>(dbeta, op, "dbeta");
  pydl::check_shape(dbeta, {C}, op, "dbeta");
  py::gil_scoped_release release;
  pydl::batchnorm_backward<T>(DX, DG, DB, DY, X, G, MU, IS, N, C, S, batch_stats);
}

}  // namespace

void init_nn(py::module_& m) {
  for (bool naive : {false, true}) {
    const std::string sfx = naive ? "_naive" : "";
    m.def(
        ("activation_forward" + sfx).c_str(),
        [naive](const std::string& kind, const py::array& x, py::array& y, double alpha) {
          if (pydl::is_float64(x)) act_forward<double>(kind, x, y, alpha, naive);
          else act_forward<float>(kind, x, y, alpha, naive);
        },
        py::arg("kind"), py::arg("x"), py::arg("y"), py::arg("alpha") = 0.0,
        "y = act(x) into a preallocated y (softmax/log_softmax over the last axis).");
    m.def(
        ("activation_backward" + sfx).c_str(),
        [naive](const std::string& kind, const py::array& dy, const py::array& y, py::array& dx, double alpha,
                const py::object& x) {
          if (pydl::is_float64(dy)) act_backward<double>(kind, dy, y, dx, alpha, x, naive);
          else act_backward<float>(kind, dy, y, dx, alpha, x, naive);
        },
        py::arg("kind"), py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("alpha") = 0.0, py::arg("x") = py::none(),
        "dx = dy * act'(x), computed from the forward output y (and the input x for gelu, gelu_tanh, swish, "
        "softplus, softsign, hard_sigmoid).");
    m.def(
        ("dense_forward" + sfx).c_str(),
        [naive](const py::array& x, const py::array& W, const py::object& b, py::array& y, const std::string& kind,
                double alpha, const py::object& z) {
          if (pydl::is_float64(x)) dense_fwd<double>(x, W, b, y, kind, alpha, z, naive);
          else dense_fwd<float>(x, W, b, y, kind, alpha, z, naive);
        },
        py::arg("x"), py::arg("W"), py::arg("b"), py::arg("y"), py::arg("kind") = "linear", py::arg("alpha") = 0.0,
        py::arg("z") = py::none(),
        "y = act(x @ W + b); b may be None; z (if given, required for gelu/swish/...) receives x @ W + b.");
    m.def(
        ("dense_backward" + sfx).c_str(),
        [naive](const py::array& dy, const py::array& x, const py::array& W, const py::array& y, const py::object& dx,
                py::array& dW, const py::object& db, const std::string& kind, double alpha, const py::object& z) {
          if (pydl::is_float64(x)) dense_bwd<double>(dy, x, W, y, dx, dW, db, kind, alpha, z, naive);
          else dense_bwd<float>(dy, x, W, y, dx, dW, db, kind, alpha, z, naive);
        },
        py::arg("dy"), py::arg("x"), py::arg("W"), py::arg("y"), py::arg("dx"), py::arg("dW"), py::arg("db"),
        py::arg("kind") = "linear", py::arg("alpha") = 0.0, py::arg("z") = py::none(),
        "dW = x^T dz, db = sum dz, dx = dz W^T with dz = dy * act'(y); dx/db may be None.");
  }
  m.def(
      "loss",
      [](const std::string& kind, const py::array& t, const py::array& p, py::array& grad, bool from_logits) {
        if (pydl::is_float64(p)) return loss_impl<double>(kind, t, p, grad, from_logits);
        return loss_impl<float>(kind, t, p, grad, from_logits);
      },
      py::arg("kind"), py::arg("y_true"), py::arg("y_pred"), py::arg("grad"), py::arg("from_logits") = false,
      "Mean loss; writes d loss / d y_pred into grad.");
  m.def(
      "sparse_categorical_crossentropy",
      [](const py::array& labels, const py::array& p, py::array& grad, bool from_logits) {
        if (pydl::is_float64(p)) return sparse_impl<double>(labels, p, grad, from_logits);
        return sparse_impl<float>(labels, p, grad, from_logits);
      },
      py::arg("labels"), py::arg("y_pred"), py::arg("grad"), py::arg("from_logits") = false);
  m.def(
      "dropout_forward",
      [](const py::array& x, py::array& y, py::array& mask, double rate, std::uint64_t seed) {
        if (pydl::is_float64(x)) dropout_fwd<double>(x, y, mask, rate, seed);
        else dropout_fwd<float>(x, y, mask, rate, seed);
      },
      py::arg("x"), py::arg("y"), py::arg("mask"), py::arg("rate"), py::arg("seed"));
  m.def(
      "dropout_backward",
      [](const py::array& dy, const py::array& mask, py::array& dx, double rate) {
        if (pydl::is_float64(dy)) dropout_bwd<double>(dy, mask, dx, rate);
        else dropout_bwd<float>(dy, mask, dx, rate);
      },
      py::arg("dy"), py::arg("mask"), py::arg("dx"), py::arg("rate"));
  m.def(
      "dropout_bits",
      [](index_t count, std::uint64_t seed) {
        PYDL_CHECK(count >= 0, "dropout_bits", "count must be >= 0, got ", count);
        py::array_t<std::uint32_t> out(static_cast<py::ssize_t>(count));
        pydl::dropout_bits(out.mutable_data(), count, seed);
        return out;
      },
      py::arg("count"), py::arg("seed"), "The dropout generator's 32-bit draws for elements 0..count-1.");
  m.def(
      "batchnorm_forward",
      [](const py::array& x, const py::array& gamma, const py::array& beta, py::array& rm, py::array& rv,
         py::array& y, py::array& mean, py::array& inv_std, double momentum, double eps, bool training) {
        if (pydl::is_float64(x)) bn_forward<double>(x, gamma, beta, rm, rv, y, mean, inv_std, momentum, eps, training);
        else bn_forward<float>(x, gamma, beta, rm, rv, y, mean, inv_std, momentum, eps, training);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"), py::arg("y"),
      py::arg("mean"), py::arg("inv_std"), py::arg("momentum"), py::arg("epsilon"), py::arg("training"));
  m.def(
      "batchnorm_backward",
      [](const py::array& dy, const py::array& x, const py::array& gamma, const py::array& mean,
         const py::array& inv_std, py::array& dx, py::array& dgamma, py::array& dbeta, bool batch_stats) {
        if (pydl::is_float64(x)) bn_backward<double>(dy, x, gamma, mean, inv_std, dx, dgamma, dbeta, batch_stats);
        else bn_backward<float>(dy, x, gamma, mean, inv_std, dx, dgamma, dbeta, batch_stats);
      },
      py::arg("dy"), py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("inv_std"), py::arg("dx"),
      py::arg("dgamma"), py::arg("dbeta"), py::arg("batch_stats"));
}
