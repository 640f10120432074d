// Recurrent cells on the GPU: the point-wise parts of SimpleRNN (tanh / relu), LSTM and GRU.
//
// The matrix products (x W for all steps, h_{t-1} U per step, dG_t U^T per step, and the weight
// gradients over all steps) run in gemm.cu; these kernels are the fused cell of one time step,
// forward and backward, one thread per unit j and batch row n: the grid's x dimension covers the
// H units exactly (gridDim.x = ceil(H / blockDim.x)), blockIdx.y strides over the N rows (no
// 64-bit division in the kernels). Every kernel here is launched that way.
//
// Letters as in pydl/ops/rnn.py: N batch, T steps, H units, G gates (SimpleRNN 1; LSTM 4 in the
// order i f g o; GRU 3 in the order r z n), GH = G*H. Layouts, all C-contiguous:
//   xw (N*T, GH)  x W of every step, row n*T + t (batch-major like x)
//   hu (N, GH)    (h_{t-1} . rscale) U of this step (no bias)
//   caches        gates (N, T, GH), hprev (N, T, H), cs (N, T, H) LSTM, q (N, T, H) GRU
//   states        h (N, H), c (N, H): h_{t-1} / c_{t-1} in, h_t / c_t out (each element is read
//                 and written by the same thread only)
// Cells (s = sigmoid):
//   SimpleRNN  h' = act(xw + hu + b)
//   LSTM       i f g o = s s tanh s (xw + hu + b);  c' = f c + i g;  h' = o tanh(c')
//   GRU        r z = s(xw + b + hu + b_h);  q = hu_n + bh_n;  n = tanh(xw_n + b_n + r q);
//              h' = (1 - z) n + z h
// A masked step (mask[n*T + t] == 0) keeps the state: h' = h, c' = c, its gate cache and q are 0.
// Flags (has_mask, has_rscale, has_dout) say whether the matching pointer may be read; when a
// flag is 0 the pointer is some other valid array and is not dereferenced.

__device__ __forceinline__ float rnn_exp(float x) { return expf(x); }
__device__ __forceinline__ double rnn_exp(double x) { return exp(x); }
__device__ __forceinline__ float rnn_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double rnn_tanh(double x) { return tanh(x); }

// 1 / (1 + e^-x), the CPU kernels' formula (e^-x = inf for x << 0 gives 0).
template <typename T>
__device__ __forceinline__ T rnn_sigmoid(T x) {
  return T(1) / (T(1) + rnn_exp(-x));
}

// Cell kinds, as pydl.ops.rnn numbers them.
#define PYDL_RNN_TANH 0
#define PYDL_RNN_RELU 1
#define PYDL_RNN_LSTM 2
#define PYDL_RNN_GRU 3

