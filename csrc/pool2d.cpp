// Pooling kernels (formulas in pool2d.h). Planes (n, c) are independent: parallel_for over N*C
// (threading.h), contiguous blocks of planes per thread, so results do not depend on the thread count.
#include "pool2d.h"

#include <atomic>
#include <cstring>
#include <vector>

#include "cpu_features.h"
#include "threading.h"

#define PYDL_KNS generic
#include "pool2d_impl.h"
#undef PYDL_KNS

namespace pydl {

namespace generic {
PYDL_POOL_DEFINE_ENTRY_POINTS
}  // namespace generic

// One ISA's float micro-kernels (pool2d_impl.h), picked once per call by selected_isa().
#define PYDL_POOL_DECLARE_ENTRY_POINTS                                                                       \
  void maxpool2x2_plane_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t P, index_t Q);   \
  void maxpool_plane_any_f32(float* y, std::int32_t* am, const float* x, float* buf, index_t Wb, index_t H, \
                             index_t W, index_t R, index_t S, index_t sh, index_t sw, index_t pt,          \
                             index_t pl, index_t P, index_t Q);                                              \
  bool maxunpool2x2_plane_f32(float* dx, const float* dy, const std::int32_t* am, index_t H, index_t W,     \
                              index_t P, index_t Q);                                                         \
  bool maxunpool3x3s2_plane_f32(float* dx, const float* dy, const std::int32_t* am, float* gbuf,            \
                                std::int32_t* abuf, index_t Wb, index_t H, index_t W, index_t P, index_t Q, \
                                index_t pt, index_t pl);                                                     \
  double sum_f32(const float* x, index_t n);
namespace avx2 {
PYDL_POOL_DECLARE_ENTRY_POINTS
}
namespace avx512 {
PYDL_POOL_DECLARE_ENTRY_POINTS
}
#undef PYDL_POOL_DECLARE_ENTRY_POINTS

namespace {

struct PoolKernels {
  decltype(&generic::maxpool2x2_plane_f32) max2x2;
  decltype(&generic::maxpool_plane_any_f32) max_any;
  decltype(&generic::maxunpool2x2_plane_f32) unpool2x2;
  decltype(&generic::maxunpool3x3s2_plane_f32) unpool3x3s2;
  decltype(&generic::sum_f32) sum;
};

PoolKernels pool_kernels() {
#if defined(PYDL_X86)
  if (selected_isa() == Isa::avx512)
    return {avx512::maxpool2x2_plane_f32, avx512::maxpool_plane_any_f32, avx512::maxunpool2x2_plane_f32,
            avx512::maxunpool3x3s2_plane_f32, avx512::sum_f32};
  if (selected_isa() == Isa::avx2)
    return {avx2::maxpool2x2_plane_f32, avx2::maxpool_plane_any_f32, avx2::maxunpool2x2_plane_f32,
            avx2::maxunpool3x3s2_plane_f32, avx2::sum_f32};
#endif
  return {generic::maxpool2x2_plane_f32, generic::maxpool_plane_any_f32, generic::maxunpool2x2_plane_f32,
          generic::maxunpool3x3s2_plane_f32, generic::sum_f32};
}

}  // namespace

void pool2d_geometry(Pool2dGeom& g, const char* op) {
  PYDL_CHECK(g.N >= 0 && g.C >= 0, op, "batch and channels must be >= 0, got (", g.N, ", ", g.C, ")");
  PYDL_CHECK(g.H >= 1 && g.W >= 1, op, "input height and width must be positive, got (", g.H, ", ", g.W, ")");
  PYDL_CHECK(g.R >= 1 && g.S >= 1, op, "pool_size must be positive, got (", g.R, ", ", g.S, ")");
  PYDL_CHECK(g.sh >= 1 && g.sw >= 1, op, "stride must be >= 1, got (", g.sh, ", ", g.sw, ")");
  PYDL_CHECK(g.pt >= 0 && g.pb >= 0 && g.pl >= 0 && g.pr >= 0, op,
             "padding must be >= 0, got (top, bottom, left, right) = (", g.pt, ", ", g.pb, ", ", g.pl, ", ", g.pr, ")");
  PYDL_CHECK(g.pt < g.R && g.pb < g.R && g.pl < g.S && g.pr < g.S, op, "padding (", g.pt, ", ", g.pb, ", ", g.pl,
             ", ", g.pr, ") must be smaller than pool_size (", g.R, ", ", g.S, ")");
  const index_t hp = g.H + g.pt + g.pb, wp = g.W + g.pl + g.pr;
  PYDL_CHECK(g.R <= hp && g.S <= wp, op, "pool_size ", g.R, "x", g.S, " is larger than the padded input ", hp, "x",
             wp);
  PYDL_CHECK(g.H * g.W < (index_t(1) << 31), op, "planes of ", g.H, "x", g.W, " are too large for int32 argmax");
  g.P = (hp - g.R) / g.sh + 1;
  g.Q = (wp - g.S) / g.sw + 1;
}

