// Convolution and pooling bindings. Every size is checked here, before any kernel runs.
//
// conv2d_forward(x, w, b, out, stride, padding, dilation, algo, activation) -> y
// conv2d_backward(dy, x, w, stride, padding, dilation, algo, need_dx, has_bias) -> (dx|None, dw, db|None)
// conv2d_output_shape(x_shape, w_shape, stride, padding, dilation) -> (N, K, P, Q)
// max_pool2d_forward / _backward, avg_pool2d_forward / _backward, global_avg_pool2d_forward / _backward
// stride and dilation are (h, w); padding is (top, bottom, left, right). algo is a resolved name
// ("naive", "direct", "im2col", "winograd_f2", "winograd_f4"); pydl.ops.conv picks for "auto".
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "array_check.h"
#include "big_output.h"
#include "conv2d.h"
#include "pool2d.h"
#include "winograd.h"

namespace py = pybind11;
using pydl::index_t;

namespace {

using Pair = std::array<index_t, 2>;
using Quad = std::array<index_t, 4>;

pydl::Conv2dGeom make_geom(const py::array& x, const py::array& w, const Pair& stride, const Quad& pad,
                           const Pair& dil, const char* op) {
  PYDL_CHECK(x.ndim() == 4, op, "x has ", x.ndim(), " dims ", pydl::shape_str(x), ", expected 4 (N, C, H, W)");
  PYDL_CHECK(w.ndim() == 4, op, "w has ", w.ndim(), " dims ", pydl::shape_str(w), ", expected 4 (K, C, R, S)");
  PYDL_CHECK(x.shape(1) == w.shape(1), op, "channel mismatch: x ", pydl::shape_str(x), " has C = ", x.shape(1),
             " but w ", pydl::shape_str(w), " expects C = ", w.shape(1), " (layout is NCHW)");
  pydl::Conv2dGeom g;
  g.N = x.shape(0);
  g.C = x.shape(1);
  g.H = x.shape(2);
  g.W = x.shape(3);
  g.K = w.shape(0);
  g.R = w.shape(2);
  g.S = w.shape(3);
  g.sh = stride[0];
  g.sw = stride[1];
  g.pt = pad[0];
  g.pb = pad[1];
  g.pl = pad[2];
  g.pr = pad[3];
  g.dh = dil[0];
  g.dw = dil[1];
  pydl::conv2d_geometry(g, op);
  return g;
}

pydl::ConvAct parse_act(const std::string& a, const char* op) {
  if (a == "none" || a == "linear" || a.empty()) return pydl::ConvAct::none;
  if (a == "relu") return pydl::ConvAct::relu;
  PYDL_CHECK(false, op, "unsupported fused activation '", a, "' (expected 'none' or 'relu')");
  return pydl::ConvAct::none;
}

void check_algo_name(const std::string& algo, const pydl::Conv2dGeom& g, const char* op) {
  const bool known = algo == "naive" || algo == "direct" || algo == "im2col" || algo == "winograd_f2" ||
                     algo == "winograd_f4";
  PYDL_CHECK(known, op, "unknown algo '", algo, "' (expected naive, direct, im2col, winograd_f2 or winograd_f4)");
  if (algo.rfind("winograd", 0) == 0)
    PYDL_CHECK(pydl::winograd_applicable(g), op, "algo '", algo, "' needs a 3x3 filter with stride 1 and dilation 1, got ",
               g.R, "x", g.S, " stride (", g.sh, ", ", g.sw, ") dilation (", g.dh, ", ", g.dw, ")");
}

template <typename T>
py::array make_out(const py::object& out, const std::vector<py::ssize_t>& shape, const char* op, const char* name) {
  if (out.is_none()) return pydl::new_output<T>(shape);
  if (!py::isinstance<py::array>(out))
    throw py::type_error(std::string("[") + op + "] " + name + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(out).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(out);
  pydl::out_ptr<T>(a, op, name);
  pydl::check_shape(a, shape, op, name);
  return a;
}

template <typename T>
py::array conv_forward(const py::array& x, const py::array& w, const py::object& b, const py::object& out,
                       const Pair& stride, const Quad& pad, const Pair& dil, const std::string& algo,
                       const std::string& act_name) {
  const char* op = "conv2d";
  const T* xp = pydl::in_ptr<T>(x, op, "x", 4);
  const T* wp = pydl::in_ptr<T>(w, op, "w", 4);
  pydl::Conv2dGeom g = make_geom(x, w, stride, pad, dil, op);
  const T* bp = nullptr;
  py::array barr;
  if (!b.is_none()) {
    barr = py::reinterpret_borrow<py::array>(b);
    bp = pydl::in_ptr<T>(barr, op, "b", 1);
    PYDL_CHECK(barr.shape(0) == g.K, op, "b has shape ", pydl::shape_str(barr), ", expected (", g.K, ",) for w ",
               pydl::shape_str(w));
  }
  check_algo_name(algo, g, op);
  const pydl::ConvAct act = parse_act(act_name, op);
  py::array y = make_out<T>(out, {g.N, g.K, g.P, g.Q}, op, "out");
  T* yp = static_cast<T*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    if (algo == "naive") {
      pydl::conv2d_forward_naive<T>(yp, xp, wp, bp, g);
      pydl::conv2d_apply_act<T>(yp, g.N * g.K * g.P * g.Q, act);
    } else if (algo == "direct") {
      pydl::conv2d_forward_direct<T>(yp, xp, wp, bp, g, act);
    } else if (algo == "im2col") {
      pydl::conv2d_forward_im2col<T>(yp, xp, wp, bp, g, act);
    } else {
      pydl::conv2d_forward_winograd<T>(yp, xp, wp, bp, g, algo == "winograd_f2" ? 2 : 4, act);
    }
  }
  return y;
}

template <typename T>
py::tuple conv_backward(const py::array& dy, const py::array& x, const py::array& w, const Pair& stride,
                        const Quad& pad, const Pair& dil, const std::string& algo, bool need_dx, bool has_bias,
                        const py::object& dx_out, const py::object& dw_out, const py::object& db_out) {
  const char* op = "conv2d_backward";
  const T* dyp = pydl::in_ptr<T>(dy, op, "dy", 4);
  const T* xp = pydl::in_ptr<T>(x, op, "x", 4);
  const T* wp = pydl::in_ptr<T>(w, op, "w", 4);
  pydl::Conv2dGeom g = make_geom(x, w, stride, pad, dil, op);
  pydl::check_shape(dy, {g.N, g.K, g.P, g.Q}, op, "dy");
  check_algo_name(algo, g, op);
  py::object dx = py::none(), db = py::none();
  T* dxp = nullptr;
  T* dbp = nullptr;
  if (need_dx) {
    py::array a = make_out<T>(dx_out, {g.N, g.C, g.H, g.W}, op, "dx");
    dxp = static_cast<T*>(a.mutable_data());
    dx = a;
  }
  py::array dwa = make_out<T>(dw_out, {g.K, g.C, g.R, g.S}, op, "dw");
  T* dwp = static_cast<T*>(dwa.mutable_data());
  if (has_bias) {
    py::array a = make_out<T>(db_out, {g.K}, op, "db");
    dbp = static_cast<T*>(a.mutable_data());
    db = a;
  }
  {
    py::gil_scoped_release release;
    if (algo == "naive") {
      if (dxp) pydl::conv2d_backward_input_naive<T>(dxp, dyp, wp, g);
      pydl::conv2d_backward_weight_naive<T>(dwp, dbp, dyp, xp, g);
    } else {
      if (dxp) {
        if (algo == "direct") pydl::conv2d_backward_input_direct<T>(dxp, dyp, wp, g);
        else if (algo == "im2col") pydl::conv2d_backward_input_im2col<T>(dxp, dyp, wp, g);
        else pydl::conv2d_backward_input_winograd<T>(dxp, dyp, wp, g, algo == "winograd_f2" ? 2 : 4);
      }
      pydl::conv2d_backward_weight_im2col<T>(dwp, dbp, dyp, xp, g);
    }
  }
  return py::make_tuple(dx, dwa, db);
}

// ---- pooling ------------------------------------------------------------------------------------

pydl::Pool2dGeom make_pool_geom(const py::array& x, const Pair& pool, const Pair& stride, const Quad& pad,
                                const char* op) {
  PYDL_CHECK(x.ndim() == 4, op, "x has ", x.ndim(), " dims ", pydl::shape_str(x), ", expected 4 (N, C, H, W)");
  pydl::Pool2dGeom g;
  g.N = x.shape(0);
  g.C = x.shape(1);
  g.H = x.shape(2);
  g.W = x.shape(3);
  g.R = pool[0];
  g.S = pool[1];
  g.sh = stride[0];
  g.sw = stride[1];
  g.pt = pad[0];
  g.pb = pad[1];
  g.pl = pad[2];
  g.pr = pad[3];
  pydl::pool2d_geometry(g, op);
  return g;
}

template <typename T>
py::tuple maxpool_forward(const py::array& x, const Pair& pool, const Pair& stride, const Quad& pad,
                          bool want_argmax, bool naive, const py::object& out, const py::object& argmax_out) {
  const char* op = "max_pool2d";
  const T* xp = pydl::in_ptr<T>(x, op, "x", 4);
  pydl::Pool2dGeom g = make_pool_geom(x, pool, stride, pad, op);
  const std::vector<py::ssize_t> shape{g.N, g.C, g.P, g.Q};
  py::array y = make_out<T>(out, shape, op, "out");
  py::object am = py::none();
  std::int32_t* amp = nullptr;
  if (want_argmax) {
    py::array a;
    if (argmax_out.is_none()) {
      a = pydl::new_output<std::int32_t>(shape);
    } else {
      if (!py::isinstance<py::array>(argmax_out))
        throw py::type_error(std::string("[") + op + "] argmax_out must be a numpy.ndarray, got " +
                             std::string(py::str(py::type::of(argmax_out).attr("__name__"))));
      a = py::reinterpret_borrow<py::array>(argmax_out);
      PYDL_CHECK(a.dtype().is(py::dtype::of<std::int32_t>()) && (a.flags() & py::array::c_style) && a.writeable(), op,
                 "argmax_out must be a writeable C-contiguous int32 array");
      pydl::check_shape(a, shape, op, "argmax_out");
    }
    amp = static_cast<std::int32_t*>(a.mutable_data());
    am = a;
  }
  T* yp = static_cast<T*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    if (naive) pydl::maxpool2d_forward_naive<T>(yp, amp, xp, g);
    else pydl::maxpool2d_forward<T>(yp, amp, xp, g);
  }
  return py::make_tuple(y, am);
}

