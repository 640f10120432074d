// Geometry checks, the naive references, the portable build of the fast loops and the
// per-ISA dispatch for conv2d (formulas in conv2d.h).
#define PYDL_KNS generic
#include "conv2d_impl.h"
#undef PYDL_KNS

#include "conv2d_isa.h"
#include "cpu_features.h"

namespace pydl {

void conv2d_geometry(Conv2dGeom& g, const char* op) {
  PYDL_CHECK(g.N >= 0, op, "batch size must be >= 0, got ", g.N);
  PYDL_CHECK(g.C >= 1 && g.H >= 1 && g.W >= 1, op, "input (C, H, W) must be positive, got (", g.C, ", ", g.H, ", ",
             g.W, ")");
  PYDL_CHECK(g.K >= 1 && g.R >= 1 && g.S >= 1, op, "filters (K, R, S) must be positive, got (", g.K, ", ", g.R, ", ",
             g.S, ")");
  PYDL_CHECK(g.sh >= 1 && g.sw >= 1, op, "stride must be >= 1, got (", g.sh, ", ", g.sw, ")");
  PYDL_CHECK(g.dh >= 1 && g.dw >= 1, op, "dilation must be >= 1, got (", g.dh, ", ", g.dw, ")");
  PYDL_CHECK(g.pt >= 0 && g.pb >= 0 && g.pl >= 0 && g.pr >= 0, op,
             "padding must be >= 0, got (top, bottom, left, right) = (", g.pt, ", ", g.pb, ", ", g.pl, ", ", g.pr, ")");
  const index_t er = (g.R - 1) * g.dh + 1, es = (g.S - 1) * g.dw + 1;
  const index_t hp = g.H + g.pt + g.pb, wp = g.W + g.pl + g.pr;
  PYDL_CHECK(er <= hp && es <= wp, op, "kernel ", g.R, "x", g.S, " (dilated ", er, "x", es,
             ") is larger than the padded input ", hp, "x", wp);
  g.P = (hp - er) / g.sh + 1;
  g.Q = (wp - es) / g.sw + 1;
  constexpr index_t kMax = index_t(1) << 40;
  PYDL_CHECK(g.C * g.R * g.S < kMax && g.P * g.Q < kMax && g.H * g.W < kMax, op, "sizes too large to index");
}

void* conv_scratch(std::size_t bytes, int slot) {
  PYDL_CHECK(slot >= 0 && slot < 4, "conv_scratch", "bad slot ", slot);
  thread_local aligned_ptr<unsigned char> bufs[4];
  thread_local std::size_t caps[4] = {0, 0, 0, 0};
  if (bytes > caps[slot]) {
    bufs[slot].reset();
    caps[slot] = 0;
    bufs[slot] = aligned_alloc_array<unsigned char>(bytes);
    caps[slot] = bytes;
  }
  return bufs[slot].get();
}

template <typename T>
void conv2d_apply_act(T* y, index_t count, ConvAct act) {
  if (act != ConvAct::relu) return;
  for (index_t i = 0; i < count; ++i) y[i] = y[i] < T(0) ? T(0) : y[i];
}

// ----------------------------------------------------------------------------------------------
// Naive references: seven loops, double accumulators.

template <typename T>
void conv2d_forward_naive(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g) {
  for (index_t n = 0; n < g.N; ++n)
    for (index_t k = 0; k < g.K; ++k)
      for (index_t p = 0; p < g.P; ++p)
        for (index_t q = 0; q < g.Q; ++q) {
          double acc = b ? static_cast<double>(b[k]) : 0.0;
          for (index_t c = 0; c < g.C; ++c)
            for (index_t r = 0; r < g.R; ++r)
              for (index_t s = 0; s < g.S; ++s) {
                const index_t h = p * g.sh + r * g.dh - g.pt, v = q * g.sw + s * g.dw - g.pl;
                if (h < 0 || h >= g.H || v < 0 || v >= g.W) continue;
                acc += static_cast<double>(w[((k * g.C + c) * g.R + r) * g.S + s]) *
                       static_cast<double>(x[((n * g.C + c) * g.H + h) * g.W + v]);
              }
          y[((n * g.K + k) * g.P + p) * g.Q + q] = static_cast<T>(acc);
        }
}

template <typename T>
void conv2d_backward_input_naive(T* dx, const T* dy, const T* w, const Conv2dGeom& g) {
  for (index_t n = 0; n < g.N; ++n)
    for (index_t c = 0; c < g.C; ++c)
      for (index_t h = 0; h < g.H; ++h)
        for (index_t v = 0; v < g.W; ++v) {
          double acc = 0.0;
          for (index_t k = 0; k < g.K; ++k)
            for (index_t r = 0; r < g.R; ++r)
              for (index_t s = 0; s < g.S; ++s) {
                const index_t ph = h + g.pt - r * g.dh, qw = v + g.pl - s * g.dw;
                if (ph < 0 || qw < 0 || ph % g.sh || qw % g.sw) continue;
                const index_t p = ph / g.sh, q = qw / g.sw;
                if (p >= g.P || q >= g.Q) continue;
                acc += static_cast<double>(dy[((n * g.K + k) * g.P + p) * g.Q + q]) *
                       static_cast<double>(w[((k * g.C + c) * g.R + r) * g.S + s]);
              }
          dx[((n * g.C + c) * g.H + h) * g.W + v] = static_cast<T>(acc);
        }
}

template <typename T>
void conv2d_backward_weight_naive(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g) {
  for (index_t k = 0; k < g.K; ++k) {
    for (index_t c = 0; c < g.C; ++c)
      for (index_t r = 0; r < g.R; ++r)
        for (index_t s = 0; s < g.S; ++s) {
          double acc = 0.0;
          for (index_t n = 0; n < g.N; ++n)
            for (index_t p = 0; p < g.P; ++p)
              for (index_t q = 0; q < g.Q; ++q) {
                const index_t h = p * g.sh + r * g.dh - g.pt, v = q * g.sw + s * g.dw - g.pl;
                if (h < 0 || h >= g.H || v < 0 || v >= g.W) continue;
                acc += static_cast<double>(dy[((n * g.K + k) * g.P + p) * g.Q + q]) *
                       static_cast<double>(x[((n * g.C + c) * g.H + h) * g.W + v]);
              }
          dw[((k * g.C + c) * g.R + r) * g.S + s] = static_cast<T>(acc);
        }
    if (db) {
      double acc = 0.0;
      for (index_t n = 0; n < g.N; ++n)
        for (index_t i = 0; i < g.P * g.Q; ++i) acc += static_cast<double>(dy[(n * g.K + k) * g.P * g.Q + i]);
      db[k] = static_cast<T>(acc);
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Dispatch: float32 to the selected ISA's build, float64 to the portable one.

#if defined(PYDL_X86)
#define PYDL_CONV_DISPATCH(FN, ...)                                          \
  do {                                                                       \
    if constexpr (sizeof(T) == 4) {                                          \
      const Isa isa = selected_isa();                                        \
      if (isa == Isa::avx512) return avx512::FN<float>(__VA_ARGS__);         \
      if (isa == Isa::avx2) return avx2::FN<float>(__VA_ARGS__);             \
    }                                                                        \
    return generic::FN<T>(__VA_ARGS__);                                      \
  } while (0)
#else
#define PYDL_CONV_DISPATCH(FN, ...) return generic::FN<T>(__VA_ARGS__)
#endif

template <typename T>
void conv2d_forward_direct(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act) {
  if (g.N == 0) return;
  PYDL_CONV_DISPATCH(conv2d_forward_direct_impl, y, x, w, b, g, act);
}
template <typename T>
void conv2d_forward_im2col(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act) {
  if (g.N == 0) return;
  PYDL_CONV_DISPATCH(conv2d_forward_im2col_impl, y, x, w, b, g, act);
}
template <typename T>
void conv2d_backward_input_direct(T* dx, const T* dy, const T* w, const Conv2dGeom& g) {
  if (g.N == 0) return;
  PYDL_CONV_DISPATCH(conv2d_backward_input_direct_impl, dx, dy, w, g);
}
template <typename T>
void conv2d_backward_input_im2col(T* dx, const T* dy, const T* w, const Conv2dGeom& g) {
  if (g.N == 0) return;
  PYDL_CONV_DISPATCH(conv2d_backward_input_im2col_impl, dx, dy, w, g);
}
template <typename T>
void conv2d_backward_weight_im2col(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g) {
  PYDL_CONV_DISPATCH(conv2d_backward_weight_im2col_impl, dw, db, dy, x, g);
}

#undef PYDL_CONV_DISPATCH

#define PYDL_CONV_INSTANTIATE(T)                                                                                \
  template void conv2d_apply_act<T>(T*, index_t, ConvAct);                                                     \
  template void conv2d_forward_naive<T>(T*, const T*, const T*, const T*, const Conv2dGeom&);                  \
  template void conv2d_backward_input_naive<T>(T*, const T*, const T*, const Conv2dGeom&);                     \
  template void conv2d_backward_weight_naive<T>(T*, T*, const T*, const T*, const Conv2dGeom&);                \
  template void conv2d_forward_direct<T>(T*, const T*, const T*, const T*, const Conv2dGeom&, ConvAct);        \
  template void conv2d_forward_im2col<T>(T*, const T*, const T*, const T*, const Conv2dGeom&, ConvAct);        \
  template void conv2d_backward_input_direct<T>(T*, const T*, const T*, const Conv2dGeom&);                    \
  template void conv2d_backward_input_im2col<T>(T*, const T*, const T*, const Conv2dGeom&);                    \
  template void conv2d_backward_weight_im2col<T>(T*, T*, const T*, const T*, const Conv2dGeom&);               \
  template void generic::conv2d_forward_direct_impl<T>(T*, const T*, const T*, const T*, const Conv2dGeom&,    \
                                                       ConvAct);                                               \
  template void generic::conv2d_forward_im2col_impl<T>(T*, const T*, const T*, const T*, const Conv2dGeom&,    \
                                                       ConvAct);                                               \
  template void generic::conv2d_backward_input_direct_impl<T>(T*, const T*, const T*, const Conv2dGeom&);      \
  template void generic::conv2d_backward_input_im2col_impl<T>(T*, const T*, const T*, const Conv2dGeom&);      \
  template void generic::conv2d_backward_weight_im2col_impl<T>(T*, T*, const T*, const T*, const Conv2dGeom&);

PYDL_CONV_INSTANTIATE(float)
PYDL_CONV_INSTANTIATE(double)

#undef PYDL_CONV_INSTANTIATE

}  // namespace pydl