namespace {

inline index_t pmin(index_t a, index_t b) { return a < b ? a : b; }
inline index_t pmax(index_t a, index_t b) { return a > b ? a : b; }

// The window of output (p, q) clipped to the input: rows [h0, h1), columns [w0, w1).
struct Window {
  index_t h0, h1, w0, w1;
};
inline Window window(const Pool2dGeom& g, index_t p, index_t q) {
  const index_t hs = p * g.sh - g.pt, ws = q * g.sw - g.pl;
  return {pmax(hs, 0), pmin(hs + g.R, g.H), pmax(ws, 0), pmin(ws + g.S, g.W)};
}

// "v replaces the running maximum m": larger, or the first NaN (once m is NaN it stays).
template <typename T>
inline bool takes(T v, T m) {
  return (v > m) | ((v != v) & (m == m));
}

// 2x2 window, stride 2, no padding: the common case, written so the loop vectorises.
template <typename T, bool IDX>
void max_plane_2x2(T* y, std::int32_t* am, const T* x, const Pool2dGeom& g) {
  const index_t W = g.W, Q = g.Q;
  for (index_t p = 0; p < g.P; ++p) {
    const T* r0 = x + 2 * p * W;
    const T* r1 = r0 + W;
    T* yr = y + p * Q;
    std::int32_t* ar = IDX ? am + p * Q : nullptr;
    const std::int32_t base = static_cast<std::int32_t>(2 * p * W);
    for (index_t q = 0; q < Q; ++q) {
      const T a = r0[2 * q], b = r0[2 * q + 1], c = r1[2 * q], d = r1[2 * q + 1];
      const bool u = takes(b, a), v = takes(d, c);
      const T m1 = u ? b : a, m2 = v ? d : c;
      const bool t = takes(m2, m1);
      yr[q] = t ? m2 : m1;
      if (IDX) {
        const std::int32_t i0 = base + static_cast<std::int32_t>(2 * q);
        const std::int32_t i1 = i0 + (u ? 1 : 0);
        const std::int32_t i2 = i0 + static_cast<std::int32_t>(W) + (v ? 1 : 0);
        ar[q] = t ? i2 : i1;
      }
    }
  }
}

// Any window: per output row, visit the window's elements in row-major order (h, then s) and
// update all Q running maxima at once (the inner loop runs along q, so it vectorises). The
// running maximum starts at each window's first element, so ties keep the first, as the naive
// loop does.
template <typename T, bool IDX>
void max_plane_general(T* y, std::int32_t* am, const T* x, const Pool2dGeom& g) {
  const index_t W = g.W, Q = g.Q, sw = g.sw;
  for (index_t p = 0; p < g.P; ++p) {
    const index_t hs = p * g.sh - g.pt, h0 = pmax(hs, 0), h1 = pmin(hs + g.R, g.H);
    T* m = y + p * Q;
    std::int32_t* ix = IDX ? am + p * Q : nullptr;
    for (index_t q = 0; q < Q; ++q) {
      const index_t w0 = pmax(q * sw - g.pl, 0);
      m[q] = x[h0 * W + w0];
      if (IDX) ix[q] = static_cast<std::int32_t>(h0 * W + w0);
    }
    for (index_t h = h0; h < h1; ++h) {
      const T* row = x + h * W;
      // Only the taps s that reach a column of the input for some q (a window far wider than
      // the padded input would otherwise spend its time on empty taps).
      const index_t s_lo = pmax(0, g.pl - (Q - 1) * sw), s_hi = pmin(g.S, g.pl + W);
      for (index_t s = s_lo; s < s_hi; ++s) {
        const index_t off = s - g.pl;  // column of output q: q*sw + off
        const index_t qlo = off >= 0 ? 0 : pmin(Q, (-off + sw - 1) / sw);
        const index_t qhi = W - 1 - off >= 0 ? pmin(Q, (W - 1 - off) / sw + 1) : 0;
        const std::int32_t base = static_cast<std::int32_t>(h * W + off);
        for (index_t q = qlo; q < qhi; ++q) {
          const T v = row[q * sw + off];
          const bool t = takes(v, m[q]);
          m[q] = t ? v : m[q];
          if (IDX) ix[q] = t ? base + static_cast<std::int32_t>(q * sw) : ix[q];
        }
      }
    }
  }
}

// Float planes go to this ISA's vector kernels: the 2x2 / stride 2 window inside the input, or
// any window with column stride 1 or 2 (padded row copies, pool2d_impl.h); other strides and
// float64 take the portable loops above.
template <typename T, bool IDX>
void max_planes(T* y, std::int32_t* am, const T* x, const Pool2dGeom& g) {
  const index_t planes = g.N * g.C, in = g.H * g.W, out = g.P * g.Q;
  const bool fast = g.R == 2 && g.S == 2 && g.sh == 2 && g.sw == 2 && g.pt == 0 && g.pl == 0 && 2 * g.P <= g.H &&
                    2 * g.Q <= g.W;  // every window inside the input
  const bool vec_any = sizeof(T) == 4 && !fast && g.sw <= 2 && g.R <= 64;
  const int nt = threads_for(static_cast<double>(planes) * (in + out * (fast ? 1 : g.R * g.S)), 3e4);
  const PoolKernels k = pool_kernels();
  const index_t Wb = vec_any ? generic::maxpool_padded_width(g.W, g.S, g.sw, g.pl, g.Q) : 0;
  std::vector<float> bufs(vec_any ? static_cast<std::size_t>(nt * g.R * Wb) : 0);
  parallel_for(nt, planes, [&](std::int64_t i, int tid) {
    std::int32_t* a = IDX ? am + i * out : nullptr;
    if constexpr (sizeof(T) == 4) {
      if (fast) {
        k.max2x2(y + i * out, a, x + i * in, g.W, g.P, g.Q);
        return;
      }
      if (vec_any) {
        k.max_any(y + i * out, a, x + i * in, bufs.data() + tid * g.R * Wb, Wb, g.H, g.W, g.R, g.S, g.sh, g.sw, g.pt,
                  g.pl, g.P, g.Q);
        return;
      }
    }
    if (fast) max_plane_2x2<T, IDX>(y + i * out, a, x + i * in, g);
    else max_plane_general<T, IDX>(y + i * out, a, x + i * in, g);
  });
}

template <typename T>
inline T avg_divisor(const Pool2dGeom& g, const Window& wd, bool cip) {
  return cip ? static_cast<T>(g.R * g.S) : static_cast<T>((wd.h1 - wd.h0) * (wd.w1 - wd.w0));
}

}  // namespace

