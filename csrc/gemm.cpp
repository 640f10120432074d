// SGEMM / DGEMM driver: the Goto/BLIS five loops around a register micro-kernel.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C      (row-major; beta == 0 ignores C)
//
//   loop 5  for jc in [0, N) step NC              B~ = op(B)[pc:pc+KC, jc:jc+NC], shared     (L3)
//   loop 4    for pc in [0, K) step KC            threads pack B~ together into NR-column
//                                                 micro-panels; beta applies on pc == 0 only
//   loop 3      for ic in a row block (<= MC)     A~ = op(A)[ic:ic+MC, pc:pc+KC], this thread's
//                                                 own, packed into MR-row micro-panels       (L2)
//   loop 2        for jr in a column chunk step NR
//   loop 1          for ir in [0, MC) step MR
//                     micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= A~ micro-panel * B~ micro-panel
//                     (MR x NR accumulators in registers, KC rank-1 updates)
//
// Packing is a means, not a rule. It makes the kernel's operands contiguous, which matters when
// a row of A or B in memory is long (rows of a long stride fall into the same cache sets and
// pages). When the stride is short, or the product is small, or a panel would be used only once,
// the kernel reads op(A) and the rows of op(B) in place through strides instead; only a partial
// edge panel is then copied (zero-padded) into a small per-thread buffer. op(B) with trans_b is
// always packed, since the kernel loads rows of op(B) as vectors.
//
// Threads take (row block, column chunk) pieces of loops 3 and 2 from a shared counter; all of them
// share one packed B~. Panels are zero-padded to MR / NR, so the kernel never reads outside A or B;
// for an edge tile it is told how many rows and columns of C are valid and writes only those.
//
// Block sizes and kernels per ISA: gemm_kernels.h. Buffers live in a per-calling-thread workspace
// (thread_local, grown on demand, reused), so concurrent calls from several Python threads never
// share one and repeated calls don't fault in fresh pages.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cpu_features.h"
#include "gemm_kernels.h"
#include "threading.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pydl {
namespace {

using gemm_detail::GemmBlocks;
using gemm_detail::Kernel;

// Products up to this many multiply-adds (M*N*K) never pack A or B (except edges and trans_b).
constexpr double kSmallWork = 100.0 * 100.0 * 100.0;
// A second thread only when each gets at least this much work (an OpenMP region costs ~1-2 us).
constexpr double kMinWorkPerThread = 100.0 * 100.0 * 100.0;
// Rows of A or B longer than this (bytes) are packed: read in place, a block of rows that far apart
// maps onto few sets of the 16-way L2 (64 KiB per way) and pages of the TLB.
constexpr index_t kMaxInPlaceStrideBytes = 2048;
// ... and only when the other dimension reuses the packed copy this many times: kPackMinReuse
// columns of C for A~ (measured: 256x3136x128 runs 16% faster with A read in place), and
// kPackMinReuseB rows of C for B~ (measured: 64x512x2048 runs 1.7x faster with B packed, each
// thread packing and multiplying its own columns; read in place, B's 8 KiB rows defeat the
// prefetchers).
constexpr index_t kPackMinReuse = 192;
// Transposed A (op(A) = A^T, the weight gradients dW = X^T dY) is read by the kernel as MR
// consecutive floats of each of its K rows: every step of the kernel touches a new line, so in
// place it stops paying at a shorter stride. Packed from rows 1 KiB apart (N >= kPackMinReuse),
// Intel Xeon, 2 threads, both settings interleaved in one process, AVX-512 / AVX2 GFLOP/s:
// 256x1600x1024 (an LSTM's dU) 277 -> 307 / 180 -> 191, 512x1024x512 247 -> 333 / 164 -> 204,
// 384x2048x1024 297 -> 335 / 178 -> 203, 320x1600x1280 274 -> 303 / 182 -> 201. Rows 512 bytes
// apart were faster in place (128x512x512 291 vs 268 / 193 vs 177), 640-768 bytes even.
constexpr index_t kMinPackedStrideBytesTa = 1024;
// Rows of A a multiple of this many bytes apart all fall into one set of a 64-set L1 (4 KiB a way).
// When the MR rows a micro-kernel reads in place are more than the set holds (l1d_ways(): 8 on
// Zen 3 and Zen 4, 12 on Intel cores since Sunny Cove and on Zen 5), they evict one another, and
// such an A is packed whatever N is. 2 threads, both settings interleaved in one process:
//   AVX-512 (MR 12), Zen 4 (8 ways): packed, 1600x1024x128 (an LSTM's dX = dG W^T) 120-128 ->
//     150-154 GFLOP/s, 4096x2048x128 131-139 -> 155-164.
//   AVX-512, Intel Xeon (12 ways): in place, 1600x1024x128 273-284 packed -> 325-336.
//   AVX2 (MR 6), Zen 4: 6-11% slower packed.
// The B micro-panel's lines (packed, consecutive) land in this set only now and then: counting
// them as well (12 + 2 > 12) packed on the Intel core too, where that was the slower choice.
constexpr index_t kAliasStrideBytes = 4096;
// Largest A (bytes, read in place) that every thread reads whole when C is cut by columns only
// (see one_row_block in gemm_blocked).
constexpr double kSharedABytes = 5.0 * (1 << 20);
constexpr index_t kPackMinReuseB = 64;

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

struct Plan {
  bool pack_a, pack_b;
  int threads;
};

// ---------------------------------------------------------------------------------------------
// Packing. A~ micro-panel: a~[p * MR + i] = op(A)(i0 + i, p0 + p), rows past M are zero.
//          B~ micro-panel: b~[p * NR + j] = op(B)(p0 + p, j0 + j), columns past N are zero.

// n contiguous elements, n a compile-time count: a fixed-size memcpy, which the compiler emits as
// whole-vector moves. Element by element, the packing loops below came out as scalar loads and
// stores (the compiler must assume dst and src may overlap), with their row pointers spilled:
// packing B~ on 64x512x2048 (Zen 3, 1 thread, each group into the per-thread slot below) took
// 0.8 ms that way and 0.35 ms as vector moves.
template <int n, typename T>
inline void copy_n(T* dst, const T* src) {
  std::memcpy(dst, src, n * sizeof(T));
}

template <typename T, int MR>
void pack_a_panel(T* dst, const Problem<T>& pr, index_t i0, index_t p0, index_t kc) {
  const index_t mr = std::min<index_t>(MR, pr.M - i0);
  if (pr.ta) {  // op(A) columns are contiguous rows of A: copy MR at a time
    for (index_t p = 0; p < kc; ++p) {
      const T* src = pr.a_at(i0, p0 + p);
      T* d = dst + p * MR;
      if (mr == MR) {
        copy_n<MR>(d, src);
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
        copy_n<NR>(d, src);
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
// dst + (q - q_begin) * kc * NR. Untransposed B is copied row by row, so each row of B is read
// contiguously.
template <typename T, int NR>
void pack_b_panels(T* dst, const Problem<T>& pr, index_t p0, index_t kc, index_t j0, index_t q_begin,
                   index_t q_end) {
  if (pr.tb) {
    for (index_t q = q_begin; q < q_end; ++q)
      pack_b_panel<T, NR>(dst + (q - q_begin) * kc * NR, pr, p0, kc, j0 + q * NR);
    return;
  }
  index_t q_full = q_end;  // panels with NR valid columns
  if (q_end > q_begin && j0 + q_end * NR > pr.N) q_full = q_end - 1;
  // kUnroll panels per row step with a compile-time count: each unrolled load then steps by
  // exactly ldb from row to row, a stride the hardware prefetchers follow. With a run-time count
  // the same copy ran 2.4x slower (4 MB of B with rows 8 KiB apart, Zen 3: 0.65 -> 0.27 ms);
  // 64x512x2048 on 1 thread, paired runs: 1.07-1.12x.
  constexpr index_t kUnroll = 8;
  index_t q = q_begin;
  for (; q + kUnroll <= q_full; q += kUnroll)
    for (index_t p = 0; p < kc; ++p) {
      const T* src = pr.b_at(p0 + p, j0 + q * NR);
      T* d = dst + (q - q_begin) * kc * NR + p * NR;
#pragma GCC unroll 8
      for (index_t u = 0; u < kUnroll; ++u) copy_n<NR>(d + u * kc * NR, src + u * NR);
    }
  for (index_t p = 0; p < kc && q < q_full; ++p) {  // the last q_full - q < kUnroll panels
    const T* src = pr.b_at(p0 + p, j0);
    for (index_t r = q; r < q_full; ++r) copy_n<NR>(dst + (r - q_begin) * kc * NR + p * NR, src + r * NR);
  }
  if (q_full < q_end) pack_b_panel<T, NR>(dst + (q_full - q_begin) * kc * NR, pr, p0, kc, j0 + q_full * NR);
}

// Rows of memory that a later packing step will copy, fetched into L2 a few rows per kernel call
// while the kernels work on data already packed: the copy then reads L2 instead of waiting on L3 or
// memory. Row r is `bytes` long at first + r * ld. For untransposed B the rows are the kc rows of
// B~'s next column group; for transposed B, its columns (rows of B, kc elements each).
template <typename T>
struct RowPrefetch {
  const T* first = nullptr;
  index_t ld = 0, rows = 0, bytes = 0;
  index_t next = 0, per_step = 0;  // the next row to fetch; rows per step

  void step() {
    const index_t end = std::min(rows, next + per_step);
    for (; next < end; ++next) {
      const std::uintptr_t row = reinterpret_cast<std::uintptr_t>(first + next * ld);
      // Every cache line the row touches, from the one holding its first byte.
      for (std::uintptr_t line = row & ~std::uintptr_t(63); line < row + bytes; line += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);  // to L2
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Threads and scratch memory

// Split `count` items among `parts` as evenly as possible: part `k` gets [begin, end).
void split_range(index_t count, int parts, int k, index_t& begin, index_t& end) {
  begin = count * k / parts;
  end = count * (k + 1) / parts;
}

// How evenly `items` equal items share out among `parts`: items / (parts * the largest share).
double split_efficiency(index_t items, int parts) {
  return static_cast<double>(items) / static_cast<double>(ceil_div(items, parts) * parts);
}

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

// ---------------------------------------------------------------------------------------------
// The five loops

// The tiles of C, cut for the threads: row blocks of whole MR panels (at most MC rows), each cut
// into column chunks of whole NR panels. Threads take (row block, column chunk) items from a shared
// counter. There are as many items as threads (more only where M needs more MC blocks): finer
// cuts (4 items per thread, for balance) measured up to 15% slower on 2 threads (256x3136x128: 220
// -> 260 GFLOP/s with one item each), since every extra item re-streams its B panels from L2.
// Pieces come from row blocks first, since then each thread packs only its own rows of A,
// except when B is read in place with rows far apart: every row block re-reads its columns of B,
// which then come from beyond L2 row by row (each row in another page, so no prefetch), and
// column chunks are the cheaper cut; likewise when C has few rows and B is packed, where a single
// row block lets each thread multiply exactly the B~ panels it packed (see gemm_blocked).
struct Tiling {
  index_t m_panels, row_blocks, max_block_rows;
  int target_items;
  Tiling(index_t M, int MR, index_t MC, int threads, bool cut_columns_first) {
    m_panels = ceil_div(M, MR);
    target_items = threads;
    const index_t min_blocks = ceil_div(M, MC);
    row_blocks = cut_columns_first ? std::min(m_panels, min_blocks)
                                   : std::min(m_panels, round_up(std::max<index_t>(min_blocks, target_items), threads));
    max_block_rows = ceil_div(m_panels, row_blocks) * MR;
  }
  // Column chunks for a block of n_panels NR panels.
  index_t col_chunks(index_t n_panels) const {
    return row_blocks >= target_items ? 1 : std::min(n_panels, ceil_div(target_items, row_blocks));
  }
};

template <typename T, int MR, int NR>
void gemm_blocked(const Problem<T>& pr, const GemmBlocks& blk, Kernel<T> kernel, const Plan& plan) {
  const index_t M = pr.M, N = pr.N, K = pr.K;
  const index_t nc_max = plan.pack_b ? even_block(N, blk.NC, NR) : round_up(N, NR);
  const int nt = plan.threads;
  const bool b_far_rows = !plan.pack_b && pr.ldb * static_cast<index_t>(sizeof(T)) > kMaxInPlaceStrideBytes;
  // Few rows of C with B packed: cut columns only (see Tiling), each thread on the panels it packed.
  // With one row block's worth of rows, A in place and no more rows than columns, columns are also
  // cut when they share out more evenly: 64 rows are 11 panels of 6 (6 + 5 on 2 threads, so one
  // thread idles 1/12 of the time), 128 columns 8 panels of 16 (4 + 4); each thread then reads
  // all of A (the smaller operand) and its half of B. 64x784x128 on 2 threads (Zen 3, paired in one
  // process): 58 -> 63 GFLOP/s.
  const bool balance_columns = nt > 1 && !plan.pack_a && M <= blk.MC && M <= N &&
                               split_efficiency(ceil_div(N, NR), nt) > split_efficiency(ceil_div(M, MR), nt);
  // B packed by the row rule (`pack_b_rows`, AVX2) with a small A read in place: one row block,
  // the columns cut, each thread packing and multiplying its own B~ panels (the own-columns path
  // below) while reading all of A, which stays in L3. AVX2 on Zen 4, 2 threads, both cuts
  // interleaved in one process, either order: 256x3136x128 143-161 -> 152-173 GFLOP/s,
  // 384x3136x64 127-165 -> 151-176, 256x1024x128 105-137 -> 140-150; with A beyond ~5 MiB the
  // doubled reads of A cost more (1600x1024x128 -3%..+5%, 4096x2048x128 -15..-18%).
  const bool one_row_block = nt > 1 && plan.pack_b && !plan.pack_a && !pr.tb && blk.pack_b_rows > 0 &&
                             M >= blk.pack_b_rows &&
                             static_cast<double>(M) * static_cast<double>(K) * sizeof(T) <= kSharedABytes;
  const Tiling tiling(M, MR, one_row_block ? round_up(M, MR) : blk.MC, nt,
                      one_row_block || b_far_rows || balance_columns ||
                          (plan.pack_b && !plan.pack_a && M < kPackMinReuse));

  // One row block with B packed (few rows of C): each thread packs the columns of B~ it then
  // multiplies itself, a group of panels at a time (about kGroupBytes: 8 panels at NR 16, KC 512):
  // each group is packed and at once multiplied by every row panel, so B~ is used while still in
  // L2 (a thread's whole share can exceed its L2 and come back from L3), and no thread waits for
  // another. 64x512x2048 on Zen 3 (AVX2), best of 25: 1 thread 37-52 -> 53-64 GFLOP/s; groups of 4
  // were as good on 1 thread but 12% slower on 2. The byte budget keeps a group plus the next one
  // (being prefetched) and A within a 512 KiB - 1 MiB L2 for wider tiles too (AVX-512, NR 32 and
  // KC 1024: 2 panels); not measured on AVX-512.
  const bool own_columns = plan.pack_b && tiling.row_blocks == 1;
  // There the B~ micro-panel is reused by every row panel of the group: with A read in place
  // (a stream of its own from L2 or L3), a panel that fits L1 (own_kc) spares L2 a second stream.
  const index_t kc_limit = own_columns && !plan.pack_a && blk.own_kc > 0 ? std::min(blk.KC, blk.own_kc) : blk.KC;
  const index_t kc_max = even_block(K, kc_limit, 1);
  index_t kGroupBytes = index_t(256) << 10;
#ifdef PYDL_GEMM_TUNE
  if (const char* v = std::getenv("PYDL_GEMM_GROUP_KIB")) kGroupBytes = index_t(std::atol(v)) << 10;
#endif
  const index_t kGroup =
      std::max<index_t>(1, kGroupBytes / (kc_max * NR * static_cast<index_t>(sizeof(T))));

  // Scratch, allocated here: an allocation failure must not throw inside the parallel region.
  //   B~, shared: kc x nc, twice when threaded: threads may pack B~ number t + 1 while others
  //           still compute on number t, so one barrier per K block suffices (when all have packed
  //           their share of t + 1, all have finished computing with t - 1, the buffer t + 1 reuses)
  //       or, with own columns, one kc x kGroup * NR group per thread, the same memory every
  //           time, so it stays in that thread's L2 (packing each group into its own place in a
  //           kc x nc buffer wrote 4 MB of fresh lines per call on 64x512x2048: with scalar
  //           copies, packing took 1.4 ms that way and 0.8 ms into the slot)
  //   per thread: A~ (one row block x kc; MR x kc for the edge panel when A is read in place) and
  //           one zero-padded edge panel of B (kc x NR) for when B is read in place.
  const std::size_t line = kAlign / sizeof(T);
  const int b_count = !plan.pack_b ? 0 : own_columns ? nt : nt > 1 ? 2 : 1;
  const std::size_t b_elems =
      static_cast<std::size_t>(round_up(kc_max * (own_columns ? kGroup * NR : nc_max), line));
  const std::size_t a_elems =
      static_cast<std::size_t>(round_up(kc_max * (plan.pack_a ? tiling.max_block_rows : MR), line));
  const std::size_t e_elems = static_cast<std::size_t>(round_up(kc_max * NR, line));
  const std::size_t per_thread = a_elems + e_elems;
  T* const work = reinterpret_cast<T*>(
      thread_workspace().get((b_elems * b_count + per_thread * static_cast<std::size_t>(nt)) * sizeof(T)));
  // One work counter per (jc, pc) block of the loops that share B~ (one in all when B isn't packed).
  const index_t n_counters = plan.pack_b ? ceil_div(N, nc_max) * ceil_div(K, kc_max) : 1;
  std::unique_ptr<std::atomic<index_t>[]> counters(new std::atomic<index_t>[n_counters]);
  for (index_t i = 0; i < n_counters; ++i) counters[i].store(0, std::memory_order_relaxed);

  // What each thread of the team runs (the whole call when single-threaded: no OpenMP region at
  // all then, so a serial call costs nothing extra and never wakes the thread pool).
  auto body = [&](const int team, const int rank) {
    T* const a_buf = work + b_elems * b_count + per_thread * rank;
    T* const b_edge = a_buf + a_elems;
    index_t packed_a_key = -1;  // which (row block, K block) a_buf holds
    RowPrefetch<T> prefetch;    // rows of B the next own-columns group packs (none otherwise)

    // Loops 3 (one row block), 2 and 1 for columns [jc, jc + nc) and K range [pc, pc + kc).
    // Row block rb times the NR panels [qb, qe) of the block at column jc; packed, panel q is at
    // b_pack + (q - q_base) * kc * NR.
    auto panels_tile = [&](index_t rb, index_t qb, index_t qe, index_t jc, index_t pc, index_t kc, index_t k_block,
                           const T* b_pack, index_t q_base) {
      index_t ib, ie;
      split_range(tiling.m_panels, tiling.row_blocks, static_cast<int>(rb), ib, ie);
      const index_t ic = ib * MR, m_panels = ie - ib;
      const T beta = pc == 0 ? pr.beta : T(1);  // later K blocks accumulate

      if (plan.pack_a) {                                                      // loop 3: A~
        const index_t key = rb * ceil_div(K, kc_max) + k_block;
        if (key != packed_a_key) {
          for (index_t ip = 0; ip < m_panels; ++ip)
            pack_a_panel<T, MR>(a_buf + ip * kc * MR, pr, ic + ip * MR, pc, kc);
          packed_a_key = key;
        }
      } else if (ic + m_panels * MR > M) {  // A in place: only the last, partial panel is copied
        pack_a_panel<T, MR>(a_buf, pr, ic + (m_panels - 1) * MR, pc, kc);
      }

      for (index_t q = qb; q < qe; ++q) {                                     // loop 2
        const index_t j0 = jc + q * NR;
        const int nr = static_cast<int>(std::min<index_t>(NR, N - j0));
        const T* b = nullptr;
        index_t rsb = NR;
        if (plan.pack_b) {
          b = b_pack + (q - q_base) * kc * NR;
        } else {
          if (nr == NR) {
            b = pr.b_at(pc, j0);
            rsb = pr.ldb;
          } else {
            pack_b_panel<T, NR>(b_edge, pr, pc, kc, j0);
            b = b_edge;
          }
        }
        for (index_t ip = 0; ip < m_panels; ++ip) {                           // loop 1
          const index_t i0 = ic + ip * MR;
          const int mr = static_cast<int>(std::min<index_t>(MR, M - i0));
          const T* a = a_buf + ip * kc * MR;
          index_t rsa = 1, csa = MR;
          if (!plan.pack_a) {
            if (mr == MR) {
              a = pr.a_at(i0, pc);
              rsa = pr.a_row_stride();
              csa = pr.a_col_stride();
            } else {
              a = a_buf;
            }
          }
          prefetch.step();
          kernel(kc, a, rsa, csa, b, rsb, pr.C + i0 * pr.ldc + j0, pr.ldc, pr.alpha, beta, mr, nr);
        }
      }
    };
    auto macro_tile = [&](index_t item, index_t n_chunks, index_t jc, index_t nc, index_t pc, index_t kc,
                          index_t k_block, const T* b_pack) {
      const index_t rb = item / n_chunks, chunk = item % n_chunks;
      index_t qb, qe;
      split_range(ceil_div(nc, NR), static_cast<int>(n_chunks), static_cast<int>(chunk), qb, qe);
      panels_tile(rb, qb, qe, jc, pc, kc, k_block, b_pack, 0);
    };
    // While group [q, qn) of the K block at pc is multiplied, fetch what the next group packs:
    // [qn, qn + kGroup) at pc, else this thread's first group [pb, ...) of the next K block.
    auto prefetch_next_group = [&](index_t jc, index_t pc, index_t kc, index_t q, index_t qn, index_t pb,
                                   index_t pe) {
      index_t nq = qn, npc = pc, nkc = kc;
      if (nq >= pe) {
        nq = pb;
        npc = pc + kc;
        nkc = std::min(kc_max, K - npc);
      }
      prefetch = RowPrefetch<T>{};
      if (nq >= pe || npc >= K) return;  // the last group of this column block
      const index_t cols = std::min(N - (jc + nq * NR), (std::min(pe, nq + kGroup) - nq) * NR);
      prefetch.first = pr.b_at(npc, jc + nq * NR);
      prefetch.ld = pr.ldb;
      prefetch.rows = pr.tb ? cols : nkc;
      prefetch.bytes = static_cast<index_t>(sizeof(T)) * (pr.tb ? nkc : cols);
      prefetch.per_step = ceil_div(prefetch.rows, (qn - q) * tiling.m_panels);
    };

    if (plan.pack_b) {
      index_t block = 0;  // (jc, pc) blocks so far: picks the counter and the B~ buffer
      for (index_t jc = 0; jc < N; jc += nc_max) {                            // loop 5
        const index_t nc = std::min(nc_max, N - jc);
        const index_t n_panels = ceil_div(nc, NR), n_chunks = tiling.col_chunks(n_panels);
        const index_t n_items = tiling.row_blocks * n_chunks;
        for (index_t pc = 0, k_block = 0; pc < K; pc += kc_max, ++k_block, ++block) {  // loop 4
          const index_t kc = std::min(kc_max, K - pc);
          index_t pb, pe;  // this thread's share of packing B~
          split_range(n_panels, team, rank, pb, pe);
          if (own_columns) {  // this thread's panels [pb, pe), kGroup at a time, in its own slot
            T* const slot = work + b_elems * rank;
            for (index_t q = pb; q < pe; q += kGroup) {
              const index_t qn = std::min(pe, q + kGroup);
              pack_b_panels<T, NR>(slot, pr, pc, kc, jc, q, qn);
              prefetch_next_group(jc, pc, kc, q, qn, pb, pe);
              panels_tile(0, q, qn, jc, pc, kc, k_block, slot, q);
            }
            prefetch = RowPrefetch<T>{};
            continue;
          }
          T* const b_pack = work + (b_count == 2 && (block & 1) ? b_elems : 0);
          pack_b_panels<T, NR>(b_pack + pb * kc * NR, pr, pc, kc, jc, pb, pe);
          team_barrier(team);
          for (index_t t; (t = counters[block].fetch_add(1, std::memory_order_relaxed)) < n_items;)
            macro_tile(t, n_chunks, jc, nc, pc, kc, k_block, b_pack);
          if (b_count == 1) team_barrier(team);
        }
      }
    } else {
      // B read in place: no shared buffer, so each item runs its whole K loop (loop 4) itself and
      // no thread ever waits for another.
      const index_t n_chunks = tiling.col_chunks(ceil_div(N, NR));
      const index_t n_items = tiling.row_blocks * n_chunks;
      for (index_t t; (t = counters[0].fetch_add(1, std::memory_order_relaxed)) < n_items;)
        for (index_t pc = 0, k_block = 0; pc < K; pc += kc_max, ++k_block)
          macro_tile(t, n_chunks, 0, N, pc, std::min(kc_max, K - pc), k_block, nullptr);
    }
  };

  if (nt == 1) {
    body(1, 0);
  } else {
    parallel_team(nt, [&](int tid, int team) { body(team, tid); });
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
void run(const Problem<T>& pr, GemmBlocks blk, Kernel<T> kernel) {
  static_assert(MR > 0 && NR > 0, "tile sizes");
  if (pr.M <= 0 || pr.N <= 0) return;
  if (pr.K <= 0 || pr.alpha == T(0)) {
    scale_c(pr);
    return;
  }
  const double work = static_cast<double>(pr.M) * static_cast<double>(pr.N) * static_cast<double>(pr.K);
  const bool small = work <= kSmallWork;
  const index_t max_stride = kMaxInPlaceStrideBytes / static_cast<index_t>(sizeof(T));
  Plan plan;
  // Packing costs about one pass over the operand; it pays when the packed copy is reused often
  // (A~ by every NR panel of B, B~ by every MR panel of A) and rows are long.
  const bool a_far_rows = pr.ta ? pr.lda * static_cast<index_t>(sizeof(T)) >= kMinPackedStrideBytesTa
                                : pr.lda > max_stride;
  plan.pack_a = !small && ((pr.N >= kPackMinReuse && a_far_rows) ||
                            (!pr.ta && pr.M > MR && (pr.lda * static_cast<index_t>(sizeof(T))) % kAliasStrideBytes == 0 &&
                             MR > l1d_ways()));
  // B's micro-panel reads 64 bytes from each of KC rows: rows exactly 2 KiB apart (512 floats) map
  // onto 1/32 of the cache sets, and the panel no longer stays in L1/L2 (512^3 on Zen 3: 48 -> 70
  // GFLOP/s with B packed), so that stride is packed too.
  plan.pack_b = pr.tb || (!small && pr.M >= kPackMinReuseB && pr.ldb >= max_stride) ||
                (!small && blk.pack_b_rows > 0 && pr.M >= blk.pack_b_rows);
  plan.threads = threads_for(work, kMinWorkPerThread);
#ifdef PYDL_GEMM_TUNE  // experiments in a standalone build: PYDL_GEMM_KC=384 ./bench ...
  if (const char* v = std::getenv("PYDL_GEMM_KC")) blk.KC = std::atol(v);
  if (const char* v = std::getenv("PYDL_GEMM_OWN_KC")) blk.own_kc = std::atol(v);
  if (const char* v = std::getenv("PYDL_GEMM_MC")) blk.MC = round_up(std::atol(v), MR);
  if (const char* v = std::getenv("PYDL_GEMM_NC")) blk.NC = round_up(std::atol(v), NR);
  if (const char* v = std::getenv("PYDL_GEMM_PACK_A")) plan.pack_a = std::atoi(v) != 0;
  if (const char* v = std::getenv("PYDL_GEMM_PACK_B")) plan.pack_b = pr.tb || std::atoi(v) != 0;
#endif
  gemm_blocked<T, MR, NR>(pr, blk, kernel, plan);
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha, const float* A,
           index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  using namespace gemm_detail;
  const Problem<float> pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  switch (selected_isa()) {
#if defined(PYDL_X86)
    case Isa::avx512:
      run<float, kSgemmAvx512.MR, kSgemmAvx512.NR>(pr, kSgemmAvx512, sgemm_kernel_avx512);
      return;
    case Isa::avx2:
      run<float, kSgemmAvx2.MR, kSgemmAvx2.NR>(pr, kSgemmAvx2, sgemm_kernel_avx2);
      return;
#endif
    default:
      run<float, kSgemmGeneric.MR, kSgemmGeneric.NR>(pr, kSgemmGeneric, sgemm_kernel_generic);
  }
}

void dgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, double alpha, const double* A,
           index_t lda, const double* B, index_t ldb, double beta, double* C, index_t ldc) {
  using namespace gemm_detail;
  const Problem<double> pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  run<double, kDgemmGeneric.MR, kDgemmGeneric.NR>(pr, kDgemmGeneric, dgemm_kernel_generic);
}

}  // namespace pydl