// ---- forward: one time step ------------------------------------------------------------------
// Writes out[n, t], gates[n, t], hprev[n, t] (= h_{t-1}), cs[n, t] (LSTM), q[n, t] (GRU); updates
// h (and c) in place; with has_rscale also hmul = h' . rscale, the next step's product input.
template <typename T, int CELL>
__device__ void rnn_forward_step_body(T* __restrict__ out, T* __restrict__ h, T* __restrict__ hmul,
                                      T* __restrict__ c, T* __restrict__ gates, T* __restrict__ hprev,
                                      T* __restrict__ cs, T* __restrict__ q, const T* __restrict__ xw,
                                      const T* __restrict__ hu, const T* __restrict__ b,
                                      const T* __restrict__ bh, const unsigned char* __restrict__ mask,
                                      const T* __restrict__ rscale, long long N, long long T_, long long H,
                                      long long t, int has_mask, int has_rscale) {
  const int G = CELL == PYDL_RNN_LSTM ? 4 : (CELL == PYDL_RNN_GRU ? 3 : 1);
  const long long GH = G * H;
  const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= H) return;
  for (long long n = blockIdx.y; n < N; n += gridDim.y) {
    const long long idx = n * H + j;
    const long long row = n * T_ + t;  // (n, t) in the (N, T, X) arrays
    const T hp = h[idx];
    hprev[row * H + j] = hp;
    T* g = gates + row * GH + j;
    if (has_mask && mask[row] == 0) {  // the state is kept
      out[row * H + j] = hp;
#pragma unroll
      for (int k = 0; k < G; ++k) g[k * H] = T(0);
      if (CELL == PYDL_RNN_LSTM) cs[row * H + j] = c[idx];
      if (CELL == PYDL_RNN_GRU) q[row * H + j] = T(0);
      continue;
    }
    const T* gx = xw + row * GH + j;
    const T* gh = hu + n * GH + j;
    T hn;
    if (CELL == PYDL_RNN_LSTM) {
      const T i = rnn_sigmoid(gx[0] + gh[0] + b[j]);
      const T f = rnn_sigmoid(gx[H] + gh[H] + b[H + j]);
      const T u = rnn_tanh(gx[2 * H] + gh[2 * H] + b[2 * H + j]);
      const T o = rnn_sigmoid(gx[3 * H] + gh[3 * H] + b[3 * H + j]);
      const T cn = f * c[idx] + i * u;
      hn = o * rnn_tanh(cn);
      c[idx] = cn;
      cs[row * H + j] = cn;
      g[0] = i;
      g[H] = f;
      g[2 * H] = u;
      g[3 * H] = o;
    } else if (CELL == PYDL_RNN_GRU) {
      const T r = rnn_sigmoid(gx[0] + b[j] + gh[0] + bh[j]);
      const T z = rnn_sigmoid(gx[H] + b[H + j] + gh[H] + bh[H + j]);
      const T qn = gh[2 * H] + bh[2 * H + j];
      const T nn = rnn_tanh(gx[2 * H] + b[2 * H + j] + r * qn);
      hn = (T(1) - z) * nn + z * hp;
      q[row * H + j] = qn;
      g[0] = r;
      g[H] = z;
      g[2 * H] = nn;
    } else {
      const T a = gx[0] + gh[0] + b[j];
      if (CELL == PYDL_RNN_RELU) hn = a < T(0) ? T(0) : a;  // NaN stays NaN
      else hn = rnn_tanh(a);
      g[0] = hn;
    }
    out[row * H + j] = hn;
    h[idx] = hn;
    if (has_rscale) hmul[idx] = hn * rscale[idx];
  }
}

// The product dG_t U^T split over S parts of the GH columns: P (N*S, H*S) = dG_t viewed as
// (N*S, GH/S) times (U viewed as (H*S, GH/S))^T holds, at row n*S + s and column j*S + s, the part
// of dh[n, j] from the columns [s*GH/S, (s+1)*GH/S) (the other entries are unused cross terms).
// S = 1 is the plain product P = dG_t U^T (N, H).
template <typename T>
__device__ __forceinline__ T rnn_split_sum(const T* __restrict__ P, long long n, long long j, long long H,
                                           long long S) {
  const long long step = H * S + 1;  // from (n*S + s, j*S + s) to (n*S + s + 1, j*S + s + 1)
  const T* p = P + (n * S) * (H * S) + j * S;
  T acc = p[0];
  for (long long s = 1; s < S; ++s) {
    p += step;
    acc = acc + p[0];
  }
  return acc;
}

