#include "rnn.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
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
  return rnn_generic::make_table<double, detail::kRnnTileDouble.MR, detail::kRnnTileDouble.NR>();
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
  return rnn_generic::make_table<float, detail::kRnnTileGeneric.MR, detail::kRnnTileGeneric.NR>();
}

void check_sizes(const char* op, RnnCell cell, index_t N, index_t T, index_t C, index_t H) {
  PYDL_CHECK(cell == RnnCell::rnn_tanh || cell == RnnCell::rnn_relu || cell == RnnCell::lstm ||
                 cell == RnnCell::gru,
             op, "unknown cell kind ", static_cast<int>(cell));
  PYDL_CHECK(N >= 0 && T >= 0, op, "batch N=", N, " and time steps T=", T, " must be >= 0");
  PYDL_CHECK(C >= 1 && H >= 1, op, "features C=", C, " and units H=", H, " must be >= 1");
}

// Per-step multiply-adds per thread below which the sequence runs on fewer threads: each step
// ends in a barrier (~1 us when every thread is running, a scheduler time slice when the
// machine is oversubscribed), so a thread should have >= ~10 us of work per step.
constexpr double kStepWorkPerThread = 1024.0 * 1024;
// Units are split into chunks of whole blocks of this many (one AVX-512 vector), so every
// chunk runs the same vector code whatever the thread count.
constexpr index_t kUnitBlock = 16;
// With several threads, at most this many chunks per thread (plan_chunks): each step's chunks
// are shared out by TeamQueues (a thread's own chunks first), so a thread that runs slower for a
// while (a busy SMT sibling, a shared vCPU, a slower core) hands its last chunks to the others
// rather than making them wait at the step's barrier. LSTM T50 N32 I128 H256 on 2 threads (Zen 4
// vCPUs, periods sorted by how a 2-thread SGEMM scaled in the same seconds): where both threads
// ran at full speed, forward 8.17 -> 8.26 ms and forward + backward 25.8 -> 25.7 against one
// fixed slice per thread; where one thread was slowed, 12.0 -> 10.1 and 32.8 -> 30.9. Four equal
// chunks per thread instead took 8.9 ms forward at full speed (per-chunk costs); letting helpers
// take another thread's last chunk, 26.8 ms forward + backward (its weights sat in the other
// core's cache, and the owner waited for the helper).
constexpr index_t kChunksPerThread = 4;
// Depth of one pass over a packed panel (the panel's kKC x NR block stays in L1).
constexpr index_t kKC = 128;

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// Threads for a sequence whose every step costs N * GH * K multiply-adds.
inline int sequence_threads(index_t N, index_t GH, index_t K, index_t H) {
  const int nt = threads_for(static_cast<double>(N) * GH * K, kStepWorkPerThread);
  return static_cast<int>(std::min<index_t>(nt, ceil_div(H, kUnitBlock)));
}

// How a sequence's units are cut into chunks for nt threads. Thread r's own units are the r-th of
// nt near-equal runs of whole blocks of `block` units, cut into at most kChunksPerThread chunks
// of halving size (8 blocks: 4, 2, 1, 1): big chunks first, where per-chunk costs matter, small
// ones last, where they even out the threads' finishing times. One thread: one chunk. The
// backward's product has one column per unit, so its blocks are whole NR-wide panels there (a
// 16-unit chunk would fill half of a 32-wide AVX-512 panel with padding).
struct ChunkPlan {
  std::vector<index_t> start;        // chunk c holds units [start[c], start[c + 1])
  std::vector<std::int64_t> home;    // thread r's own chunks: [home[r], home[r + 1])
  index_t max_units = 0;             // units of the largest chunk
  index_t chunks() const { return static_cast<index_t>(start.size()) - 1; }
  index_t units(index_t c) const { return start[c + 1] - start[c]; }
};

inline ChunkPlan plan_chunks(index_t H, int nt, index_t block = kUnitBlock) {
  ChunkPlan p;
  p.start.push_back(0);
  const index_t blocks = ceil_div(H, block);
  for (int r = 0; r < nt; ++r) {
    p.home.push_back(p.chunks());
    index_t b = blocks * r / nt;
    const index_t b1 = blocks * (r + 1) / nt;
    for (index_t k = 0; b < b1; ++k) {
      const index_t take = nt == 1 || k + 1 == kChunksPerThread ? b1 - b : std::max<index_t>(1, (b1 - b) / 2);
      b += take;
      p.start.push_back(std::min(H, b * block));
      p.max_units = std::max(p.max_units, p.units(p.chunks() - 1));
    }
  }
  p.home.push_back(p.chunks());
  return p;
}

// Elements of one chunk's share of a buffer holding `per_col` values for each of `cols` columns
// padded to whole NR-wide panels; a multiple of 16, so every share starts 64-byte aligned.
inline index_t chunk_stride(index_t cols, index_t NR, index_t per_col) {
  return ceil_div(ceil_div(cols, NR) * NR * per_col, 16) * 16;
}

