// SGEMM / DGEMM drivers: the Goto/BLIS five loops around a register micro-kernel.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C      (row-major; beta == 0 ignores C)
//
// Packed path (everything but small or skinny products):
//
//   loop 5  for jc in [0, N) step NC            B~ = op(B)[pc:pc+KC, jc:jc+NC] lives in L3
//   loop 4    for pc in [0, K) step KC          threads pack B~ together (NR-column micro-panels)
//   loop 3      for ic in my rows step MC       each thread packs its own A~ (MR-row micro-panels), L2
//   loop 2        for jr in my columns step NR  one KC x NR micro-panel of B~ stays in L1
//   loop 1          for ir in [0, MC) step MR   stream MR x KC micro-panels of A~ from L2
//                     micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= A~ micro-panel * B~ micro-panel
//
// Threads split the rows (loop 3) and, when M is short, the columns (loop 2); all of them share the
// one packed B~. Panels are zero-padded to MR / NR, so the kernel never reads outside A or B; edge
// tiles of C are computed into a small local tile and only the valid part is written.
//
// Direct path (small or skinny products, where packing costs more than it saves): the same
// micro-kernel reads op(A) in place through row/column strides and op(B) rows in place; only a
// partial edge panel (or a transposed B, KC rows at a time) goes through a small local buffer.
//
// Block sizes and kernels per ISA: gemm_kernels.h. The packed path's buffers are kept per calling
// thread (thread_local) and reused, so concurrent calls from several Python threads never share one.
#include "gemm.h"

#include <algorithm>
#include <cstdlib>

#include "cpu_features.h"
#include "gemm_kernels.h"
#include "threading.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pydl {
namespace {

using gemm_detail::DirectKernel;
using gemm_detail::GemmBlocks;
using gemm_detail::PackedKernel;

// Work thresholds in multiply-adds (M*N*K).
constexpr double kDirectMaxWork = 96.0 * 96.0 * 96.0;  // below this, never pack
constexpr double kPackedMinWorkPerThread = 64.0 * 64.0 * 64.0;
constexpr double kDirectMinWorkPerThread = 48.0 * 48.0 * 48.0;

index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// Largest block <= `max_block` (a multiple of `unit`) that cuts `n` into equal blocks, so no
// thin remainder block is left at the end: n = 1031, max 256 -> 5 blocks of 207 (unit 1).
index_t even_block(index_t n, index_t max_block, index_t unit) {
  const index_t blocks = ceil_div(n, max_block);
  return std::min(max_block, round_up(ceil_div(n, blocks), unit));
}

template <typename T>
struct Problem {
  bool ta, tb;
  index_t M, N, K;
  T alpha;
  const T* A;
  index_t lda;
  const T* B;
  index_t ldb;
  T beta;
  T* C;
  index_t ldc;