template <typename T>
void maxpool2d_forward(T* y, std::int32_t* argmax, const T* x, const Pool2dGeom& g) {
  if (argmax) max_planes<T, true>(y, argmax, x, g);
  else max_planes<T, false>(y, nullptr, x, g);
}

template <typename T>
void maxpool2d_forward_naive(T* y, std::int32_t* argmax, const T* x, const Pool2dGeom& g) {
  for (index_t i = 0; i < g.N * g.C; ++i)
    for (index_t p = 0; p < g.P; ++p)
      for (index_t q = 0; q < g.Q; ++q) {
        bool have = false;
        T m = T(0);
        index_t mi = 0;
        for (index_t r = 0; r < g.R; ++r)
          for (index_t s = 0; s < g.S; ++s) {
            const index_t h = p * g.sh + r - g.pt, w = q * g.sw + s - g.pl;
            if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
            const T v = x[(i * g.H + h) * g.W + w];
            if (!have || (m == m && (v > m || v != v))) {
              m = v;
              mi = h * g.W + w;
              have = true;
            }
          }
        y[(i * g.P + p) * g.Q + q] = m;
        if (argmax) argmax[(i * g.P + p) * g.Q + q] = static_cast<std::int32_t>(mi);
      }
}

// Where every argmax of a plane lies in its own 2x2 block (P = H/2, Q = W/2: 2x2 / stride 2
// pooling, or any pooling whose maxima happen to fall there), the blocks are disjoint and dx is
// written densely, row by row, as dy or 0 (pool2d_impl.h): a stream instead of a memset plus a
// data-dependent scatter. The dense kernel stops at the first argmax outside its block; that
// plane is then redone by the scatter, which gives the same bits (0 + g either way). The
// scatter checks its plane's indices first and reports a bad one (the binding raises); the
// binding's separate serial pass over argmax is gone (~1/10 of the backward's time).
// With the pooling geometry known (`windows`), 3x3 / stride 2 windows with top / left padding 0
// or 1 gather instead (pool2d_impl.h: each element sums the dy of the at most 2 x 2 windows that
// cover it), again densely and with the scatter's bits; a plane whose argmaxes do not all lie in
// their windows is scattered.
template <typename T>
bool maxpool2d_backward(T* dx, const T* dy, const std::int32_t* argmax, const Pool2dGeom& g, bool windows) {
  const index_t planes = g.N * g.C, in = g.H * g.W, out = g.P * g.Q;
  const int nt = threads_for(static_cast<double>(planes) * (in + out), 3e4);
  const bool gather3 = sizeof(T) == 4 && windows && g.R == 3 && g.S == 3 && g.sh == 2 && g.sw == 2 &&
                       g.pt <= 1 && g.pl <= 1 && g.P > 0 && g.Q > 0 && g.W >= 3;  // (W < 3: see pool2d_impl.h)
  const bool dense = sizeof(T) == 4 && !gather3 && g.P == g.H / 2 && g.Q == g.W / 2 && g.P > 0 && g.Q > 0;
  const PoolKernels k = pool_kernels();
  const index_t Wb = gather3 ? generic::maxunpool3x3s2_slot_width(g.W, g.Q) : 0;
  std::vector<float> gbufs(static_cast<std::size_t>(gather3 ? 3 * nt * Wb : 0));
  std::vector<std::int32_t> abufs(gbufs.size());
  std::atomic<bool> bad{false};
  parallel_for(nt, planes, [&](std::int64_t i, int tid) {
    T* d = dx + i * in;
    const T* s = dy + i * out;
    const std::int32_t* a = argmax + i * out;
    if constexpr (sizeof(T) == 4) {
      if (dense && k.unpool2x2(d, s, a, g.H, g.W, g.P, g.Q)) return;
      if (gather3 && k.unpool3x3s2(d, s, a, gbufs.data() + 3 * tid * Wb, abufs.data() + 3 * tid * Wb, Wb, g.H, g.W,
                                   g.P, g.Q, g.pt, g.pl))
        return;
    }
    std::uint32_t outside = 0;  // (unsigned) a >= in: negative or past the plane
    for (index_t j = 0; j < out; ++j) outside |= static_cast<std::uint32_t>(a[j]) >= static_cast<std::uint32_t>(in);
    if (outside) {
      bad.store(true, std::memory_order_relaxed);
      return;
    }
    std::memset(d, 0, sizeof(T) * in);
    for (index_t j = 0; j < out; ++j) d[a[j]] += s[j];
  });
  return !bad.load();
}