// The per-step products run on packed A: the N rows in ceil(N / MR) blocks of nearly equal size
// (32 rows with MR = 6: 5, 5, 6, 5, 5, 6 rather than five of 6 and one of 2, whose 4
// accumulators are too few chains to hide the FMA latency), block b at Ap + b * k * MR holding
// a(i, p) at [p * MR + i].
inline index_t row_blocks(index_t N, index_t MR) { return ceil_div(N, MR); }
inline index_t block_start(index_t N, index_t nb, index_t b) { return N * b / nb; }
inline std::size_t apack_elems(index_t N, index_t MR, index_t k) {
  return static_cast<std::size_t>(ceil_div(row_blocks(N, MR) * MR * k, 16) * 16);
}

// Four rows of A (src, row stride lda), columns [c0, c1), into the packed layout:
// dst[p * MR + i] = src[i * lda + p] for i < 4. Four columns at a time by a 4 x 4 transpose of
// 16-byte vectors, so each step is 4 loads, 8 shuffles and 4 stores rather than 16 scalar moves
// (element by element, packing h_t and x_t took ~6% of an LSTM forward on the Intel Xeon).
inline void pack4_rows(float* dst, index_t MR, const float* src, index_t lda, index_t c0, index_t c1) {
  typedef float V4 __attribute__((vector_size(16)));
  typedef std::int32_t I4 __attribute__((vector_size(16)));
  index_t p = c0;
  for (; p + 4 <= c1; p += 4) {
    V4 r[4];
    for (int i = 0; i < 4; ++i) std::memcpy(&r[i], src + i * lda + p, sizeof(V4));
    const V4 t0 = __builtin_shuffle(r[0], r[1], I4{0, 4, 1, 5}), t1 = __builtin_shuffle(r[0], r[1], I4{2, 6, 3, 7});
    const V4 t2 = __builtin_shuffle(r[2], r[3], I4{0, 4, 1, 5}), t3 = __builtin_shuffle(r[2], r[3], I4{2, 6, 3, 7});
    const V4 col[4] = {__builtin_shuffle(t0, t2, I4{0, 1, 4, 5}), __builtin_shuffle(t0, t2, I4{2, 3, 6, 7}),
                       __builtin_shuffle(t1, t3, I4{0, 1, 4, 5}), __builtin_shuffle(t1, t3, I4{2, 3, 6, 7})};
    for (int j = 0; j < 4; ++j) std::memcpy(dst + (p + j) * MR, &col[j], sizeof(V4));
  }
  for (; p < c1; ++p)
    for (int i = 0; i < 4; ++i) dst[p * MR + i] = src[i * lda + p];
}

// Packs columns [c0, c1) of A[N, k] (row stride lda) into Ap (the layout above, depth k); with
// `scale` ([N, k], row stride k) the packed values are A . scale (recurrent dropout).
template <typename F>
void pack_a(F* Ap, const F* A, index_t lda, index_t N, index_t k, index_t c0, index_t c1, index_t MR,
            const F* scale = nullptr) {
  const index_t nb = row_blocks(N, MR);
  for (index_t bk = 0; bk < nb; ++bk) {
    const index_t r0 = block_start(N, nb, bk), m = block_start(N, nb, bk + 1) - r0;
    F* d = Ap + bk * k * MR;
    index_t i0 = 0;
    if constexpr (std::is_same<F, float>::value) {
      if (!scale)
        for (; i0 + 4 <= m; i0 += 4) pack4_rows(d + i0, MR, A + (r0 + i0) * lda, lda, c0, c1);
    }
    for (index_t i = i0; i < m; ++i) {
      const F* a = A + (r0 + i) * lda;
      if (scale) {
        const F* s = scale + (r0 + i) * k;
        for (index_t p = c0; p < c1; ++p) d[p * MR + i] = a[p] * s[p];
      } else {
        for (index_t p = c0; p < c1; ++p) d[p * MR + i] = a[p];
      }
    }
  }
}

// C[N, ncols] = A[N, k] * Bp, A packed (pack_a), Bp packed in NR-column panels of k rows each;
// C has row stride ldc >= panels * NR (whole panels are written).
template <typename F>
void step_product(const detail::RnnRowKernels<F>* K, F* C, index_t ldc, const F* Ap, const F* Bp, index_t ncols,
                  index_t k, index_t N) {
  const index_t MR = K->MR, NR = K->NR, panels = ceil_div(ncols, NR), nb = row_blocks(N, MR);
  for (index_t q = 0; q < panels; ++q) {
    const F* panel = Bp + q * k * NR;
    for (index_t p0 = 0; p0 < k; p0 += kKC) {
      const index_t kc = std::min(kKC, k - p0);
      for (index_t bk = 0; bk < nb; ++bk) {
        const index_t r0 = block_start(N, nb, bk), m = block_start(N, nb, bk + 1) - r0;
        K->tile(m, kc, Ap + bk * k * MR + p0 * MR, panel + p0 * NR, C + r0 * ldc + q * NR, ldc, p0 > 0);
      }
    }
  }
}