template <typename T>
py::array maxpool_backward(const py::array& dy, const py::array& argmax, const std::vector<index_t>& x_shape,
                           const std::optional<Pair>& pool, const std::optional<Pair>& stride,
                           const std::optional<Quad>& pad) {
  const char* op = "max_pool2d_backward";
  const T* dyp = pydl::in_ptr<T>(dy, op, "dy", 4);
  PYDL_CHECK(x_shape.size() == 4, op, "x_shape must have 4 entries (N, C, H, W), got ", x_shape.size());
  PYDL_CHECK(x_shape[2] >= 1 && x_shape[3] >= 1 && x_shape[2] * x_shape[3] < (index_t(1) << 31), op,
             "x_shape (H, W) must be positive and H*W < 2^31");
  PYDL_CHECK(dy.shape(0) == x_shape[0] && dy.shape(1) == x_shape[1], op, "dy ", pydl::shape_str(dy),
             " does not match x_shape (N, C) = (", x_shape[0], ", ", x_shape[1], ")");
  pydl::Pool2dGeom g;
  g.N = x_shape[0];
  g.C = x_shape[1];
  g.H = x_shape[2];
  g.W = x_shape[3];
  g.P = dy.shape(2);
  g.Q = dy.shape(3);
  // The pooling's window, stride and padding, when given (all three), let the kernel gather
  // (pool2d.h); dy must then have the pooled shape.
  PYDL_CHECK(pool.has_value() == stride.has_value() && pool.has_value() == pad.has_value(), op,
             "pool, stride and padding are given together or not at all");
  const bool windows = pool.has_value();
  if (windows) {
    pydl::Pool2dGeom w = g;
    w.R = (*pool)[0];
    w.S = (*pool)[1];
    w.sh = (*stride)[0];
    w.sw = (*stride)[1];
    w.pt = (*pad)[0];
    w.pb = (*pad)[1];
    w.pl = (*pad)[2];
    w.pr = (*pad)[3];
    pydl::pool2d_geometry(w, op);
    PYDL_CHECK(w.P == g.P && w.Q == g.Q, op, "dy ", pydl::shape_str(dy), " does not have the pooled shape (",
               g.N, ", ", g.C, ", ", w.P, ", ", w.Q, ") of x_shape with pool (", w.R, ", ", w.S, "), stride (",
               w.sh, ", ", w.sw, ") and padding (", w.pt, ", ", w.pb, ", ", w.pl, ", ", w.pr, ")");
    g = w;
  }
  PYDL_CHECK(argmax.dtype().is(py::dtype::of<std::int32_t>()) && (argmax.flags() & py::array::c_style), op,
             "argmax must be a C-contiguous int32 array (as returned by max_pool2d)");
  pydl::check_shape(argmax, {g.N, g.C, g.P, g.Q}, op, "argmax");
  const std::int32_t* ap = static_cast<const std::int32_t*>(argmax.data());
  py::array_t<T> dx = pydl::new_output<T>({g.N, g.C, g.H, g.W});
  T* dxp = dx.mutable_data();
  bool ok;
  {
    py::gil_scoped_release release;
    // The kernel checks every index it scatters (a bad one would write out of bounds) and
    // reports it instead of writing; the dense 2x2 path only accepts in-block, hence in-plane,
    // indices. One pass over argmax instead of a separate serial check.
    ok = pydl::maxpool2d_backward<T>(dxp, dyp, ap, g, windows);
  }
  PYDL_CHECK(ok, op, "argmax holds indices outside [0, H*W) = [0, ", g.H * g.W, ")");
  return dx;
}