  // op(A)(i, p) and op(B)(p, j) as address arithmetic.
  const T* a_at(index_t i, index_t p) const { return ta ? A + p * lda + i : A + i * lda + p; }
  const T* b_at(index_t p, index_t j) const { return tb ? B + j * ldb + p : B + p * ldb + j; }
  index_t a_row_stride() const { return ta ? 1 : lda; }  // step of i in op(A)(i, p)
  index_t a_col_stride() const { return ta ? lda : 1; }  // step of p
};

// ---------------------------------------------------------------------------------------------
// Packing. A~ micro-panel: a~[p * MR + i] = op(A)(i0 + i, p0 + p), rows past M are zero.
//          B~ micro-panel: b~[p * NR + j] = op(B)(p0 + p, j0 + j), columns past N are zero.

template <typename T, int MR>
void pack_a_panel(T* dst, const Problem<T>& pr, index_t i0, index_t p0, index_t kc) {
  const index_t mr = std::min<index_t>(MR, pr.M - i0);
  if (pr.ta) {  // op(A) columns are contiguous rows of A: copy MR at a time
    for (index_t p = 0; p < kc; ++p) {
      const T* src = pr.a_at(i0, p0 + p);
      T* d = dst + p * MR;
      if (mr == MR) {
        for (int i = 0; i < MR; ++i) d[i] = src[i];
      } else {
        for (index_t i = 0; i < mr; ++i) d[i] = src[i];
        for (index_t i = mr; i < MR; ++i) d[i] = T(0);
      }
    }
  } else {  // op(A) rows are rows of A: transpose MR rows, one cache line of each row at a time
    constexpr index_t kLine = 64 / sizeof(T);
    for (index_t pb = 0; pb < kc; pb += kLine) {
      const index_t pe = std::min(kc, pb + kLine);
      for (index_t i = 0; i < mr; ++i) {
        const T* src = pr.a_at(i0 + i, p0);
        for (index_t p = pb; p < pe; ++p) dst[p * MR + i] = src[p];
      }
      for (index_t i = mr; i < MR; ++i)
        for (index_t p = pb; p < pe; ++p) dst[p * MR + i] = T(0);
    }
  }
}

template <typename T, int NR>
void pack_b_panel(T* dst, const Problem<T>& pr, index_t p0, index_t kc, index_t j0) {
  const index_t nr = std::min<index_t>(NR, pr.N - j0);
  if (!pr.tb) {  // op(B) rows are rows of B: copy NR at a time
    for (index_t p = 0; p < kc; ++p) {
      const T* src = pr.b_at(p0 + p, j0);
      T* d = dst + p * NR;
      if (nr == NR) {
        for (int j = 0; j < NR; ++j) d[j] = src[j];
      } else {
        for (index_t j = 0; j < nr; ++j) d[j] = src[j];
        for (index_t j = nr; j < NR; ++j) d[j] = T(0);
      }
    }
  } else {  // op(B) columns are rows of B: transpose NR rows, one cache line of each at a time
    constexpr index_t kLine = 64 / sizeof(T);
    for (index_t pb = 0; pb < kc; pb += kLine) {
      const index_t pe = std::min(kc, pb + kLine);
      for (index_t j = 0; j < nr; ++j) {
        const T* src = pr.b_at(p0, j0 + j);
        for (index_t p = pb; p < pe; ++p) dst[p * NR + j] = src[p];
      }
      for (index_t j = nr; j < NR; ++j)
        for (index_t p = pb; p < pe; ++p) dst[p * NR + j] = T(0);
    }
  }
}

// Micro-panels q in [q_begin, q_end) of the B~ block starting at column j0; panel q at
// dst + q * kc * NR. Untransposed B is copied row by row, so each row of B is read contiguously.
template <typename T, int NR>
void pack_b_panels(T* dst, const Problem<T>& pr, index_t p0, index_t kc, index_t j0, index_t q_begin,
                   index_t q_end) {
  if (pr.tb) {
    for (index_t q = q_begin; q < q_end; ++q) pack_b_panel<T, NR>(dst + q * kc * NR, pr, p0, kc, j0 + q * NR);
    return;
  }
  index_t q_full = q_end;  // panels with NR valid columns
  if (q_end > q_begin && j0 + q_end * NR > pr.N) q_full = q_end - 1;
  for (index_t p = 0; p < kc; ++p) {
    const T* src = pr.b_at(p0 + p, j0);
    for (index_t q = q_begin; q < q_full; ++q) {
      T* d = dst + q * kc * NR + p * NR;
      const T* s = src + q * NR;
      for (int j = 0; j < NR; ++j) d[j] = s[j];
    }
  }
  if (q_full < q_end) pack_b_panel<T, NR>(dst + q_full * kc * NR, pr, p0, kc, j0 + q_full * NR);
}

// One MR x NR tile of C at (i0, j0) with mr x nr valid elements. Full tiles go straight to C; edge
// tiles are computed into `tile` (beta = 0, so its old contents don't matter) and then merged.
template <typename T, int MR, int NR, typename Call>
inline void store_tile(const Problem<T>& pr, index_t i0, index_t j0, T beta, Call&& kernel_into) {
  const index_t mr = std::min<index_t>(MR, pr.M - i0), nr = std::min<index_t>(NR, pr.N - j0);
  T* c = pr.C + i0 * pr.ldc + j0;
  if (mr == MR && nr == NR) {
    kernel_into(c, pr.ldc, beta);
    return;
  }
  alignas(64) T tile[MR * NR];
  kernel_into(tile, index_t(NR), T(0));
  for (index_t i = 0; i < mr; ++i)
    for (index_t j = 0; j < nr; ++j) {
      T& cij = c[i * pr.ldc + j];
      cij = beta == T(0) ? tile[i * NR + j] : tile[i * NR + j] + beta * cij;
    }
}

// Split `count` items among `parts` as evenly as possible: part `k` gets [begin, end).
inline void split_range(index_t count, int parts, int k, index_t& begin, index_t& end) {
  begin = count * k / parts;
  end = count * (k + 1) / parts;
}

// How a team of `nt` threads divides the tiles: tm groups of rows x tn groups of columns.
// Rows first (each thread then packs only its own A~); columns when M has too few MR panels.
inline void thread_grid(int nt, index_t m_panels, int& tm, int& tn) {
  tm = 1;
  for (int d = nt; d >= 1; --d)
    if (nt % d == 0 && m_panels >= 2 * d) {
      tm = d;
      break;
    }
  tn = nt / tm;
}

inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}
inline int team_rank() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// ---------------------------------------------------------------------------------------------
// Packed path

// Per-calling-thread scratch, grown on demand and reused (no page faults on repeated calls).
struct Workspace {
  aligned_ptr<unsigned char> buf;
  std::size_t bytes = 0;
  unsigned char* get(std::size_t want) {
    if (want > bytes) {
      buf.reset();
      buf = aligned_alloc_array<unsigned char>(want);
      bytes = want;
    }
    return buf.get();
  }
};