// Forward panels of one thread: its local column c = g * hk + u (gate g, unit u0 + u) of a
// [rows, G*H] kernel M (U: rows = H; W: rows = C);
// dst[(q * rows + p) * NR + j] = M[p, g * H + u0 + u] for c = q * NR + j (0 past the end).
template <typename F>
void pack_u(F* dst, const F* U, index_t rows, index_t H, index_t G, index_t u0, index_t hk, index_t NR) {
  const index_t GH = G * H, ncols = G * hk, panels = ceil_div(ncols, NR);
  // A panel's columns are runs of consecutive units of one gate: (first panel column, first
  // column of U, length); at most NR runs.
  index_t run_j[64], run_src[64], run_len[64];
  for (index_t q = 0; q < panels; ++q) {
    index_t runs = 0;
    for (index_t c = q * NR; c < std::min(ncols, q * NR + NR);) {
      const index_t g = c / hk, u = c % hk;
      const index_t len = std::min(hk - u, q * NR + NR - c);
      run_j[runs] = c - q * NR, run_src[runs] = g * H + u0 + u, run_len[runs] = len;
      ++runs;
      c += len;
    }
    const index_t filled = std::min(ncols - q * NR, NR);
    for (index_t p = 0; p < rows; ++p) {
      F* d = dst + (q * rows + p) * NR;
      const F* row = U + p * GH;
      for (index_t r = 0; r < runs; ++r)
        for (index_t j = 0; j < run_len[r]; ++j) d[run_j[r] + j] = row[run_src[r] + j];
      for (index_t j = filled; j < NR; ++j) d[j] = F(0);
    }
  }
}

// Backward panels of one thread: U^T restricted to its units, k = GH rows;
// dst[(q * GH + p) * NR + j] = U[u0 + u, p] for u = q * NR + j < hk (0 past the end).
template <typename F>
void pack_ut(F* dst, const F* U, index_t GH, index_t u0, index_t hk, index_t NR) {
  const index_t panels = ceil_div(hk, NR);
  for (index_t q = 0; q < panels; ++q)
    for (index_t p = 0; p < GH; ++p) {
      F* d = dst + (q * GH + p) * NR;
      for (index_t j = 0; j < NR; ++j) {
        const index_t u = q * NR + j;
        d[j] = u < hk ? U[(u0 + u) * GH + p] : F(0);
      }
    }
}

template <typename F>
void column_sums(F* out, const F* a, index_t rows, index_t cols) {
  constexpr index_t B = 128;
  const index_t blocks = (cols + B - 1) / B;
  const int nt = threads_for(static_cast<double>(rows) * cols, 1e5);
  parallel_for(nt, blocks, [&](index_t blk, int) {
    const index_t c0 = blk * B, nc = std::min(B, cols - c0);
    double acc[B];
    for (index_t j = 0; j < nc; ++j) acc[j] = 0.0;
    for (index_t r = 0; r < rows; ++r) {
      const F* row = a + r * cols + c0;
      for (index_t j = 0; j < nc; ++j) acc[j] += static_cast<double>(row[j]);
    }
    for (index_t j = 0; j < nc; ++j) out[c0 + j] = static_cast<F>(acc[j]);
  });
}

// dst[r, :cols] = src[r, :cols] (or 0 when src is null) for r < rows, with row strides lds / lss.
template <typename F>
void copy_rows(F* dst, index_t ldd, const F* src, index_t lss, index_t rows, index_t cols) {
  for (index_t r = 0; r < rows; ++r) {
    if (src) std::memcpy(dst + r * ldd, src + r * lss, sizeof(F) * static_cast<std::size_t>(cols));
    else std::fill(dst + r * ldd, dst + r * ldd + cols, F(0));
  }
}