template <typename T>
void avgpool2d_forward(T* y, const T* x, const Pool2dGeom& g, bool cip) {
  // Per output row: add the window's elements in row-major order into the whole row at once
  // (the inner loop runs along q and vectorises), then divide.
  const index_t planes = g.N * g.C, in = g.H * g.W, out = g.P * g.Q;
  const index_t W = g.W, Q = g.Q, sw = g.sw;
  const int nt = threads_for(static_cast<double>(planes) * out * g.R * g.S, 3e4);
  parallel_for(nt, planes, [&](std::int64_t i, int) {
    const T* xi = x + i * in;
    T* yi = y + i * out;
    for (index_t p = 0; p < g.P; ++p) {
      const index_t hs = p * g.sh - g.pt, h0 = pmax(hs, 0), h1 = pmin(hs + g.R, g.H);
      T* m = yi + p * Q;
      for (index_t q = 0; q < Q; ++q) m[q] = T(0);
      for (index_t h = h0; h < h1; ++h) {
        const T* row = xi + h * W;
        const index_t s_lo = pmax(0, g.pl - (Q - 1) * sw), s_hi = pmin(g.S, g.pl + W);  // taps that reach x
        for (index_t s = s_lo; s < s_hi; ++s) {
          const index_t off = s - g.pl;
          const index_t qlo = off >= 0 ? 0 : pmin(Q, (-off + sw - 1) / sw);
          const index_t qhi = W - 1 - off >= 0 ? pmin(Q, (W - 1 - off) / sw + 1) : 0;
          for (index_t q = qlo; q < qhi; ++q) m[q] += row[q * sw + off];
        }
      }
      for (index_t q = 0; q < Q; ++q) m[q] /= avg_divisor<T>(g, window(g, p, q), cip);
    }
  });
}