template <typename T>
py::array avgpool_forward(const py::array& x, const Pair& pool, const Pair& stride, const Quad& pad, bool cip,
                          bool naive, const py::object& out) {
  const char* op = "avg_pool2d";
  const T* xp = pydl::in_ptr<T>(x, op, "x", 4);
  pydl::Pool2dGeom g = make_pool_geom(x, pool, stride, pad, op);
  py::array y = make_out<T>(out, {g.N, g.C, g.P, g.Q}, op, "out");
  T* yp = static_cast<T*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    if (naive) pydl::avgpool2d_forward_naive<T>(yp, xp, g, cip);
    else pydl::avgpool2d_forward<T>(yp, xp, g, cip);
  }
  return y;
}

template <typename T>
py::array avgpool_backward(const py::array& dy, const std::vector<index_t>& x_shape, const Pair& pool,
                           const Pair& stride, const Quad& pad, bool cip, bool naive) {
  const char* op = "avg_pool2d_backward";
  const T* dyp = pydl::in_ptr<T>(dy, op, "dy", 4);
  PYDL_CHECK(x_shape.size() == 4, op, "x_shape must have 4 entries (N, C, H, W), got ", x_shape.size());
  pydl::Pool2dGeom g;
  g.N = x_shape[0];
  g.C = x_shape[1];
  g.H = x_shape[2];
  g.W = x_shape[3];
  g.R = pool[0];
  g.S = pool[1];
  g.sh = stride[0];
  g.sw = stride[1];
  g.pt = pad[0];
  g.pb = pad[1];
  g.pl = pad[2];
  g.pr = pad[3];
  pydl::pool2d_geometry(g, op);
  pydl::check_shape(dy, {g.N, g.C, g.P, g.Q}, op, "dy");
  py::array_t<T> dx = pydl::new_output<T>({g.N, g.C, g.H, g.W});
  T* dxp = dx.mutable_data();
  {
    py::gil_scoped_release release;
    if (naive) pydl::avgpool2d_backward_naive<T>(dxp, dyp, g, cip);
    else pydl::avgpool2d_backward<T>(dxp, dyp, g, cip);
  }
  return dx;
}

