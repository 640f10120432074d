// Optimizer update bindings. The parameter and its slots are updated IN PLACE, so they are checked
// strictly: exact dtype (float32 or float64, the slots the same as the parameter), C-contiguous,
// writeable, the parameter's shape, and no overlap. Anything else is a ValueError, never a copy
// that would silently drop the update. The gradient is read only: it must have the parameter's
// dtype and shape (pydl.ops.optim casts it on purpose) and must not overlap an in-place array.
//
// Common keyword arguments of every update (see csrc/optim.h for the order they apply in):
//   grad_scale=1.0, clip_value=None, l2=0.0, decay=0.0
#include <pybind11/stl.h>

#include <optional>
#include <vector>

#include "array_check.h"
#include "optim.h"

namespace py = pybind11;
using pydl::index_t;

namespace {

struct Prep {
  double grad_scale = 1.0;
  std::optional<double> clip_value;
  double l2 = 0.0;
  double decay = 0.0;
  void fill(pydl::OptimHyper& h) const {
    h.grad_scale = grad_scale;
    h.clip = clip_value.has_value();
    h.clip_value = clip_value.value_or(0.0);
    h.l2 = l2;
    h.decay = decay;
  }
};

bool overlaps(const py::array& a, const py::array& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// Checked raw pointers for one update call: param, up to three slots (None allowed where the
// rule has an optional slot), and the gradient.
template <typename T>
struct Args {
  T* p = nullptr;
  T* s[3] = {nullptr, nullptr, nullptr};
  const T* g = nullptr;
  index_t n = 0;
};

template <typename T>
Args<T> check_args(const char* op, py::array& param, const std::vector<std::pair<const char*, py::object>>& slots,
                   const py::array& grad) {
  Args<T> r;
  r.p = pydl::out_ptr<T>(param, op, "param");
  std::vector<py::ssize_t> shape(param.shape(), param.shape() + param.ndim());
  std::vector<py::array> held;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    const char* name = slots[k].first;
    const py::object& obj = slots[k].second;
    if (obj.is_none()) continue;
    PYDL_CHECK(py::isinstance<py::array>(obj), op, name, " must be a numpy.ndarray, got ",
               std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(obj);
    PYDL_CHECK(a.dtype().is(param.dtype()), op, name, " has dtype ", std::string(py::str(a.dtype())),
               " but param has dtype ", std::string(py::str(param.dtype())),
               " (an in-place slot must match exactly)");
    r.s[k] = pydl::out_ptr<T>(a, op, name);
    pydl::check_shape(a, shape, op, name);
    PYDL_CHECK(!overlaps(a, param), op, name, " overlaps param in memory");
    for (std::size_t j = 0; j < held.size(); ++j)
      PYDL_CHECK(!overlaps(a, held[j]), op, name, " overlaps another slot in memory");
    held.push_back(a);
  }
  PYDL_CHECK(grad.dtype().is(param.dtype()), op, "grad has dtype ", std::string(py::str(grad.dtype())),
             " but param has dtype ", std::string(py::str(param.dtype())));
  r.g = pydl::in_ptr<T>(grad, op, "grad");
  pydl::check_shape(grad, shape, op, "grad");
  PYDL_CHECK(!overlaps(grad, param), op, "grad overlaps param in memory");
  for (const auto& a : held) PYDL_CHECK(!overlaps(grad, a), op, "grad overlaps a slot in memory");
  r.n = static_cast<index_t>(param.size());
  return r;
}

template <typename F>
void dispatch(const char* op, const py::array& param, F&& f, const char* name = "param") {
  if (pydl::is_float32(param)) {
    f(float{});
  } else if (pydl::is_float64(param)) {
    f(double{});
  } else {
    PYDL_CHECK(false, op, name, " must have dtype float32 or float64, got ", std::string(py::str(param.dtype())));
  }
}

#define PYDL_PREP_ARGS                                                                                 \
  py::arg("grad_scale") = 1.0, py::arg("clip_value") = py::none(), py::arg("l2") = 0.0,             \
      py::arg("decay") = 0.0

template <bool Naive>
void bind_family(py::module_& m, const std::string& suffix) {
  const std::string sgd = "sgd_update" + suffix, mom = "momentum_update" + suffix,
                    ada = "adagrad_update" + suffix, rms = "rmsprop_update" + suffix,
                    adam = "adam_update" + suffix, nadam = "nadam_update" + suffix;

  m.def(
      sgd.c_str(),
      [sgd](py::array param, py::array grad, double lr, double grad_scale, std::optional<double> clip_value,
            double l2, double decay) {
        dispatch(sgd.c_str(), param, [&](auto tag) {
          using T = decltype(tag);
          auto a = check_args<T>(sgd.c_str(), param, {}, grad);
          pydl::OptimHyper h;
          Prep{grad_scale, clip_value, l2, decay}.fill(h);
          h.lr = lr;
          py::gil_scoped_release release;
          if (Naive) pydl::sgd_update_naive<T>(a.p, a.g, a.n, h);
          else pydl::sgd_update<T>(a.p, a.g, a.n, h);
        });
      },
      py::arg("param"), py::arg("grad"), py::arg("lr"), PYDL_PREP_ARGS,
      "In place: p -= lr * g (after the common gradient preparation).");

  m.def(
      mom.c_str(),
      [mom](py::array param, py::object velocity, py::array grad, double lr, double momentum, bool nesterov,
            double grad_scale, std::optional<double> clip_value, double l2, double decay) {
        dispatch(mom.c_str(), param, [&](auto tag) {
          using T = decltype(tag);
          PYDL_CHECK(!velocity.is_none(), mom.c_str(), "velocity is required");
          auto a = check_args<T>(mom.c_str(), param, {{"velocity", velocity}}, grad);
          pydl::OptimHyper h;
          Prep{grad_scale, clip_value, l2, decay}.fill(h);
          h.lr = lr;
          h.momentum = momentum;
          h.nesterov = nesterov;
          py::gil_scoped_release release;
          if (Naive) pydl::momentum_update_naive<T>(a.p, a.s[0], a.g, a.n, h);
          else pydl::momentum_update<T>(a.p, a.s[0], a.g, a.n, h);
        });
      },
      py::arg("param"), py::arg("velocity"), py::arg("grad"), py::arg("lr"), py::arg("momentum"),
      py::arg("nesterov") = false, PYDL_PREP_ARGS,
      "In place: v = momentum*v - lr*g; p += v (Nesterov: p += momentum*v - lr*g).");

  m.def(
      ada.c_str(),
      [ada](py::array param, py::object accumulator, py::array grad, double lr, double eps_in, double eps_out,
            double grad_scale, std::optional<double> clip_value, double l2, double decay) {
        dispatch(ada.c_str(), param, [&](auto tag) {
          using T = decltype(tag);
          PYDL_CHECK(!accumulator.is_none(), ada.c_str(), "accumulator is required");
          auto a = check_args<T>(ada.c_str(), param, {{"accumulator", accumulator}}, grad);
          pydl::OptimHyper h;
          Prep{grad_scale, clip_value, l2, decay}.fill(h);
          h.lr = lr;
          h.eps_in = eps_in;
          h.eps_out = eps_out;
          py::gil_scoped_release release;
          if (Naive) pydl::adagrad_update_naive<T>(a.p, a.s[0], a.g, a.n, h);
          else pydl::adagrad_update<T>(a.p, a.s[0], a.g, a.n, h);
        });
      },
      py::arg("param"), py::arg("accumulator"), py::arg("grad"), py::arg("lr"), py::arg("eps_in") = 0.0,
      py::arg("eps_out") = 0.0, PYDL_PREP_ARGS,
      "In place: acc += g^2; p -= lr*g / (sqrt(acc + eps_in) + eps_out).");

  m.def(
      rms.c_str(),
      [rms](py::array param, py::object velocity, py::object momentum_slot, py::object average_gradient,
            py::array grad, double lr, double rho, double momentum, double eps_in, double eps_out,
            double grad_scale, std::optional<double> clip_value, double l2, double decay) {
        dispatch(rms.c_str(), param, [&](auto tag) {
          using T = decltype(tag);
          PYDL_CHECK(!velocity.is_none(), rms.c_str(), "velocity is required");
          auto a = check_args<T>(rms.c_str(), param,
                                 {{"velocity", velocity}, {"momentum_slot", momentum_slot},
                                  {"average_gradient", average_gradient}},
                                 grad);
          pydl::OptimHyper h;
          Prep{grad_scale, clip_value, l2, decay}.fill(h);
          h.lr = lr;
          h.rho = rho;
          h.momentum = momentum;
          h.eps_in = eps_in;
          h.eps_out = eps_out;
          py::gil_scoped_release release;
          if (Naive) pydl::rmsprop_update_naive<T>(a.p, a.s[0], a.s[1], a.s[2], a.g, a.n, h);
          else pydl::rmsprop_update<T>(a.p, a.s[0], a.s[1], a.s[2], a.g, a.n, h);
        });
      },
      py::arg("param"), py::arg("velocity"), py::arg("momentum_slot"), py::arg("average_gradient"),
      py::arg("grad"), py::arg("lr"), py::arg("rho"), py::arg("momentum") = 0.0, py::arg("eps_in") = 0.0,
      py::arg("eps_out") = 0.0, PYDL_PREP_ARGS,
      "In place RMSprop; momentum_slot / average_gradient may be None (no momentum / not centered).");

  m.def(
      adam.c_str(),
      [adam](py::array param, py::object m_slot, py::object v_slot, py::object vhat, py::array grad, double lr_t,
             double beta_1, double beta_2, double epsilon, double grad_scale, std::optional<double> clip_value,
             double l2, double decay) {
        dispatch(adam.c_str(), param, [&](auto tag) {
          using T = decltype(tag);
          PYDL_CHECK(!m_slot.is_none() && !v_slot.is_none(), adam.c_str(), "m and v are required");
          auto a = check_args<T>(adam.c_str(), param, {{"m", m_slot}, {"v", v_slot}, {"vhat", vhat}}, grad);
          pydl::OptimHyper h;
          Prep{grad_scale, clip_value, l2, decay}.fill(h);
          h.lr = lr_t;
          h.beta1 = beta_1;
          h.beta2 = beta_2;
          h.eps_out = epsilon;
          py::gil_scoped_release release;
          if (Naive) pydl::adam_update_naive<T>(a.p, a.s[0], a.s[1], a.s[2], a.g, a.n, h);
          else pydl::adam_update<T>(a.p, a.s[0], a.s[1], a.s[2], a.g, a.n, h);
        });
      },
      py::arg("param"), py::arg("m"), py::arg("v"), py::arg("vhat"), py::arg("grad"), py::arg("lr_t"),
      py::arg("beta_1"), py::arg("beta_2"), py::arg("epsilon"), PYDL_PREP_ARGS,
      "In place Adam with the bias-corrected step lr_t; vhat may be None (no AMSGrad).");

  m.def(
      nadam.c_str(),
      [nadam](py::array param, py::object m_slot, py::object v_slot, py::array grad, double m_coef, double g_coef,
              double v_scale, double beta_1, double beta_2, double epsilon, double grad_scale,
              std::optional<double> clip_value, double l2, double decay) {
        dispatch(nadam.c_str(), param, [&](auto tag) {
          using T = decltype(tag);
          PYDL_CHECK(!m_slot.is_none() && !v_slot.is_none(), nadam.c_str(), "m and v are required");
          auto a = check_args<T>(nadam.c_str(), param, {{"m", m_slot}, {"v", v_slot}}, grad);
          pydl::OptimHyper h;
          Prep{grad_scale, clip_value, l2, decay}.fill(h);
          h.mcoef = m_coef;
          h.gcoef = g_coef;
          h.vscale = v_scale;
          h.beta1 = beta_1;
          h.beta2 = beta_2;
          h.eps_out = epsilon;
          py::gil_scoped_release release;
          if (Naive) pydl::nadam_update_naive<T>(a.p, a.s[0], a.s[1], a.g, a.n, h);
          else pydl::nadam_update<T>(a.p, a.s[0], a.s[1], a.g, a.n, h);
        });
      },
      py::arg("param"), py::arg("m"), py::arg("v"), py::arg("grad"), py::arg("m_coef"), py::arg("g_coef"),
      py::arg("v_scale"), py::arg("beta_1"), py::arg("beta_2"), py::arg("epsilon"), PYDL_PREP_ARGS,
      "In place Nadam: p -= (m_coef * m + g_coef * g) / (sqrt(v * v_scale) + epsilon) after the moment updates.");

  const std::string ss = "sum_squares" + suffix;
  m.def(
      ss.c_str(),
      [ss](const py::array& x) {
        double r = 0.0;
        dispatch(ss.c_str(), x, [&](auto tag) {
          using T = decltype(tag);
          const T* px = pydl::in_ptr<T>(x, ss.c_str(), "x");
          const index_t n = static_cast<index_t>(x.size());
          py::gil_scoped_release release;
          r = Naive ? pydl::sum_squares_naive<T>(px, n) : pydl::sum_squares<T>(px, n);
        }, "x");
        return r;
      },
      py::arg("x"), "sum(x**2) accumulated in float64 (thread-count independent).");
}

}  // namespace

void init_optim(py::module_& m) {
  bind_family<false>(m, "");
  bind_family<true>(m, "_naive");
}