template <typename F>
void copy_or_zero(F* dst, const F* src, index_t n) {
  if (src) std::memcpy(dst, src, sizeof(F) * static_cast<std::size_t>(n));
  else std::fill(dst, dst + n, F(0));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// One parallel region for the whole sequence. The units are cut into chunks (plan_chunks); each
// thread packs the columns of W and U for its own chunks' gates once. Per step, for each chunk
// it takes (TeamQueues: its own first, then any a slower thread has not started), a thread
// computes h_{t-1} U for the chunk's columns (all N rows), runs the fused cell on its units,
// packs their h_t for the next step, and computes x_{t+1} W for them (which needs no other
// chunk's h_t, so it fills the time others take to finish); then all meet at one barrier (h_t
// complete) before the next step. x_t W is formed per step, not as one GEMM over all steps
// ahead of the loop, so the pre-activations never make a round trip through memory: they are
// read by the cell while still in L1/L2. (On AVX2 the per-step tile also runs faster than sgemm
// does on the all-steps shape: 1600x1024x128 at ~62 GFLOP/s on one core vs ~80 for the
// per-step products, measured on the Zen 3 target.) Every product first packs its rows of A
// (h_{t-1} or x_{t+1}) into row blocks (pack_a). Which thread runs a chunk changes no result:
// a chunk's arithmetic is the same on any thread.
template <typename F>
void rnn_forward(RnnCell cell, F* out, F* hT, F* cT, F* gates, F* hprev, F* cs, F* q, const F* x, const F* W,
                 const F* U, const F* b, const F* b_h, const F* h0, const F* c0, const std::uint8_t* mask,
                 const F* rscale, index_t N, index_t T, index_t C, index_t H) {
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
  PYDL_CHECK(out && x && W && U && b, op, "missing array");
  // Training keeps every cache for rnn_backward; inference (all of them null) keeps none.
  const bool keep = gates != nullptr;
  PYDL_CHECK(keep == (hprev != nullptr) && (!lstm || keep == (cs != nullptr)) && (!gru || keep == (q != nullptr)),
             op, "the caches (gates, hprev, cs, q) are all given (training) or all null (inference)");

  const index_t G = rnn_gates(cell), GH = G * H;
  const index_t ldh = T * H, ldg = T * GH, ldx = T * C;
  const auto* K = row_kernels<F>();
  const index_t NR = K->NR;
  const int nt = sequence_threads(N, GH, C + H, H);
  const index_t MR = K->MR;
  const ChunkPlan plan = plan_chunks(H, nt);
  const index_t cu = plan.max_units, chunks = plan.chunks();
  // Per chunk: packed W and U for its gates' columns, and its x_t W product (computed at step
  // t - 1 by whichever thread ran the chunk then). Per thread: the h U product of the chunk at hand.
  const index_t w_st = chunk_stride(G * cu, NR, C), u_st = chunk_stride(G * cu, NR, H);
  const index_t xw_st = chunk_stride(G * cu, NR, N);
  aligned_ptr<F> wpack = aligned_alloc_array<F>(static_cast<std::size_t>(w_st * chunks));
  aligned_ptr<F> upack = aligned_alloc_array<F>(static_cast<std::size_t>(u_st * chunks));
  aligned_ptr<F> xw = aligned_alloc_array<F>(static_cast<std::size_t>(xw_st * chunks));
  aligned_ptr<F> hu = aligned_alloc_array<F>(static_cast<std::size_t>(xw_st * nt));
  // x_t packed per thread; h_t packed once, each chunk's units packed by the thread that ran its
  // cell into one of two shared buffers used in turn (step t reads h_{t-1} from one while a
  // faster thread may already fill the other with h_t).
  const std::size_t xp_elems = apack_elems(N, MR, C), hp_elems = apack_elems(N, MR, H);
  aligned_ptr<F> xpack = aligned_alloc_array<F>(xp_elems * static_cast<std::size_t>(nt));
  aligned_ptr<F> hpack = aligned_alloc_array<F>(hp_elems * 2);
  std::vector<F> zeros(static_cast<std::size_t>(GH), F(0));
  const F* bh = b_h ? b_h : zeros.data();
  // Inference scratch: per thread one row of gate values (gate stride H, as in `gates`) and the
  // GRU's q for one row; per chunk the LSTM's c_{t-1} / c_t for all N rows, used in turn.
  const std::size_t row_elems = keep ? 0 : static_cast<std::size_t>(ceil_div(GH + H, 16) * 16);
  const std::size_t cbuf_elems = keep || !lstm ? 0 : static_cast<std::size_t>(ceil_div(2 * N * cu, 16) * 16);
  aligned_ptr<F> scratch = aligned_alloc_array<F>(row_elems * static_cast<std::size_t>(nt));
  aligned_ptr<F> cbuf = aligned_alloc_array<F>(cbuf_elems * static_cast<std::size_t>(chunks));
  TeamQueues queues(chunks, nt, plan.home.data());

  parallel_team(nt, [&](int rank, int team) {
    F* acc = hu.get() + xw_st * rank;
    F* Xp = xpack.get() + xp_elems * static_cast<std::size_t>(rank);
    F* g_row = scratch.get() + row_elems * static_cast<std::size_t>(rank);  // inference only
    F* q_row = g_row + GH;
    index_t xp_step = -1;  // which step's x Xp holds
    auto pack_x = [&](index_t t) {
      if (xp_step != t) pack_a(Xp, x + t * C, ldx, N, C, 0, C, MR);
      xp_step = t;
    };
    // Own chunks: pack their weights (so they land in this thread's caches) and x_0 W.
    for (index_t c = queues.begin(rank, team); c < queues.begin(rank + 1, team); ++c) {
      const index_t u0 = plan.start[c], hk = plan.units(c), ncols = G * hk;
      const index_t ldu = ceil_div(ncols, NR) * NR;  // row stride of the chunk's x W and h U blocks
      pack_u(wpack.get() + w_st * c, W, C, H, G, u0, hk, NR);
      pack_u(upack.get() + u_st * c, U, H, H, G, u0, hk, NR);
      pack_x(0);
      step_product(K, xw.get() + xw_st * c, ldu, Xp, wpack.get() + w_st * c, ncols, C, N);  // x_0 W
      if (h0) pack_a(hpack.get() + hp_elems, h0, H, N, H, u0, u0 + hk, MR, rscale);
    }
    queues.start(rank, team);
    team_barrier(team);

    for (index_t t = 0; t < T; ++t) {
      queues.begin_round(rank, team, t);
      const F* hp = t == 0 ? h0 : out + (t - 1) * H;  // null: zeros
      const index_t ldp = t == 0 ? H : ldh;
      std::int64_t item;
      while (queues.next(rank, team, t, item)) {
        const index_t c = static_cast<index_t>(item);
        const index_t u0 = plan.start[c], u1 = plan.start[c + 1], hk = u1 - u0, ncols = G * hk;
        const index_t ldu = ceil_div(ncols, NR) * NR;
        const F* Wp = wpack.get() + w_st * c;
        F* xacc = xw.get() + xw_st * c;
        F* c_rows = cbuf.get() + cbuf_elems * static_cast<std::size_t>(c);
        // Where step s writes c_s for row n (and step s + 1 reads it as c_{s-1}).
        auto c_at = [&](index_t s, index_t n) -> F* {
          if (keep) return cs + n * ldh + s * H + u0;
          if (s == T - 1) return cT + n * H + u0;
          return c_rows + ((s & 1) * N + n) * hk;
        };
        if (hp) {
          step_product(K, acc, ldu, hpack.get() + hp_elems * static_cast<std::size_t>((t + 1) & 1),
                       upack.get() + u_st * c, ncols, H, N);
        } else {
          std::fill(acc, acc + N * ldu, F(0));
        }
        for (index_t n = 0; n < N; ++n) {
          const F* hprow = (hp ? hp + n * ldp : zeros.data()) + u0;
          const F* gxrow = xacc + n * ldu;
          const F* hurow = acc + n * ldu;
          F* h = out + n * ldh + t * H + u0;
          F* g = keep ? gates + n * ldg + t * GH + u0 : g_row;
          F* qn = keep && gru ? q + n * ldh + t * H + u0 : q_row;
          const F* cp = lstm ? (t > 0 ? c_at(t - 1, n) : (c0 ? c0 + n * H : zeros.data()) + u0) : nullptr;
          if (keep) std::memcpy(hprev + n * ldh + t * H + u0, hprow, sizeof(F) * static_cast<std::size_t>(hk));
          if (mask && !mask[n * T + t]) {  // masked step: the state is kept
            std::memcpy(h, hprow, sizeof(F) * static_cast<std::size_t>(hk));
            if (lstm) std::memcpy(c_at(t, n), cp, sizeof(F) * static_cast<std::size_t>(hk));
            if (keep) {
              for (index_t gi = 0; gi < G; ++gi) std::fill(g + gi * H, g + gi * H + hk, F(0));
              if (gru) std::fill(qn, qn + hk, F(0));
            }
          } else if (lstm) {
            K->lstm_fwd(h, c_at(t, n), g, gxrow, hurow, b + u0, cp, hk, H, hk);
          } else if (gru) {
            K->gru_fwd(h, qn, g, gxrow, hurow, b + u0, bh + u0, hprow, hk, H, hk);
          } else {
            K->rnn_fwd(h, g, gxrow, hurow, b + u0, use_relu, hk, H, hk);
          }
        }
        // x_{t+1} W does not depend on h_t: done before the barrier, it fills the wait.
        if (t + 1 < T) {
          pack_a(hpack.get() + hp_elems * static_cast<std::size_t>(t & 1), out + t * H, ldh, N, H, u0, u1, MR,
                 rscale);
          pack_x(t + 1);
          step_product(K, xacc, ldu, Xp, Wp, ncols, C, N);
        }
      }
      team_barrier(team);
    }
  });
  for (index_t n = 0; n < N; ++n) {
    std::memcpy(hT + n * H, out + n * ldh + (T - 1) * H, sizeof(F) * static_cast<std::size_t>(H));
    if (lstm && keep) std::memcpy(cT + n * H, cs + n * ldh + (T - 1) * H, sizeof(F) * static_cast<std::size_t>(H));
  }
}

// ---------------------------------------------------------------------------------------------
// Reverse pass, one parallel region, units in chunks shared out per step as in the forward. A
// chunk's work at step t: the fused cell backward on its units (writing their columns of dG_t),
// then packing its columns of dGh_t into the shared row blocks the next product reads (two
// buffers, used in turn); all meet at one barrier (dG_t complete). The same chunk's work at step
// t - 1 then starts with dh_{t-1} = dGh_t U^T (+ dh z for the GRU) for its units, from its
// packed rows of U, so the product and the cell that consumes it run back to back on one thread.
// After the loop, over all N*T rows at once:
// dW = X^T dGx, dU = H_prev^T dGh, db = colsum(dGx), db_h = colsum(dGh), dX = dGx W^T.
template <typename F>
void rnn_backward(RnnCell cell, F* dx, F* dh0, F* dc0, F* dW, F* dU, F* db, F* db_h, const F* gates,
                  const F* hprev, const F* cs, const F* q, const F* x, const F* W, const F* U, const F* c0,
                  const std::uint8_t* mask, const F* rscale, const F* dout, const F* dhT, const F* dcT, index_t N,
                  index_t T, index_t C, index_t H) {
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
  const index_t NR = K->NR;
  const int nt = sequence_threads(N, GH, H, H);
  const index_t MR = K->MR;
  const ChunkPlan plan = plan_chunks(H, nt, std::max(kUnitBlock, NR));
  const index_t cu = plan.max_units, chunks = plan.chunks();
  std::vector<F> zeros(static_cast<std::size_t>(H), F(0));
  aligned_ptr<F> dgx = aligned_alloc_array<F>(static_cast<std::size_t>(NT * GH));
  aligned_ptr<F> dgh_buf;
  if (gru) dgh_buf = aligned_alloc_array<F>(static_cast<std::size_t>(NT * GH));
  F* dgh = gru ? dgh_buf.get() : dgx.get();
  // Per chunk: U^T's rows for its units, packed. Per thread: the product for the chunk at hand.
  const index_t ut_st = chunk_stride(cu, NR, GH), acc_st = chunk_stride(cu, NR, N);
  aligned_ptr<F> utpack = aligned_alloc_array<F>(static_cast<std::size_t>(ut_st * chunks));
  aligned_ptr<F> dacc = aligned_alloc_array<F>(static_cast<std::size_t>(acc_st * nt));
  // dGh_t packed for the product (pack_a layout, depth GH), two buffers used in turn: chunks of
  // step t - 1 are packed into one while other threads may still read step t's from the other.
  const std::size_t ap_elems = apack_elems(N, MR, GH);
  aligned_ptr<F> apack = aligned_alloc_array<F>(2 * ap_elems);
  // Running gradients, rows padded to whole unit blocks so threads never share a cache line.
  const index_t lds = ceil_div(H, kUnitBlock) * kUnitBlock;
  aligned_ptr<F> dhr = aligned_alloc_array<F>(static_cast<std::size_t>(N * lds));
  aligned_ptr<F> dhd = aligned_alloc_array<F>(static_cast<std::size_t>(N * lds));
  aligned_ptr<F> dc;
  copy_rows(dhr.get(), lds, dhT, H, N, H);
  if (lstm) {
    dc = aligned_alloc_array<F>(static_cast<std::size_t>(N * lds));
    copy_rows(dc.get(), lds, dcT, H, N, H);
  }
  TeamQueues queues(chunks, nt, plan.home.data());

  parallel_team(nt, [&](int rank, int team) {
    F* acc = dacc.get() + acc_st * rank;
    F* dhr_p = dhr.get();
    F* dhd_p = dhd.get();
    F* dc_p = dc.get();
    for (index_t c = queues.begin(rank, team); c < queues.begin(rank + 1, team); ++c) {
      pack_ut(utpack.get() + ut_st * c, U, GH, plan.start[c], plan.units(c), NR);
    }
    queues.start(rank, team);
    team_barrier(team);

    // Round r = T - 1 - t: step t's cells, preceded (t < T - 1) by dh_t = dGh_{t+1} U^T; round T
    // (t = -1) forms only dh_{-1} = dh0.
    for (index_t t = T - 1; t >= -1; --t) {
      const index_t round = T - 1 - t;
      queues.begin_round(rank, team, round);
      std::int64_t item;
      while (queues.next(rank, team, round, item)) {
        const index_t c = static_cast<index_t>(item);
        const index_t u0 = plan.start[c], u1 = plan.start[c + 1], hk = u1 - u0;
        const index_t lda = ceil_div(hk, NR) * NR;  // row stride of the chunk's dG U^T block
        if (t + 1 < T) {  // dh_t for the chunk's units, from step t + 1's dGh
          const index_t s = t + 1;
          step_product(K, acc, lda, apack.get() + ap_elems * static_cast<std::size_t>(s & 1),
                       utpack.get() + ut_st * c, hk, GH, N);
          for (index_t n = 0; n < N; ++n) {
            F* d = dhr_p + n * lds + u0;
            const F* a = acc + n * lda;
            const F* z = dhd_p + n * lds + u0;
            if (mask && !mask[n * T + s]) {
              for (index_t j = 0; j < hk; ++j) d[j] = z[j];
            } else if (rscale) {
              const F* sc = rscale + n * H + u0;
              if (gru) for (index_t j = 0; j < hk; ++j) d[j] = a[j] * sc[j] + z[j];
              else for (index_t j = 0; j < hk; ++j) d[j] = a[j] * sc[j];
            } else if (gru) {
              for (index_t j = 0; j < hk; ++j) d[j] = a[j] + z[j];
            } else {
              for (index_t j = 0; j < hk; ++j) d[j] = a[j];
            }
          }
        }
        if (t < 0) continue;
        F* dgx_t = dgx.get() + t * GH;
        F* dgh_t = dgh + t * GH;
        for (index_t n = 0; n < N; ++n) {
          const F* dorow = dout ? dout + n * ldh + t * H + u0 : nullptr;
          const F* g = gates + n * ldg + t * GH + u0;
          F* dg = dgx_t + n * ldg + u0;
          const F* dh_in = dhr_p + n * lds + u0;
          if (mask && !mask[n * T + t]) {  // masked step: no gate gradients, dh passes through
            for (index_t gi = 0; gi < G; ++gi) {
              std::fill(dg + gi * H, dg + gi * H + hk, F(0));
              if (gru) std::fill(dgh_t + n * ldg + u0 + gi * H, dgh_t + n * ldg + u0 + gi * H + hk, F(0));
            }
            F* pass = dhd_p + n * lds + u0;
            for (index_t j = 0; j < hk; ++j) pass[j] = dorow ? dh_in[j] + dorow[j] : dh_in[j];
          } else if (lstm) {
            const F* cp = (t > 0 ? cs + n * ldh + (t - 1) * H : (c0 ? c0 + n * H : zeros.data())) + u0;
            K->lstm_bwd(dg, dc_p + n * lds + u0, dh_in, dorow, g, cs + n * ldh + t * H + u0, cp, hk, H);
          } else if (gru) {
            K->gru_bwd(dg, dgh_t + n * ldg + u0, dhd_p + n * lds + u0, dh_in, dorow, g, q + n * ldh + t * H + u0,
                       hprev + n * ldh + t * H + u0, hk, H);
          } else {
            K->rnn_bwd(dg, dh_in, dorow, g, use_relu, hk, H);
          }
        }
        for (index_t gi = 0; gi < G; ++gi)
          pack_a(apack.get() + ap_elems * static_cast<std::size_t>(t & 1), dgh_t, ldg, N, GH, gi * H + u0,
                 gi * H + u1, MR);
      }
      if (t >= 0) team_barrier(team);
    }
  });
  copy_rows(dh0, H, dhr.get(), lds, N, H);
  if (lstm) copy_rows(dc0, H, dc.get(), lds, N, H);

  gemm(true, false, C, GH, NT, F(1), x, C, dgx.get(), GH, F(0), dW, GH);
  if (rscale) {  // dU = (H_prev . rscale)^T dGh
    aligned_ptr<F> hs = aligned_alloc_array<F>(static_cast<std::size_t>(NT * H));
    for (index_t n = 0; n < N; ++n)
      for (index_t t = 0; t < T; ++t) {
        const F* src = hprev + (n * T + t) * H;
        const F* s = rscale + n * H;
        F* d = hs.get() + (n * T + t) * H;
        for (index_t j = 0; j < H; ++j) d[j] = src[j] * s[j];
      }
    gemm(true, false, H, GH, NT, F(1), hs.get(), H, dgh, GH, F(0), dU, GH);
  } else {
    gemm(true, false, H, GH, NT, F(1), hprev, H, dgh, GH, F(0), dU, GH);
  }
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

// One step of sample n: pre_x = x_t W + b, pre_h = (h . s) U (+ b_h) (s: the row's recurrent
// dropout scale, null = 1); returns h', c', and the gate activations acts [GH] (SimpleRNN: h'),
// q [H] (GRU).
template <typename F>
void naive_step(RnnCell cell, std::vector<F>& h, std::vector<F>& c, std::vector<F>& acts, std::vector<F>& qv,
                const F* xt, const F* W, const F* U, const F* b, const F* b_h, const F* s, index_t C, index_t H) {
  const index_t GH = rnn_gates(cell) * H;
  std::vector<F> px(GH), ph(GH);
  for (index_t k = 0; k < GH; ++k) {
    double sx = b[k], sh = (cell == RnnCell::gru && b_h) ? b_h[k] : 0.0;
    for (index_t ci = 0; ci < C; ++ci) sx += static_cast<double>(xt[ci]) * W[ci * GH + k];
    for (index_t j = 0; j < H; ++j) sh += static_cast<double>(s ? h[j] * s[j] : h[j]) * U[j * GH + k];
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
                       const F* b_h, const F* h0, const F* c0, const std::uint8_t* mask, const F* rscale, index_t N,
                       index_t T, index_t C, index_t H) {
  check_sizes("rnn_forward_naive", cell, N, T, C, H);
  const index_t GH = rnn_gates(cell) * H;
  for (index_t n = 0; n < N; ++n) {
    std::vector<F> h(H, F(0)), c(H, F(0)), acts(GH), qv(H);
    for (index_t j = 0; j < H; ++j) {
      if (h0) h[j] = h0[n * H + j];
      if (c0) c[j] = c0[n * H + j];
    }
    for (index_t t = 0; t < T; ++t) {
      if (!mask || mask[n * T + t])
        naive_step(cell, h, c, acts, qv, x + (n * T + t) * C, W, U, b, b_h, rscale ? rscale + n * H : nullptr, C, H);
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
                        const std::uint8_t* mask, const F* rscale, const F* dout, const F* dhT, const F* dcT,
                        index_t N, index_t T, index_t C, index_t H) {
  check_sizes("rnn_backward_naive", cell, N, T, C, H);
  const bool lstm = cell == RnnCell::lstm, gru = cell == RnnCell::gru;
  const index_t GH = rnn_gates(cell) * H;
  std::vector<double> aW(C * GH, 0.0), aU(H * GH, 0.0), ab(GH, 0.0), abh(GH, 0.0);
  for (index_t n = 0; n < N; ++n) {
    const F* sr = rscale ? rscale + n * H : nullptr;
    auto live = [&](index_t t) { return !mask || mask[n * T + t] != 0; };
    // Forward again, keeping every state.
    std::vector<std::vector<F>> hs(T + 1, std::vector<F>(H, F(0))), cs(T + 1, std::vector<F>(H, F(0)));
    std::vector<std::vector<F>> acts(T, std::vector<F>(GH)), qs(T, std::vector<F>(H));
    for (index_t j = 0; j < H; ++j) {
      if (h0) hs[0][j] = h0[n * H + j];
      if (c0) cs[0][j] = c0[n * H + j];
    }
    for (index_t t = 0; t < T; ++t) {
      std::vector<F> h = hs[t], c = cs[t];
      if (live(t)) naive_step(cell, h, c, acts[t], qs[t], x + (n * T + t) * C, W, U, b, b_h, sr, C, H);
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
      if (!live(t)) {  // the state was kept: dh and dc pass through unchanged
        if (dx)
          for (index_t ci = 0; ci < C; ++ci) dx[(n * T + t) * C + ci] = F(0);
        continue;
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
        for (index_t j = 0; j < H; ++j) aU[j * GH + k] += static_cast<double>(sr ? hs[t][j] * sr[j] : hs[t][j]) * dph[k];
      }
      if (dx)
        for (index_t ci = 0; ci < C; ++ci) {
          double s = 0.0;
          for (index_t k = 0; k < GH; ++k) s += static_cast<double>(dpx[k]) * W[ci * GH + k];
          dx[(n * T + t) * C + ci] = static_cast<F>(s);
        }
      for (index_t j = 0; j < H; ++j) {
        double s = 0.0;
        for (index_t k = 0; k < GH; ++k) s += static_cast<double>(dph[k]) * U[j * GH + k];
        if (sr) s *= sr[j];
        dh[j] = static_cast<F>(s + dhp[j]);
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
                               const F*, const F*, const F*, const std::uint8_t*, const F*, index_t, index_t, \
                               index_t, index_t);                                                          \
  template void rnn_backward<F>(RnnCell, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*, const F*, \
                                const F*, const F*, const F*, const F*, const std::uint8_t*, const F*,       \
                                const F*, const F*, const F*, index_t, index_t, index_t, index_t);           \
  template void rnn_forward_naive<F>(RnnCell, F*, F*, F*, const F*, const F*, const F*, const F*, const F*,  \
                                     const F*, const F*, const std::uint8_t*, const F*, index_t, index_t,   \
                                     index_t, index_t);                                                     \
  template void rnn_backward_naive<F>(RnnCell, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*,    \
                                      const F*, const F*, const F*, const F*, const std::uint8_t*, const F*, \
                                      const F*, const F*, const F*, index_t, index_t, index_t, index_t);

PYDL_RNN_INSTANTIATE(float)
PYDL_RNN_INSTANTIATE(double)

}  // namespace pydl