template <typename T>
void avgpool2d_forward_naive(T* y, const T* x, const Pool2dGeom& g, bool cip) {
  for (index_t i = 0; i < g.N * g.C; ++i)
    for (index_t p = 0; p < g.P; ++p)
      for (index_t q = 0; q < g.Q; ++q) {
        double sum = 0.0;
        index_t cnt = 0;
        for (index_t r = 0; r < g.R; ++r)
          for (index_t s = 0; s < g.S; ++s) {
            const index_t h = p * g.sh + r - g.pt, w = q * g.sw + s - g.pl;
            if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
            sum += static_cast<double>(x[(i * g.H + h) * g.W + w]);
            ++cnt;
          }
        y[(i * g.P + p) * g.Q + q] = static_cast<T>(sum / static_cast<double>(cip ? g.R * g.S : cnt));
      }
}

template <typename T>
void avgpool2d_backward(T* dx, const T* dy, const Pool2dGeom& g, bool cip) {
  const index_t planes = g.N * g.C, in = g.H * g.W, out = g.P * g.Q;
  const int nt = threads_for(static_cast<double>(planes) * out * g.R * g.S, 3e4);
  parallel_for(nt, planes, [&](std::int64_t i, int) {
    T* d = dx + i * in;
    const T* s = dy + i * out;
    std::memset(d, 0, sizeof(T) * in);
    for (index_t p = 0; p < g.P; ++p)
      for (index_t q = 0; q < g.Q; ++q) {
        const Window wd = window(g, p, q);
        const T v = s[p * g.Q + q] / avg_divisor<T>(g, wd, cip);
        for (index_t h = wd.h0; h < wd.h1; ++h)
          for (index_t w = wd.w0; w < wd.w1; ++w) d[h * g.W + w] += v;
      }
  });
}

template <typename T>
void avgpool2d_backward_naive(T* dx, const T* dy, const Pool2dGeom& g, bool cip) {
  for (index_t i = 0; i < g.N * g.C * g.H * g.W; ++i) dx[i] = T(0);
  for (index_t i = 0; i < g.N * g.C; ++i)
    for (index_t p = 0; p < g.P; ++p)
      for (index_t q = 0; q < g.Q; ++q) {
        index_t cnt = 0;
        for (index_t r = 0; r < g.R; ++r)
          for (index_t s = 0; s < g.S; ++s) {
            const index_t h = p * g.sh + r - g.pt, w = q * g.sw + s - g.pl;
            cnt += (h >= 0 && h < g.H && w >= 0 && w < g.W);
          }
        const double v = static_cast<double>(dy[(i * g.P + p) * g.Q + q]) / static_cast<double>(cip ? g.R * g.S : cnt);
        for (index_t r = 0; r < g.R; ++r)
          for (index_t s = 0; s < g.S; ++s) {
            const index_t h = p * g.sh + r - g.pt, w = q * g.sw + s - g.pl;
            if (h >= 0 && h < g.H && w >= 0 && w < g.W) dx[(i * g.H + h) * g.W + w] += static_cast<T>(v);
          }
      }
}

