#include "rnn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_features.h"
#include "gemm.h"
#include "threading.h"

#define PYDL_RNN_NS rnn_generic
#include "rnn_cell.h"
#undef PYDL_RNN_NS

namespace pydl {

int rnn_gates(RnnCell cell) {
  switch (cell) {
    case RnnCell::rnn_tanh:
    case RnnCell::rnn_relu: return 1;
    case RnnCell::lstm: return 4;
    case RnnCell::gru: return 3;
  }
  throw std::invalid_argument("[rnn] unknown cell kind");
}

const char* rnn_cell_name(RnnCell cell) {
  switch (cell) {
    case RnnCell::rnn_tanh: return "rnn_tanh";
    case RnnCell::rnn_relu: return "rnn_relu";
    case RnnCell::lstm: return "lstm";
    case RnnCell::gru: return "gru";
  }
  return "unknown";
}

namespace {

template <typename F>
const detail::RnnRowKernels<F>* row_kernels();

template <>
const detail::RnnRowKernels<double>* row_kernels<double>() {
  return rnn_generic::row_table<double>();
}

template <>
const detail::RnnRowKernels<float>* row_kernels<float>() {
#if defined(PYDL_X86)
  switch (selected_isa()) {
    case Isa::avx512: return detail::rnn_rows_avx512();
    case Isa::avx2: return detail::rnn_rows_avx2();
    default: break;
  }
#endif
  return rnn_generic::row_table<float>();
}

void check_sizes(const char* op, RnnCell cell, index_t N, index_t T, index_t C, index_t H) {
  PYDL_CHECK(cell == RnnCell::rnn_tanh || cell == RnnCell::rnn_relu || cell == RnnCell::lstm ||
                 cell == RnnCell::gru,
             op, "unknown cell kind ", static_cast<int>(cell));
  PYDL_CHECK(N >= 0 && T >= 0, op, "batch N=", N, " and time steps T=", T, " must be >= 0");
  PYDL_CHECK(C >= 1 && H >= 1, op, "features C=", C, " and units H=", H, " must be >= 1");
}

// Work (gate values) per thread below which a point-wise step stays serial.
constexpr double kCellWorkPerThread = 2048;

// out[c] = sum_r a[r, c] (=), summed in row order in double, so the result does not depend on
// the thread count (threads split the columns).
template <typename F>
void column_sums(F* out, const F* a, index_t rows, index_t cols) {
  constexpr index_t B = 128;
  const index_t blocks = (cols + B - 1) / B;
  const int nt = threads_for(static_cast<double>(rows) * cols, 1e5);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (index_t blk = 0; blk < blocks; ++blk) {
    const index_t c0 = blk * B, nc = std::min(B, cols - c0);
    double acc[B];
    for (index_t j = 0; j < nc; ++j) acc[j] = 0.0;
    for (index_t r = 0; r < rows; ++r) {
      const F* row = a + r * cols + c0;
      for (index_t j = 0; j < nc; ++j) acc[j] += static_cast<double>(row[j]);
    }
    for (index_t j = 0; j < nc; ++j) out[c0 + j] = static_cast<F>(acc[j]);
  }
}

template <typename F>
void copy_or_zero(F* dst, const F* src, index_t n) {
  if (src) std::memcpy(dst, src, sizeof(F) * static_cast<std::size_t>(n));
  else std::fill(dst, dst + n, F(0));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// gates[N*T, GH] = X W (one GEMM); per step: gates_t += h_{t-1} U (GRU: hu = h_{t-1} U apart),
// then the fused cell per batch row. hprev[:, t] = h_{t-1}.
template <typename F>
void rnn_forward(RnnCell cell, F* out, F* hT, F* cT, F* gates, F* hprev, F* cs, F* q, const F* x, const F* W,
                 const F* U, const F* b, const F* b_h, const F* h0, const F* c0, index_t N, index_t T, index_t C,
                 index_t H) {
  const char* op = "rnn_forward";
  check_sizes(op, cell, N, T, C, H);
  const bool lstm = cell == RnnCell::lstm, gru = cell == RnnCell::gru;
  const bool use_relu = cell == RnnCell::rnn_relu;
  PYDL_CHECK(hT && (!lstm || cT), op, "missing final-state output");
  if (N == 0) return;
  if (T == 0) {
    copy_or_zero(hT, h0, N * H);
    if (lstm) copy_or_zero(cT, c0, N * H);
    return;
  }
  PYDL_CHECK(out && gates && hprev && x && W && U && b, op, "missing array");
  PYDL_CHECK(!lstm || cs, op, "missing LSTM cell-state cache");
  PYDL_CHECK(!gru || q, op, "missing GRU cache");

  const index_t G = rnn_gates(cell), GH = G * H;
  const index_t ldh = T * H, ldg = T * GH;
  const auto* K = row_kernels<F>();
  std::vector<F> zeros(static_cast<std::size_t>(GH), F(0));
  const F* bh = b_h ? b_h : zeros.data();
  aligned_ptr<F> hu;
  if (gru) hu = aligned_alloc_array<F>(static_cast<std::size_t>(N * GH));

  gemm(false, false, N * T, GH, C, F(1), x, C, W, GH, F(0), gates, GH);

  const int nt = threads_for(static_cast<double>(N) * GH, kCellWorkPerThread);
  for (index_t t = 0; t < T; ++t) {
    const F* hp = t == 0 ? h0 : out + (t - 1) * H;  // null: zeros
    const index_t ldp = t == 0 ? H : ldh;
    F* gt = gates + t * GH;
    if (hp && !gru) gemm(false, false, N, GH, H, F(1), hp, ldp, U, GH, F(1), gt, ldg);
    if (hp && gru) gemm(false, false, N, GH, H, F(1), hp, ldp, U, GH, F(0), hu.get(), GH);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (index_t n = 0; n < N; ++n) {
      const F* hprow = hp ? hp + n * ldp : zeros.data();
      F* h = out + n * ldh + t * H;
      F* g = gt + n * ldg;
      std::memcpy(hprev + n * ldh + t * H, hprow, sizeof(F) * static_cast<std::size_t>(H));
      if (lstm) {
        const F* cp = t > 0 ? cs + n * ldh + (t - 1) * H : (c0 ? c0 + n * H : zeros.data());
        K->lstm_fwd(h, cs + n * ldh + t * H, g, b, cp, H);
      } else if (gru) {
        K->gru_fwd(h, q + n * ldh + t * H, g, hp ? hu.get() + n * GH : zeros.data(), b, bh, hprow, H);
      } else {
        K->rnn_fwd(h, g, b, use_relu, H);
      }
    }
  }
  for (index_t n = 0; n < N; ++n) {
    std::memcpy(hT + n * H, out + n * ldh + (T - 1) * H, sizeof(F) * static_cast<std::size_t>(H));
    if (lstm) std::memcpy(cT + n * H, cs + n * ldh + (T - 1) * H, sizeof(F) * static_cast<std::size_t>(H));
  }
}

// ---------------------------------------------------------------------------------------------
// Reverse pass: per step the fused cell backward writes dG_t (GRU: dGx_t and dGh_t), then
// dh_{t-1} = dGh_t U^T (+ dh z for the GRU). Afterwards, over all N*T rows at once:
// dW = X^T dGx, dU = H_prev^T dGh, db = colsum(dGx), db_h = colsum(dGh), dX = dGx W^T.
template <typename F>
void rnn_backward(RnnCell cell, F* dx, F* dh0, F* dc0, F* dW, F* dU, F* db, F* db_h, const F* gates,
                  const F* hprev, const F* cs, const F* q, const F* x, const F* W, const F* U, const F* c0,
                  const F* dout, const F* dhT, const F* dcT, index_t N, index_t T, index_t C, index_t H) {
  const char* op = "rnn_backward";
  check_sizes(op, cell, N, T, C, H);
  const bool lstm = cell == RnnCell::lstm, gru = cell == RnnCell::gru;
  const bool use_relu = cell == RnnCell::rnn_relu;
  const index_t G = rnn_gates(cell), GH = G * H;
  PYDL_CHECK(dh0 && dW && dU && db && (!lstm || dc0) && (!gru || db_h), op, "missing gradient output");
  if (N == 0 || T == 0) {
    copy_or_zero(dh0, dhT, N * H);
    if (lstm) copy_or_zero(dc0, dcT, N * H);
    std::fill(dW, dW + C * GH, F(0));
    std::fill(dU, dU + H * GH, F(0));
    std::fill(db, db + GH, F(0));
    if (gru) std::fill(db_h, db_h + GH, F(0));
    return;
  }
  PYDL_CHECK(gates && hprev && x && W && U && (!lstm || cs) && (!gru || q), op, "missing cache");

  const index_t ldh = T * H, ldg = T * GH, NT = N * T;
  const auto* K = row_kernels<F>();
  std::vector<F> zeros(static_cast<std::size_t>(H), F(0));
  aligned_ptr<F> dgx = aligned_alloc_array<F>(static_cast<std::size_t>(NT * GH));
  aligned_ptr<F> dgh_buf;
  if (gru) dgh_buf = aligned_alloc_array<F>(static_cast<std::size_t>(NT * GH));
  F* dgh = gru ? dgh_buf.get() : dgx.get();
  aligned_ptr<F> dhr = aligned_alloc_array<F>(static_cast<std::size_t>(N * H));
  aligned_ptr<F> dhd = aligned_alloc_array<F>(static_cast<std::size_t>(N * H));
  aligned_ptr<F> dc;
  copy_or_zero(dhr.get(), dhT, N * H);
  if (lstm) {
    dc = aligned_alloc_array<F>(static_cast<std::size_t>(N * H));
    copy_or_zero(dc.get(), dcT, N * H);
  }

  const int nt = threads_for(static_cast<double>(N) * GH, kCellWorkPerThread);
  for (index_t t = T - 1; t >= 0; --t) {
    F* dgx_t = dgx.get() + t * GH;
    F* dgh_t = dgh + t * GH;
    const F* dhr_p = dhr.get();
    F* dhd_p = dhd.get();
    F* dc_p = dc.get();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (index_t n = 0; n < N; ++n) {
      const F* dorow = dout ? dout + n * ldh + t * H : nullptr;
      const F* g = gates + n * ldg + t * GH;
      if (lstm) {
        const F* cp = t > 0 ? cs + n * ldh + (t - 1) * H : (c0 ? c0 + n * H : zeros.data());
        K->lstm_bwd(dgx_t + n * ldg, dc_p + n * H, dhr_p + n * H, dorow, g, cs + n * ldh + t * H, cp, H);
      } else if (gru) {
        K->gru_bwd(dgx_t + n * ldg, dgh_t + n * ldg, dhd_p + n * H, dhr_p + n * H, dorow, g, q + n * ldh + t * H,
                   hprev + n * ldh + t * H, H);
      } else {
        K->rnn_bwd(dgx_t + n * ldg, dhr_p + n * H, dorow, g, use_relu, H);
      }
    }
    if (gru) {
      gemm(false, true, N, H, GH, F(1), dgh_t, ldg, U, GH, F(1), dhd.get(), H);
      std::swap(dhr, dhd);
    } else {
      gemm(false, true, N, H, GH, F(1), dgh_t, ldg, U, GH, F(0), dhr.get(), H);
    }
  }
  std::memcpy(dh0, dhr.get(), sizeof(F) * static_cast<std::size_t>(N * H));
  if (lstm) std::memcpy(dc0, dc.get(), sizeof(F) * static_cast<std::size_t>(N * H));

  gemm(true, false, C, GH, NT, F(1), x, C, dgx.get(), GH, F(0), dW, GH);
  gemm(true, false, H, GH, NT, F(1), hprev, H, dgh, GH, F(0), dU, GH);
  column_sums(db, dgx.get(), NT, GH);
  if (gru) column_sums(db_h, dgh, NT, GH);
  if (dx) gemm(false, true, NT, C, GH, F(1), dgx.get(), GH, W, GH, F(0), dx, C);
}

// ---------------------------------------------------------------------------------------------
// Naive twins: one sample, one step at a time, libm math, products accumulated in double.
namespace {

template <typename F>
F sigmoid_ref(F v) {
  return F(1) / (F(1) + std::exp(-v));
}

template <typename F>
F act_ref(bool use_relu, F v) {
  return use_relu ? (v < F(0) ? F(0) : v) : std::tanh(v);
}

// One step of sample n: pre_x = x_t W + b, pre_h = h U (+ b_h); returns h', c', and the gate
// activations acts [GH] (SimpleRNN: h'), q [H] (GRU).
template <typename F>
void naive_step(RnnCell cell, std::vector<F>& h, std::vector<F>& c, std::vector<F>& acts, std::vector<F>& qv,
                const F* xt, const F* W, const F* U, const F* b, const F* b_h, index_t C, index_t H) {
  const index_t GH = rnn_gates(cell) * H;
  std::vector<F> px(GH), ph(GH);
  for (index_t k = 0; k < GH; ++k) {
    double sx = b[k], sh = (cell == RnnCell::gru && b_h) ? b_h[k] : 0.0;
    for (index_t ci = 0; ci < C; ++ci) sx += static_cast<double>(xt[ci]) * W[ci * GH + k];
    for (index_t j = 0; j < H; ++j) sh += static_cast<double>(h[j]) * U[j * GH + k];
    px[k] = static_cast<F>(sx);
    ph[k] = static_cast<F>(sh);
  }
  if (cell == RnnCell::lstm) {
    for (index_t j = 0; j < H; ++j) {
      const F i = sigmoid_ref(px[j] + ph[j]), f = sigmoid_ref(px[H + j] + ph[H + j]);
      const F g = std::tanh(px[2 * H + j] + ph[2 * H + j]), o = sigmoid_ref(px[3 * H + j] + ph[3 * H + j]);
      c[j] = f * c[j] + i * g;
      h[j] = o * std::tanh(c[j]);
      acts[j] = i, acts[H + j] = f, acts[2 * H + j] = g, acts[3 * H + j] = o;
    }
  } else if (cell == RnnCell::gru) {
    for (index_t j = 0; j < H; ++j) {
      const F r = sigmoid_ref(px[j] + ph[j]), z = sigmoid_ref(px[H + j] + ph[H + j]);
      const F n = std::tanh(px[2 * H + j] + r * ph[2 * H + j]);
      h[j] = (F(1) - z) * n + z * h[j];
      qv[j] = ph[2 * H + j];
      acts[j] = r, acts[H + j] = z, acts[2 * H + j] = n;
    }
  } else {
    for (index_t j = 0; j < H; ++j) acts[j] = h[j] = act_ref(cell == RnnCell::rnn_relu, px[j] + ph[j]);
  }
}

}  // namespace

template <typename F>
void rnn_forward_naive(RnnCell cell, F* out, F* hT, F* cT, const F* x, const F* W, const F* U, const F* b,
                       const F* b_h, const F* h0, const F* c0, index_t N, index_t T, index_t C, index_t H) {
  check_sizes("rnn_forward_naive", cell, N, T, C, H);
  const index_t GH = rnn_gates(cell) * H;
  for (index_t n = 0; n < N; ++n) {
    std::vector<F> h(H, F(0)), c(H, F(0)), acts(GH), qv(H);
    for (index_t j = 0; j < H; ++j) {
      if (h0) h[j] = h0[n * H + j];
      if (c0) c[j] = c0[n * H + j];
    }
    for (index_t t = 0; t < T; ++t) {
      naive_step(cell, h, c, acts, qv, x + (n * T + t) * C, W, U, b, b_h, C, H);
      for (index_t j = 0; j < H; ++j) out[(n * T + t) * H + j] = h[j];
    }
    for (index_t j = 0; j < H; ++j) {
      hT[n * H + j] = h[j];
      if (cell == RnnCell::lstm) cT[n * H + j] = c[j];
    }
  }
}

template <typename F>
void rnn_backward_naive(RnnCell cell, F* dx, F* dh0, F* dc0, F* dW, F* dU, F* db, F* db_h, const F* x,
                        const F* W, const F* U, const F* b, const F* b_h, const F* h0, const F* c0,
                        const F* dout, const F* dhT, const F* dcT, index_t N, index_t T, index_t C, index_t H) {
  check_sizes("rnn_backward_naive", cell, N, T, C, H);
  const bool lstm = cell == RnnCell::lstm, gru = cell == RnnCell::gru;
  const index_t GH = rnn_gates(cell) * H;
  std::vector<double> aW(C * GH, 0.0), aU(H * GH, 0.0), ab(GH, 0.0), abh(GH, 0.0);
  for (index_t n = 0; n < N; ++n) {
    // Forward again, keeping every state.
    std::vector<std::vector<F>> hs(T + 1, std::vector<F>(H, F(0))), cs(T + 1, std::vector<F>(H, F(0)));
    std::vector<std::vector<F>> acts(T, std::vector<F>(GH)), qs(T, std::vector<F>(H));
    for (index_t j = 0; j < H; ++j) {
      if (h0) hs[0][j] = h0[n * H + j];
      if (c0) cs[0][j] = c0[n * H + j];
    }
    for (index_t t = 0; t < T; ++t) {
      std::vector<F> h = hs[t], c = cs[t];
      naive_step(cell, h, c, acts[t], qs[t], x + (n * T + t) * C, W, U, b, b_h, C, H);
      hs[t + 1] = h;
      cs[t + 1] = c;
    }
    std::vector<F> dh(H, F(0)), dc(H, F(0)), dpx(GH), dph(GH), dhp(H);
    for (index_t j = 0; j < H; ++j) {
      if (dhT) dh[j] = dhT[n * H + j];
      if (dcT) dc[j] = dcT[n * H + j];
    }
    for (index_t t = T - 1; t >= 0; --t) {
      const std::vector<F>& a = acts[t];
      for (index_t j = 0; j < H; ++j) {
        if (dout) dh[j] += dout[(n * T + t) * H + j];
        dhp[j] = F(0);
      }
      for (index_t j = 0; j < H; ++j) {
        if (lstm) {
          const F i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
          const F tc = std::tanh(cs[t + 1][j]);
          const F dct = dc[j] + dh[j] * o * (F(1) - tc * tc);
          dpx[j] = dct * g * i * (F(1) - i);
          dpx[H + j] = dct * cs[t][j] * f * (F(1) - f);
          dpx[2 * H + j] = dct * i * (F(1) - g * g);
          dpx[3 * H + j] = dh[j] * tc * o * (F(1) - o);
          dc[j] = dct * f;
        } else if (gru) {
          const F r = a[j], z = a[H + j], nn = a[2 * H + j];
          const F dn = dh[j] * (F(1) - z) * (F(1) - nn * nn);
          dpx[j] = dn * qs[t][j] * r * (F(1) - r);
          dpx[H + j] = dh[j] * (hs[t][j] - nn) * z * (F(1) - z);
          dpx[2 * H + j] = dn;
          dhp[j] = dh[j] * z;
        } else if (cell == RnnCell::rnn_relu) {
          const F hv = a[j];
          dpx[j] = hv != hv ? hv : (hv > F(0) ? dh[j] : F(0));
        } else {
          dpx[j] = dh[j] * (F(1) - a[j] * a[j]);
        }
      }
      for (index_t k = 0; k < GH; ++k) dph[k] = dpx[k];
      if (gru)
        for (index_t j = 0; j < H; ++j) dph[2 * H + j] = dpx[2 * H + j] * a[j];
      const F* xt = x + (n * T + t) * C;
      for (index_t k = 0; k < GH; ++k) {
        ab[k] += dpx[k];
        abh[k] += dph[k];
        for (index_t ci = 0; ci < C; ++ci) aW[ci * GH + k] += static_cast<double>(xt[ci]) * dpx[k];
        for (index_t j = 0; j < H; ++j) aU[j * GH + k] += static_cast<double>(hs[t][j]) * dph[k];
      }
      if (dx)
        for (index_t ci = 0; ci < C; ++ci) {
          double s = 0.0;
          for (index_t k = 0; k < GH; ++k) s += static_cast<double>(dpx[k]) * W[ci * GH + k];
          dx[(n * T + t) * C + ci] = static_cast<F>(s);
        }
      for (index_t j = 0; j < H; ++j) {
        double s = dhp[j];
        for (index_t k = 0; k < GH; ++k) s += static_cast<double>(dph[k]) * U[j * GH + k];
        dh[j] = static_cast<F>(s);
      }
    }
    for (index_t j = 0; j < H; ++j) {
      dh0[n * H + j] = dh[j];
      if (lstm) dc0[n * H + j] = dc[j];
    }
  }
  for (index_t i = 0; i < C * GH; ++i) dW[i] = static_cast<F>(aW[i]);
  for (index_t i = 0; i < H * GH; ++i) dU[i] = static_cast<F>(aU[i]);
  for (index_t k = 0; k < GH; ++k) {
    db[k] = static_cast<F>(ab[k]);
    if (gru) db_h[k] = static_cast<F>(abh[k]);
  }
}

#define PYDL_RNN_INSTANTIATE(F)                                                                              \
  template void rnn_forward<F>(RnnCell, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*, const F*, \
                               const F*, const F*, const F*, index_t, index_t, index_t, index_t);           \
  template void rnn_backward<F>(RnnCell, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*, const F*, \
                                const F*, const F*, const F*, const F*, const F*, const F*, const F*, index_t, \
                                index_t, index_t, index_t);                                                  \
  template void rnn_forward_naive<F>(RnnCell, F*, F*, F*, const F*, const F*, const F*, const F*, const F*,  \
                                     const F*, const F*, index_t, index_t, index_t, index_t);               \
  template void rnn_backward_naive<F>(RnnCell, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*,    \
                                      const F*, const F*, const F*, const F*, const F*, const F*, const F*, \
                                      index_t, index_t, index_t, index_t);

PYDL_RNN_INSTANTIATE(float)
PYDL_RNN_INSTANTIATE(double)

}  // namespace pydl