template <typename T>
py::array gap_forward(const py::array& x) {
  const char* op = "global_avg_pool2d";
  const T* xp = pydl::in_ptr<T>(x, op, "x", 4);
  PYDL_CHECK(x.shape(2) >= 1 && x.shape(3) >= 1, op, "x ", pydl::shape_str(x), " has an empty plane");
  py::array_t<T> y(std::vector<py::ssize_t>{x.shape(0), x.shape(1)});
  T* yp = y.mutable_data();
  const index_t planes = x.shape(0) * x.shape(1), hw = x.shape(2) * x.shape(3);
  {
    py::gil_scoped_release release;
    pydl::global_avgpool2d_forward<T>(yp, xp, planes, hw);
  }
  return y;
}

template <typename T>
py::array gap_backward(const py::array& dy, const std::vector<index_t>& x_shape) {
  const char* op = "global_avg_pool2d_backward";
  const T* dyp = pydl::in_ptr<T>(dy, op, "dy", 2);
  PYDL_CHECK(x_shape.size() == 4, op, "x_shape must have 4 entries (N, C, H, W), got ", x_shape.size());
  PYDL_CHECK(x_shape[0] >= 0 && x_shape[1] >= 0 && x_shape[2] >= 1 && x_shape[3] >= 1, op,
             "x_shape must have N, C >= 0 and H, W >= 1");
  pydl::check_shape(dy, {x_shape[0], x_shape[1]}, op, "dy");
  py::array_t<T> dx = pydl::new_output<T>({x_shape[0], x_shape[1], x_shape[2], x_shape[3]});
  T* dxp = dx.mutable_data();
  {
    py::gil_scoped_release release;
    pydl::global_avgpool2d_backward<T>(dxp, dyp, x_shape[0] * x_shape[1], x_shape[2] * x_shape[3]);
  }
  return dx;
}