Workspace& thread_workspace() {
  static thread_local Workspace ws;
  return ws;
}

template <typename T, int MR, int NR>
void gemm_packed(const Problem<T>& pr, const GemmBlocks& blk, PackedKernel<T> kernel, int nt) {
  const index_t M = pr.M, N = pr.N, K = pr.K;
  const index_t nc_max = even_block(N, blk.NC, NR);
  const index_t kc_max = even_block(K, blk.KC, 1);
  const index_t mc_cap = blk.MC;

  // One allocation, made here before any parallel region (allocation failure must not throw
  // inside one): two B~ buffers (kc x nc) and one A~ (mc x kc) per thread, each 64-byte aligned.
  // With two B~ buffers, threads may pack the next B~ while others still compute on the current
  // one, so one barrier per K block suffices: when every thread has packed its share of B~ number
  // t, all have also finished computing with B~ number t - 1, the buffer that t + 1 overwrites.
  const bool two_b = nt > 1;
  const std::size_t b_elems = static_cast<std::size_t>(round_up(kc_max * nc_max, kAlign / sizeof(T)));
  const std::size_t a_elems = static_cast<std::size_t>(round_up(kc_max * mc_cap, kAlign / sizeof(T)));
  const std::size_t b_total = b_elems * (two_b ? 2 : 1);
  T* const work = reinterpret_cast<T*>(thread_workspace().get((b_total + a_elems * nt) * sizeof(T)));

#pragma omp parallel num_threads(nt)
  {
    const int team = team_size(), rank = team_rank();
    int tm, tn;
    thread_grid(team, ceil_div(M, MR), tm, tn);
    const int my_m = rank / tn, my_n = rank % tn;
    T* const a_pack = work + b_total + a_elems * rank;
    index_t block_count = 0;  // K blocks done so far: picks the B~ buffer

    // My rows, in whole MR panels, then cut into equal MC blocks.
    index_t r_begin, r_end;
    split_range(ceil_div(M, MR), tm, my_m, r_begin, r_end);
    r_begin *= MR;
    r_end = std::min(M, r_end * MR);
    const index_t mc = r_end > r_begin ? even_block(r_end - r_begin, mc_cap, MR) : 0;

    for (index_t jc = 0; jc < N; jc += nc_max) {                       // loop 5
      const index_t nc = std::min(nc_max, N - jc);
      const index_t n_panels = ceil_div(nc, NR);
      index_t q_begin, q_end;  // my NR panels of this B~ block
      split_range(n_panels, tn, my_n, q_begin, q_end);

      for (index_t pc = 0; pc < K; pc += kc_max) {                     // loop 4
        const index_t kc = std::min(kc_max, K - pc);
        const T beta = pc == 0 ? pr.beta : T(1);  // later K blocks accumulate
        T* const b_pack = work + (two_b && (block_count++ & 1) ? b_elems : 0);

        {  // all threads pack B~ together, each a share of its micro-panels
          index_t pb, pe;
          split_range(n_panels, team, rank, pb, pe);
          pack_b_panels<T, NR>(b_pack, pr, pc, kc, jc, pb, pe);
        }
#pragma omp barrier

        for (index_t ic = r_begin; ic < r_end; ic += mc) {             // loop 3
          const index_t mcur = std::min(mc, r_end - ic);
          const index_t m_panels = ceil_div(mcur, MR);
          for (index_t ip = 0; ip < m_panels; ++ip) pack_a_panel<T, MR>(a_pack + ip * kc * MR, pr, ic + ip * MR, pc, kc);

          for (index_t q = q_begin; q < q_end; ++q) {                  // loop 2
            const T* bq = b_pack + q * kc * NR;
            for (index_t ip = 0; ip < m_panels; ++ip) {                // loop 1
              const T* ap = a_pack + ip * kc * MR;
              store_tile<T, MR, NR>(pr, ic + ip * MR, jc + q * NR, beta, [&](T* c, index_t ldc, T b) {
                kernel(kc, ap, bq, c, ldc, pr.alpha, b);
              });
            }
          }
        }
        if (!two_b) {
#pragma omp barrier
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Direct path: no packing of full panels.

template <typename T, int MR, int NR>
void gemm_direct(const Problem<T>& pr, const GemmBlocks& blk, DirectKernel<T> kernel, int nt) {
  const index_t M = pr.M, N = pr.N, K = pr.K;
  const index_t kc_max = even_block(K, std::min<index_t>(blk.KC, 256), 1);
  const index_t m_panels = ceil_div(M, MR), n_panels = ceil_div(N, NR);

#pragma omp parallel num_threads(nt)
  {
    const int team = team_size(), rank = team_rank();
    int tm, tn;
    thread_grid(team, m_panels, tm, tn);
    index_t ib, ie, jb, je;
    split_range(m_panels, tm, rank / tn, ib, ie);
    split_range(n_panels, tn, rank % tn, jb, je);

    alignas(64) T b_buf[256 * NR];  // a transposed or partial B panel, up to 256 rows
    alignas(64) T a_buf[256 * MR];  // a partial A panel (the last MR rows)

    for (index_t q = jb; q < je; ++q) {
      const index_t j0 = q * NR;
      const bool b_in_place = !pr.tb && j0 + NR <= N;
      for (index_t pc = 0; pc < K; pc += kc_max) {
        const index_t kc = std::min(kc_max, K - pc);
        const T beta = pc == 0 ? pr.beta : T(1);
        const T* b = pr.b_at(pc, j0);
        index_t rsb = pr.ldb;
        if (!b_in_place) {
          pack_b_panel<T, NR>(b_buf, pr, pc, kc, j0);
          b = b_buf;
          rsb = NR;
        }
        for (index_t ip = ib; ip < ie; ++ip) {
          const index_t i0 = ip * MR;
          const T* a = pr.a_at(i0, pc);
          index_t rsa = pr.a_row_stride(), csa = pr.a_col_stride();
          if (i0 + MR > M) {
            pack_a_panel<T, MR>(a_buf, pr, i0, pc, kc);
            a = a_buf;
            rsa = 1;
            csa = MR;
          }
          store_tile<T, MR, NR>(pr, i0, j0, beta, [&](T* c, index_t ldc, T bt) {
            kernel(kc, a, rsa, csa, b, rsb, c, ldc, pr.alpha, bt);
          });
        }
      }
    }
  }
}

// C = beta * C (alpha == 0 or K == 0: A and B are not read).
template <typename T>
void scale_c(const Problem<T>& pr) {
  for (index_t i = 0; i < pr.M; ++i) {
    T* c = pr.C + i * pr.ldc;
    if (pr.beta == T(0)) std::fill(c, c + pr.N, T(0));
    else if (pr.beta != T(1))
      for (index_t j = 0; j < pr.N; ++j) c[j] *= pr.beta;
  }
}

template <typename T, int MR, int NR>
void run(const Problem<T>& pr, GemmBlocks blk, PackedKernel<T> packed, DirectKernel<T> direct) {
#ifdef PYDL_GEMM_TUNE  // block-size experiments in a standalone build: PYDL_GEMM_KC=384 ./bench
  if (const char* v = std::getenv("PYDL_GEMM_KC")) blk.KC = std::atol(v);
  if (const char* v = std::getenv("PYDL_GEMM_MC")) blk.MC = round_up(std::atol(v), MR);
  if (const char* v = std::getenv("PYDL_GEMM_NC")) blk.NC = round_up(std::atol(v), NR);
#endif
  static_assert(MR > 0 && NR > 0, "tile sizes");
  if (pr.M <= 0 || pr.N <= 0) return;
  if (pr.K <= 0 || pr.alpha == T(0)) {
    scale_c(pr);
    return;
  }
  const double work = static_cast<double>(pr.M) * static_cast<double>(pr.N) * static_cast<double>(pr.K);
  const bool skinny = pr.M <= MR || pr.N <= NR;
  if (work <= kDirectMaxWork || skinny) {
    gemm_direct<T, MR, NR>(pr, blk, direct, threads_for(work, kDirectMinWorkPerThread));
  } else {
    gemm_packed<T, MR, NR>(pr, blk, packed, threads_for(work, kPackedMinWorkPerThread));
  }
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha, const float* A,
           index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  using namespace gemm_detail;
  const Problem<float> pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  switch (selected_isa()) {
#if defined(PYDL_X86)
    case Isa::avx512:
      run<float, kSgemmAvx512.MR, kSgemmAvx512.NR>(pr, kSgemmAvx512, sgemm_packed_avx512, sgemm_direct_avx512);
      return;
    case Isa::avx2:
      run<float, kSgemmAvx2.MR, kSgemmAvx2.NR>(pr, kSgemmAvx2, sgemm_packed_avx2, sgemm_direct_avx2);
      return;
#endif
    default:
      run<float, kSgemmGeneric.MR, kSgemmGeneric.NR>(pr, kSgemmGeneric, sgemm_packed_generic,
                                                      sgemm_direct_generic);
  }
}

void dgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, double alpha, const double* A,
           index_t lda, const double* B, index_t ldb, double beta, double* C, index_t ldc) {
  using namespace gemm_detail;
  const Problem<double> pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  run<double, kDgemmGeneric.MR, kDgemmGeneric.NR>(pr, kDgemmGeneric, dgemm_packed_generic, dgemm_direct_generic);
}

}  // namespace pydl