// ---- backward: one time step -------------------------------------------------------------
// The gradient reaching h_t from later steps is dh = dhr . rscale + dhd, plus dout[n, t]: dhd is
// the direct part written by the previous launch, dhr = dG_{t+1} U^T the product that followed it,
// read from the split-K layout below.
// Writes the pre-activation gradients of step t: dgx[n, t] (feeds W, b, x) and, for the GRU,
// dgh[n, t] (feeds U, b_h; its n block is dn . r); dgs (N, GH), this step's dGh for the product
// dG_t U^T; dhd (=) the part of dh_{t-1} that bypasses U (GRU dh z; a masked step passes dh
// whole; else 0); dc (LSTM) in place from dc_t to dc_{t-1}.
template <typename T, int CELL>
__device__ void rnn_backward_step_body(T* __restrict__ dgx, T* __restrict__ dgh, T* __restrict__ dgs,
                                       T* __restrict__ dhd, T* __restrict__ dc, const T* __restrict__ dhr,
                                       const T* __restrict__ dout, const T* __restrict__ gates,
                                       const T* __restrict__ hprev, const T* __restrict__ cs,
                                       const T* __restrict__ q, const T* __restrict__ c0,
                                       const unsigned char* __restrict__ mask, const T* __restrict__ rscale,
                                       long long N, long long T_, long long H, long long S, long long t,
                                       int has_mask, int has_rscale, int has_dout) {
  const int G = CELL == PYDL_RNN_LSTM ? 4 : (CELL == PYDL_RNN_GRU ? 3 : 1);
  const long long GH = G * H;
  const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= H) return;
  for (long long n = blockIdx.y; n < N; n += gridDim.y) {
    const long long idx = n * H + j;
    const long long row = n * T_ + t;
    T dh = rnn_split_sum(dhr, n, j, H, S);
    dh = has_rscale ? dh * rscale[idx] + dhd[idx] : dh + dhd[idx];
    if (has_dout) dh = dh + dout[row * H + j];
    T* gx = dgx + row * GH + j;
    T* gs = dgs + n * GH + j;
    if (has_mask && mask[row] == 0) {  // no gate gradients; dh (and dc) pass to step t - 1
#pragma unroll
      for (int k = 0; k < G; ++k) {
        gx[k * H] = T(0);
        gs[k * H] = T(0);
        if (CELL == PYDL_RNN_GRU) dgh[row * GH + j + k * H] = T(0);
      }
      dhd[idx] = dh;
      continue;
    }
    const T* g = gates + row * GH + j;
    if (CELL == PYDL_RNN_LSTM) {
      const T i = g[0], f = g[H], u = g[2 * H], o = g[3 * H];
      const T cv = cs[row * H + j];
      const T cp = t > 0 ? cs[(row - 1) * H + j] : c0[idx];
      const T tc = rnn_tanh(cv);
      const T dct = dc[idx] + dh * o * (T(1) - tc * tc);
      const T di = dct * u * i * (T(1) - i);
      const T df = dct * cp * f * (T(1) - f);
      const T du = dct * i * (T(1) - u * u);
      const T dob = dh * tc * o * (T(1) - o);
      gx[0] = di;
      gx[H] = df;
      gx[2 * H] = du;
      gx[3 * H] = dob;
      gs[0] = di;
      gs[H] = df;
      gs[2 * H] = du;
      gs[3 * H] = dob;
      dc[idx] = dct * f;
      dhd[idx] = T(0);
    } else if (CELL == PYDL_RNN_GRU) {
      const T r = g[0], z = g[H], nn = g[2 * H];
      const T dn = dh * (T(1) - z) * (T(1) - nn * nn);
      const T dr = dn * q[row * H + j] * r * (T(1) - r);
      const T dz = dh * (hprev[row * H + j] - nn) * z * (T(1) - z);
      const T dq = dn * r;
      T* gh = dgh + row * GH + j;
      gx[0] = dr;
      gx[H] = dz;
      gx[2 * H] = dn;
      gh[0] = dr;
      gh[H] = dz;
      gh[2 * H] = dq;
      gs[0] = dr;
      gs[H] = dz;
      gs[2 * H] = dq;
      dhd[idx] = dh * z;
    } else {
      const T hv = g[0];
      T d;
      if (CELL == PYDL_RNN_RELU) d = hv != hv ? hv : (hv > T(0) ? dh : T(0));
      else d = dh * (T(1) - hv * hv);
      gx[0] = d;
      gs[0] = d;
      dhd[idx] = T(0);
    }
  }
}

// ---- small helpers -------------------------------------------------------------------------

// out[n, r, j] = a[n, r, j] . s[n, j] for a, out (N, R, H) and s (N, H): every step of a row scaled
// by that row's s. R = 1: h0 . rscale; R = T: hprev . rscale. Grid as the step kernels.
template <typename T>
__device__ void rnn_scale_rows_body(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ s,
                                    long long N, long long R, long long H) {
  const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= H) return;
  for (long long n = blockIdx.y; n < N; n += gridDim.y) {
    const T sv = s[n * H + j];
    for (long long r = 0; r < R; ++r) out[(n * R + r) * H + j] = a[(n * R + r) * H + j] * sv;
  }
}

// out[n, j] = (dG_0 U^T)[n, j] . rscale[n, j] + dhd[n, j] (dhr in the split layout of
// rnn_split_sum; rscale read only with has_rscale): dh0 after the last step. Grid as the step kernels.
template <typename T>
__device__ void rnn_dh_total_body(T* __restrict__ out, const T* __restrict__ dhr, const T* __restrict__ dhd,
                                  const T* __restrict__ rscale, long long N, long long H, long long S,
                                  int has_rscale) {
  const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= H) return;
  for (long long n = blockIdx.y; n < N; n += gridDim.y) {
    const long long idx = n * H + j;
    const T a = rnn_split_sum(dhr, n, j, H, S);
    out[idx] = has_rscale ? a * rscale[idx] + dhd[idx] : a + dhd[idx];
  }
}

// ---- entries ----------------------------------------------------------------------------