bool is_f64(const py::array& a) { return pydl::is_float64(a); }

}  // namespace

void init_conv(py::module_& m) {
  m.def(
      "conv2d_output_shape",
      [](const std::vector<index_t>& xs, const std::vector<index_t>& ws, const Pair& stride, const Quad& pad,
         const Pair& dil) {
        const char* op = "conv2d";
        PYDL_CHECK(xs.size() == 4, op, "x must have 4 dims (N, C, H, W), got ", xs.size());
        PYDL_CHECK(ws.size() == 4, op, "w must have 4 dims (K, C, R, S), got ", ws.size());
        PYDL_CHECK(xs[1] == ws[1], op, "channel mismatch: x has C = ", xs[1], " but w expects C = ", ws[1]);
        pydl::Conv2dGeom g;
        g.N = xs[0]; g.C = xs[1]; g.H = xs[2]; g.W = xs[3];
        g.K = ws[0]; g.R = ws[2]; g.S = ws[3];
        g.sh = stride[0]; g.sw = stride[1];
        g.pt = pad[0]; g.pb = pad[1]; g.pl = pad[2]; g.pr = pad[3];
        g.dh = dil[0]; g.dw = dil[1];
        pydl::conv2d_geometry(g, op);
        return std::make_tuple(g.N, g.K, g.P, g.Q);
      },
      py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"));
  m.def(
      "conv2d_forward",
      [](const py::array& x, const py::array& w, const py::object& b, const py::object& out, const Pair& stride,
         const Quad& pad, const Pair& dil, const std::string& algo, const std::string& act) {
        return is_f64(x) ? conv_forward<double>(x, w, b, out, stride, pad, dil, algo, act)
                         : conv_forward<float>(x, w, b, out, stride, pad, dil, algo, act);
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("out"), py::arg("stride"), py::arg("padding"),
      py::arg("dilation"), py::arg("algo"), py::arg("activation") = "none");
  m.def(
      "conv2d_backward",
      [](const py::array& dy, const py::array& x, const py::array& w, const Pair& stride, const Quad& pad,
         const Pair& dil, const std::string& algo, bool need_dx, bool has_bias, const py::object& dx_out,
         const py::object& dw_out, const py::object& db_out) {
        return is_f64(x) ? conv_backward<double>(dy, x, w, stride, pad, dil, algo, need_dx, has_bias, dx_out, dw_out, db_out)
                         : conv_backward<float>(dy, x, w, stride, pad, dil, algo, need_dx, has_bias, dx_out, dw_out, db_out);
      },
      py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
      py::arg("algo"), py::arg("need_dx") = true, py::arg("has_bias") = true, py::arg("dx_out") = py::none(),
      py::arg("dw_out") = py::none(), py::arg("db_out") = py::none());
  m.def(
      "max_pool2d_forward",
      [](const py::array& x, const Pair& pool, const Pair& stride, const Quad& pad, bool want_argmax, bool naive,
         const py::object& out, const py::object& argmax_out) {
        return is_f64(x) ? maxpool_forward<double>(x, pool, stride, pad, want_argmax, naive, out, argmax_out)
                         : maxpool_forward<float>(x, pool, stride, pad, want_argmax, naive, out, argmax_out);
      },
      py::arg("x"), py::arg("pool"), py::arg("stride"), py::arg("padding"), py::arg("return_argmax") = true,
      py::arg("naive") = false, py::arg("out") = py::none(), py::arg("argmax_out") = py::none());
  m.def(
      "max_pool2d_backward",
      [](const py::array& dy, const py::array& argmax, const std::vector<index_t>& xs, const std::optional<Pair>& pool,
         const std::optional<Pair>& stride, const std::optional<Quad>& pad) {
        return is_f64(dy) ? maxpool_backward<double>(dy, argmax, xs, pool, stride, pad)
                          : maxpool_backward<float>(dy, argmax, xs, pool, stride, pad);
      },
      py::arg("dy"), py::arg("argmax"), py::arg("x_shape"), py::arg("pool") = py::none(),
      py::arg("stride") = py::none(), py::arg("padding") = py::none());
  m.def(
      "avg_pool2d_forward",
      [](const py::array& x, const Pair& pool, const Pair& stride, const Quad& pad, bool cip, bool naive,
         const py::object& out) {
        return is_f64(x) ? avgpool_forward<double>(x, pool, stride, pad, cip, naive, out)
                         : avgpool_forward<float>(x, pool, stride, pad, cip, naive, out);
      },
      py::arg("x"), py::arg("pool"), py::arg("stride"), py::arg("padding"), py::arg("count_include_pad") = true,
      py::arg("naive") = false, py::arg("out") = py::none());
  m.def(
      "avg_pool2d_backward",
      [](const py::array& dy, const std::vector<index_t>& xs, const Pair& pool, const Pair& stride, const Quad& pad,
         bool cip, bool naive) {
        return is_f64(dy) ? avgpool_backward<double>(dy, xs, pool, stride, pad, cip, naive)
                          : avgpool_backward<float>(dy, xs, pool, stride, pad, cip, naive);
      },
      py::arg("dy"), py::arg("x_shape"), py::arg("pool"), py::arg("stride"), py::arg("padding"),
      py::arg("count_include_pad") = true, py::arg("naive") = false);
  m.def(
      "global_avg_pool2d_forward",
      [](const py::array& x) { return is_f64(x) ? gap_forward<double>(x) : gap_forward<float>(x); }, py::arg("x"));
  m.def(
      "global_avg_pool2d_backward",
      [](const py::array& dy, const std::vector<index_t>& xs) {
        return is_f64(dy) ? gap_backward<double>(dy, xs) : gap_backward<float>(dy, xs);
      },
      py::arg("dy"), py::arg("x_shape"));
}