// Sums accumulate in double (float input: the ISA's vector kernel; float64: four partial sums),
// so a 4096x4096 plane of 1.1 averages to 1.1 within 1e-7 relative instead of the ~1e-3 of float
// partial sums. A plane longer than kGapChunk is cut into fixed chunks, summed in parallel and
// combined in chunk order: the chunking depends only on hw, so the result has the same bits for
// any thread count, and a single large plane still uses every thread.
constexpr index_t kGapChunk = index_t(1) << 16;

template <typename T>
double plane_sum(const T* x, index_t n, const PoolKernels& k) {
  if constexpr (sizeof(T) == 4) {
    return k.sum(x, n);
  } else {
    double part[4] = {};
    index_t j = 0;
    for (; j + 4 <= n; j += 4)
      for (int l = 0; l < 4; ++l) part[l] += static_cast<double>(x[j + l]);
    double s = (part[0] + part[1]) + (part[2] + part[3]);
    for (; j < n; ++j) s += static_cast<double>(x[j]);
    return s;
  }
}

template <typename T>
void global_avgpool2d_forward(T* y, const T* x, index_t planes, index_t hw) {
  const PoolKernels k = pool_kernels();
  const int nt = threads_for(static_cast<double>(planes) * hw, 3e4);
  const index_t chunks = (hw + kGapChunk - 1) / kGapChunk;
  if (chunks <= 1) {
    parallel_for(nt, planes, [&](std::int64_t i, int) {
      y[i] = static_cast<T>(plane_sum(x + i * hw, hw, k) / static_cast<double>(hw));
    });
    return;
  }
  std::vector<double> part(static_cast<std::size_t>(planes * chunks));
  parallel_for(nt, planes * chunks, [&](std::int64_t j, int) {
    const index_t i = j / chunks, c = j % chunks;
    const index_t b = c * kGapChunk, e = b + kGapChunk < hw ? b + kGapChunk : hw;
    part[static_cast<std::size_t>(j)] = plane_sum(x + i * hw + b, e - b, k);
  });
  for (index_t i = 0; i < planes; ++i) {
    double s = 0.0;
    for (index_t c = 0; c < chunks; ++c) s += part[static_cast<std::size_t>(i * chunks + c)];
    y[i] = static_cast<T>(s / static_cast<double>(hw));
  }
}

template <typename T>
void global_avgpool2d_backward(T* dx, const T* dy, index_t planes, index_t hw) {
  const int nt = threads_for(static_cast<double>(planes) * hw, 3e4);
  parallel_for(nt, planes, [&](std::int64_t i, int) {
    const T v = dy[i] / static_cast<T>(hw);
    T* d = dx + i * hw;
    for (index_t j = 0; j < hw; ++j) d[j] = v;
  });
}

#define PYDL_POOL_INSTANTIATE(T)                                                                     \
  template void maxpool2d_forward<T>(T*, std::int32_t*, const T*, const Pool2dGeom&);               \
  template void maxpool2d_forward_naive<T>(T*, std::int32_t*, const T*, const Pool2dGeom&);         \
  template bool maxpool2d_backward<T>(T*, const T*, const std::int32_t*, const Pool2dGeom&, bool);        \
  template void avgpool2d_forward<T>(T*, const T*, const Pool2dGeom&, bool);                        \
  template void avgpool2d_forward_naive<T>(T*, const T*, const Pool2dGeom&, bool);                  \
  template void avgpool2d_backward<T>(T*, const T*, const Pool2dGeom&, bool);                       \
  template void avgpool2d_backward_naive<T>(T*, const T*, const Pool2dGeom&, bool);                 \
  template void global_avgpool2d_forward<T>(T*, const T*, index_t, index_t);                        \
  template void global_avgpool2d_backward<T>(T*, const T*, index_t, index_t);

PYDL_POOL_INSTANTIATE(float)
PYDL_POOL_INSTANTIATE(double)

#undef PYDL_POOL_INSTANTIATE

}  // namespace pydl