#define PYDL_RNN_FWD_ENTRY(NAME, CELL, T, SUF)                                                             \
  extern "C" __global__ void __launch_bounds__(256) NAME##_##SUF(                                          \
      T* out, T* h, T* hmul, T* c, T* gates, T* hprev, T* cs, T* q, const T* xw, const T* hu, const T* b,  \
      const T* bh, const unsigned char* mask, const T* rscale, long long N, long long T_, long long H,     \
      long long t, int has_mask, int has_rscale) {                                                         \
    rnn_forward_step_body<T, CELL>(out, h, hmul, c, gates, hprev, cs, q, xw, hu, b, bh, mask, rscale, N, T_, \
                                   H, t, has_mask, has_rscale);                                            \
  }

#define PYDL_RNN_BWD_ENTRY(NAME, CELL, T, SUF)                                                             \
  extern "C" __global__ void __launch_bounds__(256) NAME##_##SUF(                                          \
      T* dgx, T* dgh, T* dgs, T* dhd, T* dc, const T* dhr, const T* dout, const T* gates, const T* hprev,  \
      const T* cs, const T* q, const T* c0, const unsigned char* mask, const T* rscale, long long N,       \
      long long T_, long long H, long long S, long long t, int has_mask, int has_rscale, int has_dout) {   \
    rnn_backward_step_body<T, CELL>(dgx, dgh, dgs, dhd, dc, dhr, dout, gates, hprev, cs, q, c0, mask, rscale, \
                                    N, T_, H, S, t, has_mask, has_rscale, has_dout);                       \
  }

PYDL_RNN_FWD_ENTRY(rnn_fwd_tanh, PYDL_RNN_TANH, float, f32)
PYDL_RNN_FWD_ENTRY(rnn_fwd_tanh, PYDL_RNN_TANH, double, f64)
PYDL_RNN_FWD_ENTRY(rnn_fwd_relu, PYDL_RNN_RELU, float, f32)
PYDL_RNN_FWD_ENTRY(rnn_fwd_relu, PYDL_RNN_RELU, double, f64)
PYDL_RNN_FWD_ENTRY(rnn_fwd_lstm, PYDL_RNN_LSTM, float, f32)
PYDL_RNN_FWD_ENTRY(rnn_fwd_lstm, PYDL_RNN_LSTM, double, f64)
PYDL_RNN_FWD_ENTRY(rnn_fwd_gru, PYDL_RNN_GRU, float, f32)
PYDL_RNN_FWD_ENTRY(rnn_fwd_gru, PYDL_RNN_GRU, double, f64)

PYDL_RNN_BWD_ENTRY(rnn_bwd_tanh, PYDL_RNN_TANH, float, f32)
PYDL_RNN_BWD_ENTRY(rnn_bwd_tanh, PYDL_RNN_TANH, double, f64)
PYDL_RNN_BWD_ENTRY(rnn_bwd_relu, PYDL_RNN_RELU, float, f32)
PYDL_RNN_BWD_ENTRY(rnn_bwd_relu, PYDL_RNN_RELU, double, f64)
PYDL_RNN_BWD_ENTRY(rnn_bwd_lstm, PYDL_RNN_LSTM, float, f32)
PYDL_RNN_BWD_ENTRY(rnn_bwd_lstm, PYDL_RNN_LSTM, double, f64)
PYDL_RNN_BWD_ENTRY(rnn_bwd_gru, PYDL_RNN_GRU, float, f32)
PYDL_RNN_BWD_ENTRY(rnn_bwd_gru, PYDL_RNN_GRU, double, f64)

extern "C" __global__ void __launch_bounds__(256)
    rnn_scale_rows_f32(float* out, const float* a, const float* s, long long N, long long R, long long H) {
  rnn_scale_rows_body<float>(out, a, s, N, R, H);
}
extern "C" __global__ void __launch_bounds__(256)
    rnn_scale_rows_f64(double* out, const double* a, const double* s, long long N, long long R, long long H) {
  rnn_scale_rows_body<double>(out, a, s, N, R, H);
}
extern "C" __global__ void __launch_bounds__(256)
    rnn_dh_total_f32(float* out, const float* dhr, const float* dhd, const float* rscale, long long N, long long H,
                     long long S, int has_rscale) {
  rnn_dh_total_body<float>(out, dhr, dhd, rscale, N, H, S, has_rscale);
}
extern "C" __global__ void __launch_bounds__(256)
    rnn_dh_total_f64(double* out, const double* dhr, const double* dhd, const double* rscale, long long N,
                     long long H, long long S, int has_rscale) {
  rnn_dh_total_body<double>(out, dhr, dhd, rscale, N, H, S, has_rscale);
}
