// Layer normalisation over the last axis (layernorm.h). x, y, dy, dx have any rank >= 1 and are
// C-contiguous of one dtype (float32 or float64); gamma, beta, dgamma, dbeta are (C,) (gamma and
// beta may be None: 1 and 0); mean and rstd have x's shape without its last axis.
//
//   layernorm_forward(x, gamma, beta, eps, y, mean, rstd)
//   layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta)
#include <vector>

#include "array_check.h"
#include "layernorm.h"

namespace py = pybind11;
using pydl::index_t;

namespace {

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

template <typename F>
const F* opt_vec(const py::object& o, index_t C, const char* op, const char* name) {
  if (o.is_none()) return nullptr;
  PYDL_CHECK(py::isinstance<py::array>(o), op, name, " must be an array or None");
  py::array a = py::reinterpret_borrow<py::array>(o);
  const F* p = pydl::in_ptr<F>(a, op, name);
  pydl::check_shape(a, {C}, op, name);
  return p;
}

template <typename F>
void forward_impl(const py::array& x, const py::object& gamma, const py::object& beta, double eps, py::array& y,
                  py::array& mean, py::array& rstd) {
  const char* op = "layer_norm";
  pydl::check_array<F>(x, op, "x");
  PYDL_CHECK(x.ndim() >= 1, op, "x must have at least 1 dim");
  const auto shp = shape_of(x);
  const index_t C = shp.back();
  const index_t R = C == 0 ? 0 : x.size() / C;
  PYDL_CHECK(C >= 1, op, "x ", pydl::shape_str(x), " has an empty last axis");
  const F* pg = opt_vec<F>(gamma, C, op, "gamma");
  const F* pb = opt_vec<F>(beta, C, op, "beta");
  F* py_ = pydl::out_ptr<F>(y, op, "y");
  pydl::check_shape(y, shp, op, "y");
  const std::vector<py::ssize_t> rs(shp.begin(), shp.end() - 1);
  F* pm = pydl::out_ptr<F>(mean, op, "mean");
  pydl::check_shape(mean, rs, op, "mean");
  F* pr = pydl::out_ptr<F>(rstd, op, "rstd");
  pydl::check_shape(rstd, rs, op, "rstd");
  const F* px = static_cast<const F*>(x.data());
  PYDL_CHECK(eps >= 0.0 && std::isfinite(eps), op, "eps must be finite and >= 0, got ", eps);
  py::gil_scoped_release release;
  pydl::layernorm_forward<F>(py_, pm, pr, px, pg, pb, R, C, eps);
}

template <typename F>
void backward_impl(const py::array& dy, const py::array& x, const py::object& gamma, const py::array& mean,
                   const py::array& rstd, py::array& dx, py::array& dgamma, py::array& dbeta) {
  const char* op = "layer_norm_backward";
  pydl::check_array<F>(x, op, "x");
  PYDL_CHECK(x.ndim() >= 1, op, "x must have at least 1 dim");
  const auto shp = shape_of(x);
  const index_t C = shp.back();
  PYDL_CHECK(C >= 1, op, "x ", pydl::shape_str(x), " has an empty last axis");
  const index_t R = x.size() / C;
  const std::vector<py::ssize_t> rs(shp.begin(), shp.end() - 1);
  const F* pdy = pydl::in_ptr<F>(dy, op, "dy");
  pydl::check_shape(dy, shp, op, "dy");
  const F* pg = opt_vec<F>(gamma, C, op, "gamma");
  const F* pm = pydl::in_ptr<F>(mean, op, "mean");
  pydl::check_shape(mean, rs, op, "mean");
  const F* pr = pydl::in_ptr<F>(rstd, op, "rstd");
  pydl::check_shape(rstd, rs, op, "rstd");
  F* pdx = pydl::out_ptr<F>(dx, op, "dx");
  pydl::check_shape(dx, shp, op, "dx");
  F* pdg = pydl::out_ptr<F>(dgamma, op, "dgamma");
  pydl::check_shape(dgamma, {C}, op, "dgamma");
  F* pdb = pydl::out_ptr<F>(dbeta, op, "dbeta");
  pydl::check_shape(dbeta, {C}, op, "dbeta");
  const F* px = static_cast<const F*>(x.data());
  py::gil_scoped_release release;
  pydl::layernorm_backward<F>(pdx, pdg, pdb, pdy, px, pg, pm, pr, R, C);
}

}  // namespace

void init_layernorm(py::module_& m) {
  m.def(
      "layernorm_forward",
      [](const py::array& x, const py::object& gamma, const py::object& beta, double eps, py::array& y,
         py::array& mean, py::array& rstd) {
        if (pydl::is_float64(x)) forward_impl<double>(x, gamma, beta, eps, y, mean, rstd);
        else forward_impl<float>(x, gamma, beta, eps, y, mean, rstd);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps"), py::arg("y"), py::arg("mean"),
      py::arg("rstd"));
  m.def(
      "layernorm_backward",
      [](const py::array& dy, const py::array& x, const py::object& gamma, const py::array& mean,
         const py::array& rstd, py::array& dx, py::array& dgamma, py::array& dbeta) {
        if (pydl::is_float64(x)) backward_impl<double>(dy, x, gamma, mean, rstd, dx, dgamma, dbeta);
        else backward_impl<float>(dy, x, gamma, mean, rstd, dx, dgamma, dbeta);
      },
      py::arg("dy"), py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("rstd"), py::arg("dx"),
      py::arg("dgamma"), py::arg("dbeta"));
}
