// CPU runtime for CUDA kernel sources: force-included (g++ -include) before a .cu file so the file
// compiles unchanged as C++17 and its kernels can be launched from the fake cupy package.
//
// Execution model
//   * Blocks of a grid run one after another on the calling thread.
//   * Inside a block every CUDA thread is a fiber: a small stack plus a saved stack pointer. A fiber
//     runs without interruption until it reaches a barrier (__syncthreads, __syncwarp, a shuffle,
//     a vote) or returns; then it switches back to the block scheduler (run_block), which resumes
//     the next runnable fiber. Threads therefore interleave only at barriers, which is all CUDA
//     promises anyway.
//   * A block barrier is released when every thread of the block has arrived; a warp barrier when
//     every lane named in the mask (and present in the block) has arrived. The last thread to
//     arrive releases the others and carries on without switching.
//   * `__shared__` variables are `static`: one block runs at a time, so one copy is enough.
//   * Misuse a GPU would hang on or silently miscompute is reported as a launch error: a thread
//     returning while others wait at __syncthreads, lanes disagreeing on a warp op's mask, a
//     shuffle reading a lane that is not taking part, a deadlock.
// Errors are reported to Python through the launch function's return value and message buffer.
#pragma once

#include <algorithm>
#include <cassert>
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <csetjmp>
#include <csignal>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ---- CUDA keywords -----------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __shared__ static
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __CUDACC__ 1
#define __CUDA_ARCH__ 900

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
using uint3 = dim3;
static dim3 threadIdx, blockIdx, blockDim, gridDim;
static constexpr int warpSize = 32;

// ---- vector types ------------------------------------------------------------------------------
#define EMU_VEC2(N, T, A) struct alignas(A) N { T x, y; }; \
  static inline N make_##N(T x, T y) { return N{x, y}; }
#define EMU_VEC4(N, T, A) struct alignas(A) N { T x, y, z, w; }; \
  static inline N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }
EMU_VEC2(float2, float, 8)
EMU_VEC4(float4, float, 16)
EMU_VEC2(double2, double, 16)
EMU_VEC2(int2, int, 8)
EMU_VEC4(int4, int, 16)
EMU_VEC2(uint2, unsigned int, 8)
EMU_VEC4(uint4, unsigned int, 16)
EMU_VEC2(longlong2, long long, 16)
struct float3 { float x, y, z; };
static inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }

// ---- math and bit intrinsics -------------------------------------------------------------------
template <class A, class B>
static inline typename std::common_type<A, B>::type min(A a, B b) {
  typedef typename std::common_type<A, B>::type C;
  return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B>
static inline typename std::common_type<A, B>::type max(A a, B b) {
  typedef typename std::common_type<A, B>::type C;
  return (C)a < (C)b ? (C)b : (C)a;
}
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
// __expf, __logf, __sinf, __cosf, __powf: glibc's <math.h> declares them (the accurate versions).
static inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }
static inline double __drcp_rn(double a) { return 1.0 / a; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
template <class To, class From>
static inline To emu_bits(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit cast of different sizes");
  To r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}
static inline int __float_as_int(float v) { return emu_bits<int>(v); }
static inline unsigned int __float_as_uint(float v) { return emu_bits<unsigned int>(v); }
static inline float __int_as_float(int v) { return emu_bits<float>(v); }
static inline float __uint_as_float(unsigned int v) { return emu_bits<float>(v); }
static inline long long __double_as_longlong(double v) { return emu_bits<long long>(v); }
static inline double __longlong_as_double(long long v) { return emu_bits<double>(v); }
static inline int __popc(unsigned int v) { return __builtin_popcount(v); }
static inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
static inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned)v); }
static inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll((unsigned long long)v); }
static inline int __ffs(int v) { return __builtin_ffs(v); }
static inline int __ffsll(long long v) { return __builtin_ffsll(v); }
static inline unsigned int __brev(unsigned int v) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
  return r;
}
template <class T>
static inline T __ldg(const T* p) { return *p; }
static inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }
static inline void __threadfence() {}
static inline void __threadfence_block() {}

// ---- atomics (one fiber runs at a time, so plain read-modify-write is atomic) -------------------
template <class T> static inline T emu_atomic_add(T* p, T v) { T old = *p; *p = old + v; return old; }
static inline float atomicAdd(float* p, float v) { return emu_atomic_add(p, v); }
static inline double atomicAdd(double* p, double v) { return emu_atomic_add(p, v); }
static inline int atomicAdd(int* p, int v) { return emu_atomic_add(p, v); }
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return emu_atomic_add(p, v); }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return emu_atomic_add(p, v); }
static inline int atomicSub(int* p, int v) { int old = *p; *p = old - v; return old; }
static inline unsigned int atomicSub(unsigned int* p, unsigned int v) { unsigned int old = *p; *p = old - v; return old; }
#define EMU_ATOMIC_MINMAX(T) \
  static inline T atomicMax(T* p, T v) { T old = *p; if (v > old) *p = v; return old; } \
  static inline T atomicMin(T* p, T v) { T old = *p; if (v < old) *p = v; return old; }
EMU_ATOMIC_MINMAX(int)
EMU_ATOMIC_MINMAX(unsigned int)
EMU_ATOMIC_MINMAX(long long)
EMU_ATOMIC_MINMAX(unsigned long long)
#define EMU_ATOMIC_CAS_EXCH(T) \
  static inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; } \
  static inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
EMU_ATOMIC_CAS_EXCH(int)
EMU_ATOMIC_CAS_EXCH(unsigned int)
EMU_ATOMIC_CAS_EXCH(unsigned long long)
static inline float atomicExch(float* p, float v) { float old = *p; *p = v; return old; }
static inline unsigned int atomicInc(unsigned int* p, unsigned int lim) {
  unsigned int old = *p;
  *p = old >= lim ? 0 : old + 1;
  return old;
}

// ---- fibers ------------------------------------------------------------------------------------
namespace emu {

// Switching stacks. On x86-64 a switch pushes the callee-saved registers, stores the stack pointer,
// loads the other fiber's stack pointer and pops its registers (a dozen instructions, no syscall).
// Elsewhere ucontext does the same job more slowly.
#if defined(__x86_64__)
extern "C" void emu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .type emu_switch_stack, @function
emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_stack, .-emu_switch_stack
)");
#endif

static const size_t kStackBytes = 256 * 1024;  // per fiber; a PROT_NONE page below catches overflow

enum State { kNew, kReady, kWaitBlock, kWaitWarp, kDone };

struct Fiber {
  int state = kNew;
  char* stack = nullptr;  // base of the stack in use while the fiber lives
#if defined(__x86_64__)
  void* sp = nullptr;     // saved stack pointer while switched out
#else
  ucontext_t ctx;
#endif
};

// One warp barrier in progress: what every arrived lane deposited, and the results.
struct Warp {
  unsigned int arrived = 0;  // lanes that reached the current warp op
  unsigned int mask = 0;     // the op's mask (every lane must pass the same one)
  int kind = 0;              // which op (shuffle kind, vote, syncwarp)
  unsigned long long val[32];
  int arg[32];
  int width[32];
  unsigned long long result[32];
};

enum WarpOp { kSyncWarp, kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };
static const char* const kWarpOpNames[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                           "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync"};

struct Block {
  const char* kernel = "";
  int nthreads = 0;
  int exited = 0;        // threads that returned
  int bar_arrived = 0;   // threads waiting at __syncthreads
  int bar_pred = 0;      // running count for __syncthreads_count/and/or
  int bar_result = 0;    // the released count, read by the waiters when they resume
  int current = -1;      // linear id of the running fiber
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<char*> free_stacks;  // stacks of finished fibers, reused by the next new fiber
  std::vector<char*> all_stacks;
  void (*body)(void*) = nullptr;   // runs the kernel with its arguments (one CUDA thread)
  void* body_arg = nullptr;
  std::string error;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched_ctx;
#endif
};

static Block g_block;

// Dynamic shared memory (`extern __shared__ T name[];`, rewritten by the cupy emulator into a
// pointer to this buffer). Each block starts with its `shared_mem` bytes filled with 0xFF (NaN /
// -1: shared memory is uninitialised) and kGuardBytes of a pattern after them, checked after the
// launch so a write past the requested size is reported.
static const size_t kMaxDynShared = 227 * 1024, kGuardBytes = 256;
alignas(256) static char g_dyn_shared[kMaxDynShared + kGuardBytes];
static size_t g_dyn_bytes = 0;
static inline unsigned char guard_byte(size_t i) { return (unsigned char)(0xA5 ^ (i * 37)); }

// Static __shared__ variables: the cupy emulator appends EMU_SHARED_REG(name) to each declaration,
// which records the variable's address the first time the declaration is reached. Each block then
// starts with every recorded variable filled with 0xFF (NaN / -1): shared memory is uninitialised
// on a GPU, and a kernel reading it before writing it computes NaN here.
struct SharedRange {
  void* p;
  size_t n;
};
static std::vector<SharedRange> g_shared_ranges;
struct SharedReg {
  SharedReg(void* p, size_t n) { g_shared_ranges.push_back(SharedRange{p, n}); }
};
#define EMU_CAT2(a, b) a##b
#define EMU_CAT(a, b) EMU_CAT2(a, b)
#define EMU_SHARED_REG(name) \
  static emu::SharedReg EMU_CAT(emu_shared_reg_, __COUNTER__)((void*)&(name), sizeof(name))

// Schedule: the order in which runnable fibers resume and blocks run. Any order is a legal CUDA
// execution, so varying it exposes missing barriers (a thread reading shared memory another thread
// writes in the same phase) and blocks that depend on each other. 0 forward; 1 reverse; 2 alternate:
// passes over a block's threads alternate forward/reverse (starting forward on even launches,
// reverse on odd ones), and every odd launch runs its blocks in reverse order. Python sets it
// (PYDL_CUDA_EMU_SCHEDULE) through emu_set_schedule.
static int g_schedule = 2;
static unsigned long long g_launches = 0;

static void fail(const std::string& msg) {
  if (g_block.error.empty()) g_block.error = msg;
}

static std::string thread_name(int linear) {
  const int bx = (int)blockDim.x, by = (int)blockDim.y;
  char buf[160];
  snprintf(buf, sizeof buf, "thread (%d,%d,%d) of block (%u,%u,%u)", linear % bx, (linear / bx) % by,
           linear / (bx * by), blockIdx.x, blockIdx.y, blockIdx.z);
  return buf;
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
static void yield_to_scheduler() {
  Fiber& f = g_block.fibers[g_block.current];
  asm volatile("" ::: "memory");
#if defined(__x86_64__)
  emu_switch_stack(&f.sp, g_block.sched_sp);
#else
  swapcontext(&f.ctx, &g_block.sched_ctx);
#endif
  asm volatile("" ::: "memory");
}

// A fiber whose launch failed is parked for good: the scheduler never resumes it.
[[noreturn]] static void abort_fiber(const std::string& msg) {
  fail(msg);
  yield_to_scheduler();
  std::abort();
}

static void fiber_main() {
  g_block.body(g_block.body_arg);
  Block& B = g_block;
  B.fibers[B.current].state = kDone;
  B.exited += 1;
  if (B.bar_arrived > 0)
    fail("divergent __syncthreads in " + std::string(B.kernel) + ": " + thread_name(B.current) +
         " returned while " + std::to_string(B.bar_arrived) + " thread(s) wait at __syncthreads");
  const int w = B.current / 32, lane = B.current % 32;
  const Warp& W = B.warps[w];
  if (W.arrived && ((W.mask >> lane) & 1u))
    fail(std::string("divergent ") + kWarpOpNames[W.kind] + " in " + B.kernel + ": " + thread_name(B.current) +
         " returned while lanes of its warp wait for it");
  yield_to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

#if defined(__x86_64__)
extern "C" void emu_fiber_start() { fiber_main(); }
#endif

static char* new_stack() {
  if (!g_block.free_stacks.empty()) {
    char* s = g_block.free_stacks.back();
    g_block.free_stacks.pop_back();
    return s;
  }
  const size_t page = 4096;
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  mprotect(p, page, PROT_NONE);
  char* s = (char*)p + page;
  g_block.all_stacks.push_back(s);
  return s;
}

// Prepare a fiber so that the first switch into it starts fiber_main on its own stack.
static bool start_fiber(Fiber& f) {
  f.stack = new_stack();
  if (!f.stack) return false;
#if defined(__x86_64__)
  // Stack top, 16-byte aligned: [unused return slot][emu_fiber_start][6 zeroed callee-saved regs].
  // The switch pops the six registers and `ret`s into emu_fiber_start with the ABI alignment.
  uintptr_t top = ((uintptr_t)(f.stack + kStackBytes)) & ~(uintptr_t)15;
  void** sp = (void**)top;
  *--sp = nullptr;
  *--sp = (void*)&emu_fiber_start;
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, fiber_main, 0);
#endif
  f.state = kReady;
  return true;
}

static void switch_into(int t) {
  Block& B = g_block;
  B.current = t;
  const unsigned bx = blockDim.x, by = blockDim.y;
  threadIdx.x = t % bx;
  threadIdx.y = (t / bx) % by;
  threadIdx.z = t / (bx * by);
  asm volatile("" ::: "memory");
#if defined(__x86_64__)
  emu_switch_stack(&B.sched_sp, B.fibers[t].sp);
#else
  swapcontext(&B.sched_ctx, &B.fibers[t].ctx);
#endif
  asm volatile("" ::: "memory");
}

// Runs one block: passes over the threads in linear order, resuming every runnable fiber until it
// blocks or returns, until all have returned. A pass that resumes nothing is a deadlock.
static bool run_block() {
  Block& B = g_block;
  const int n = B.nthreads;
  for (int t = 0; t < n; ++t) B.fibers[t].state = kNew;
  if (g_dyn_bytes) std::memset(g_dyn_shared, 0xFF, g_dyn_bytes);
  for (const SharedRange& r : g_shared_ranges) std::memset(r.p, 0xFF, r.n);
  for (Warp& w : B.warps) w.arrived = 0;
  B.exited = B.bar_arrived = B.bar_pred = 0;
  for (int pass = 0; B.exited < n; ++pass) {
    bool progress = false;
    const bool reverse = g_schedule == 1 || (g_schedule == 2 && ((pass + g_launches) & 1));
    for (int k = 0; k < n; ++k) {
      const int t = reverse ? n - 1 - k : k;
      Fiber& f = B.fibers[t];
      if (f.state == kNew && !start_fiber(f)) {
        fail("out of memory for fiber stacks");
        return false;
      }
      if (f.state != kReady) continue;
      switch_into(t);
      progress = true;
      if (!B.error.empty()) return false;
      if (f.state == kDone) B.free_stacks.push_back(f.stack);
    }
    if (!progress) {
      int at_bar = 0, at_warp = 0;
      for (int t = 0; t < n; ++t) {
        at_bar += B.fibers[t].state == kWaitBlock;
        at_warp += B.fibers[t].state == kWaitWarp;
      }
      fail("deadlock in " + std::string(B.kernel) + ": " + std::to_string(at_bar) +
           " thread(s) wait at __syncthreads, " + std::to_string(at_warp) +
           " at a warp op (a warp op needs every lane of its mask; __syncthreads needs every thread)");
      return false;
    }
  }
  return true;
}

// ---- barriers ----------------------------------------------------------------------------------

// __syncthreads and its counting forms: returns the number of threads whose predicate was nonzero.
static int block_barrier(int pred) {
  Block& B = g_block;
  Fiber& f = B.fibers[B.current];
  if (B.exited > 0)
    abort_fiber("divergent __syncthreads in " + std::string(B.kernel) + ": " + thread_name(B.current) +
                " reached __syncthreads after " + std::to_string(B.exited) + " thread(s) of its block returned");
  B.bar_arrived += 1;
  B.bar_pred += pred != 0;
  if (B.bar_arrived == B.nthreads) {  // last to arrive: release everyone and keep running
    B.bar_result = B.bar_pred;
    B.bar_arrived = B.bar_pred = 0;
    for (Fiber& o : B.fibers)
      if (o.state == kWaitBlock) o.state = kReady;
    return B.bar_result;
  }
  f.state = kWaitBlock;
  yield_to_scheduler();
  return B.bar_result;
}

static int lanes_present(int w) {
  const int first = w * 32, n = std::min(32, g_block.nthreads - first);
  return n;
}

// Every lane of a warp op deposits (value, argument, width); the last lane of the mask to arrive
// computes each lane's result, then all continue. Returns this lane's result.
static unsigned long long warp_op(int kind, unsigned int mask, unsigned long long v, int arg, int width) {
  Block& B = g_block;
  const int t = B.current, w = t / 32, lane = t % 32;
  Warp& W = B.warps[w];
  const int np = lanes_present(w);
  const unsigned int present = np == 32 ? 0xffffffffu : ((1u << np) - 1u);
  auto where = [&]() { return std::string(kWarpOpNames[kind]) + " in " + B.kernel + ": " + thread_name(t); };
  if (!((mask >> lane) & 1u)) abort_fiber(where() + " is not in its own mask");
  if (kind != kSyncWarp && kind < kBallot && (width < 1 || width > 32 || (width & (width - 1))))
    abort_fiber(where() + " has width " + std::to_string(width) + " (a power of two up to 32 is required)");
  if (W.arrived == 0) {
    W.mask = mask;
    W.kind = kind;
  } else if (W.mask != mask || W.kind != kind) {
    abort_fiber(where() + " meets lanes waiting at " + kWarpOpNames[W.kind] + " with mask " +
                std::to_string(W.mask) + " (mask " + std::to_string(mask) + "): divergent warp ops");
  }
  const unsigned int need = mask & present;
  for (int l = 0; l < np; ++l)
    if (((need >> l) & 1u) && B.fibers[w * 32 + l].state == kDone)
      abort_fiber(where() + ": lane " + std::to_string(l) + " of the mask has already returned");
  W.val[lane] = v;
  W.arg[lane] = arg;
  W.width[lane] = width;
  W.arrived |= 1u << lane;
  if (W.arrived != need) {
    B.fibers[t].state = kWaitWarp;
    yield_to_scheduler();
    return W.result[lane];
  }
  // Last lane: compute everyone's result.
  for (int l = 0; l < 32; ++l) {
    if (!((need >> l) & 1u)) continue;
    const int wd = W.width[l], base = l & ~(wd - 1), rel = l - base;
    int src = l;
    switch (W.kind) {
      case kShfl: src = base + (W.arg[l] & (wd - 1)); break;
      case kShflUp: src = rel - W.arg[l] >= 0 ? l - W.arg[l] : l; break;
      case kShflDown: src = rel + W.arg[l] < wd ? l + W.arg[l] : l; break;
      case kShflXor: src = l ^ W.arg[l]; if (src < base || src >= base + wd) src = l; break;
      default: break;
    }
    if (W.kind >= kShfl && W.kind <= kShflXor) {
      if (src < 0 || src > 31 || !((need >> src) & 1u)) {
        W.arrived = 0;
        abort_fiber(std::string(kWarpOpNames[W.kind]) + " in " + B.kernel + ": lane " + std::to_string(l) +
                    " of warp " + std::to_string(w) + " reads lane " + std::to_string(src) +
                    ", which is not taking part (undefined on a GPU)");
      }
      W.result[l] = W.val[src];
    }
  }
  if (W.kind >= kBallot) {
    unsigned int ballot = 0;
    for (int l = 0; l < 32; ++l)
      if (((need >> l) & 1u) && W.val[l]) ballot |= 1u << l;
    unsigned long long r = W.kind == kBallot ? ballot : W.kind == kAny ? (ballot != 0) : (ballot == need);
    for (int l = 0; l < 32; ++l) W.result[l] = r;
  }
  W.arrived = 0;
  for (int l = 0; l < 32; ++l)
    if (((need >> l) & 1u) && l != lane) B.fibers[w * 32 + l].state = kReady;
  return W.result[lane];
}

template <class T>
static inline T shuffle(int kind, unsigned int mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move up to 8 bytes");
  unsigned long long raw = 0;
  std::memcpy(&raw, &v, sizeof(T));
  raw = warp_op(kind, mask, raw, arg, width);
  T r;
  std::memcpy(&r, &raw, sizeof(T));
  return r;
}

// ---- launching ---------------------------------------------------------------------------------

// Faults inside a kernel (a wild pointer, an overflowed fiber stack, an integer division by zero)
// end the launch with an error instead of killing the process: while a grid runs, SIGSEGV, SIGBUS
// and SIGFPE go to on_fault (on its own signal stack), which jumps back into run_grid.
static sigjmp_buf g_fault_jmp;
static volatile sig_atomic_t g_fault_sig = 0;
static void* volatile g_fault_addr = nullptr;
static void on_fault(int sig, siginfo_t* info, void*) {
  g_fault_sig = sig;
  g_fault_addr = info ? info->si_addr : nullptr;
  siglongjmp(g_fault_jmp, 1);
}

static std::string fault_message(const char* kernel) {
  char buf[256];
  const char* what = g_fault_sig == SIGFPE ? "arithmetic fault (integer division by zero?)" : "illegal memory access";
  snprintf(buf, sizeof buf, "%s in %s at address 0x%llx: ", what, kernel, (unsigned long long)(uintptr_t)g_fault_addr);
  std::string msg = buf;
  const uintptr_t a = (uintptr_t)g_fault_addr;
  for (char* st : g_block.all_stacks)
    if (a >= (uintptr_t)st - 4096 && a < (uintptr_t)st)
      msg += "fiber stack overflow (more than 256 KiB of locals), ";
  return msg + thread_name(g_block.current);
}

// Runs body(arg) as every thread of a grid. dims = grid x, y, z, block x, y, z, dynamic shared
// memory bytes (all checked by Python).
static int run_grid(const char* kernel, const long long* dims, void (*body)(void*), void* arg, char* err,
                    int errlen) {
  Block& B = g_block;
  B.kernel = kernel;
  B.body = body;
  B.body_arg = arg;
  B.error.clear();
  gridDim.x = (unsigned)dims[0]; gridDim.y = (unsigned)dims[1]; gridDim.z = (unsigned)dims[2];
  blockDim.x = (unsigned)dims[3]; blockDim.y = (unsigned)dims[4]; blockDim.z = (unsigned)dims[5];
  B.nthreads = (int)(dims[3] * dims[4] * dims[5]);
  g_dyn_bytes = (size_t)dims[6];
  for (size_t i = 0; i < kGuardBytes; ++i) g_dyn_shared[g_dyn_bytes + i] = (char)guard_byte(i);
  B.fibers.assign(B.nthreads, Fiber());
  B.warps.assign((B.nthreads + 31) / 32, Warp());
  // Fibers left suspended by an earlier failed launch are abandoned: their stacks are all reusable.
  B.free_stacks = B.all_stacks;
  static char* alt_stack = (char*)std::malloc(1 << 16);
  stack_t ss{}, old_ss{};
  ss.ss_sp = alt_stack;
  ss.ss_size = 1 << 16;
  sigaltstack(&ss, &old_ss);
  struct sigaction sa{}, old_segv{}, old_bus{}, old_fpe{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  sigaction(SIGFPE, &sa, &old_fpe);
  volatile bool ok = true;
  if (sigsetjmp(g_fault_jmp, 1) == 0) {
    const bool reverse = g_schedule == 1 || (g_schedule == 2 && (++g_launches & 1));
    const unsigned long long nblocks = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
    for (unsigned long long k = 0; ok && k < nblocks; ++k) {
      const unsigned long long b = reverse ? nblocks - 1 - k : k;
      blockIdx.x = (unsigned)(b % gridDim.x);
      blockIdx.y = (unsigned)((b / gridDim.x) % gridDim.y);
      blockIdx.z = (unsigned)(b / ((unsigned long long)gridDim.x * gridDim.y));
      ok = run_block();
    }
  } else {
    fail(fault_message(kernel));
    ok = false;
  }
  sigaction(SIGSEGV, &old_segv, nullptr);
  sigaction(SIGBUS, &old_bus, nullptr);
  sigaction(SIGFPE, &old_fpe, nullptr);
  sigaltstack(&old_ss, nullptr);
  for (size_t i = 0; ok && i < kGuardBytes; ++i)
    if ((unsigned char)g_dyn_shared[g_dyn_bytes + i] != guard_byte(i)) {
      fail("kernel " + std::string(kernel) + " wrote past the end of its dynamic shared memory (shared_mem=" +
           std::to_string(g_dyn_bytes) + " bytes)");
      ok = false;
    }
  if (ok) return 0;
  snprintf(err, (size_t)errlen, "%s", B.error.c_str());
  return 1;
}

// Argument type codes, read by Python to check each launch: "f32", "i64", "*f32" (pointer) ...
template <class T> struct Code { static std::string get() { return "?"; } };
#define EMU_CODE(T, S) template <> struct Code<T> { static std::string get() { return S; } };
EMU_CODE(float, "f32") EMU_CODE(double, "f64") EMU_CODE(bool, "bool")
EMU_CODE(signed char, "i8") EMU_CODE(char, "i8") EMU_CODE(unsigned char, "u8")
EMU_CODE(short, "i16") EMU_CODE(unsigned short, "u16") EMU_CODE(int, "i32") EMU_CODE(unsigned int, "u32")
EMU_CODE(long, "i64") EMU_CODE(unsigned long, "u64") EMU_CODE(long long, "i64")
EMU_CODE(unsigned long long, "u64") EMU_CODE(void, "void")
template <class T> struct Code<T*> {
  static std::string get() { return "*" + Code<typename std::remove_cv<T>::type>::get(); }
};

template <class... A>
static std::string signature(void (*)(A...)) {
  std::string s;
  const std::string codes[] = {std::string(), Code<typename std::remove_cv<A>::type>::get()...};
  for (size_t i = 1; i < sizeof...(A) + 1; ++i) s += (i > 1 ? "," : "") + codes[i];
  return s;
}

// The kernel and its unpacked arguments; run() is one CUDA thread.
template <class... A>
struct Call {
  void (*fn)(A...);
  std::tuple<A...> args;
  static void run(void* self) {
    Call* c = static_cast<Call*>(self);
    std::apply(c->fn, c->args);
  }
};

// argv[i] points at the i-th argument's bytes, as cuLaunchKernel takes them.
template <class... A, size_t... I>
static std::tuple<A...> unpack(void** argv, std::index_sequence<I...>) {
  return std::tuple<A...>(*static_cast<A*>(argv[I])...);
}

template <class... A>
static int launch(void (*fn)(A...), const char* name, const long long* dims, void** argv, char* err, int errlen) {
  Call<A...> call{fn, unpack<A...>(argv, std::index_sequence_for<A...>{})};
  return run_grid(name, dims, &Call<A...>::run, &call, err, errlen);
}

}  // namespace emu

extern "C" __attribute__((visibility("default"))) void emu_set_schedule(int mode) { emu::g_schedule = mode; }

// ---- the CUDA device API on top of the scheduler -----------------------------------------------
static inline void __syncthreads() { emu::block_barrier(0); }
static inline int __syncthreads_count(int p) { return emu::block_barrier(p); }
static inline int __syncthreads_and(int p) { return emu::block_barrier(p) == emu::g_block.nthreads; }
static inline int __syncthreads_or(int p) { return emu::block_barrier(p) != 0; }
static inline void __syncwarp(unsigned int mask = 0xffffffffu) { emu::warp_op(emu::kSyncWarp, mask, 0, 0, 32); }
template <class T> static inline T __shfl_sync(unsigned int m, T v, int src, int width = 32) {
  return emu::shuffle(emu::kShfl, m, v, src, width);
}
template <class T> static inline T __shfl_up_sync(unsigned int m, T v, unsigned int d, int width = 32) {
  return emu::shuffle(emu::kShflUp, m, v, (int)d, width);
}
template <class T> static inline T __shfl_down_sync(unsigned int m, T v, unsigned int d, int width = 32) {
  return emu::shuffle(emu::kShflDown, m, v, (int)d, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned int m, T v, int lane_mask, int width = 32) {
  return emu::shuffle(emu::kShflXor, m, v, lane_mask, width);
}
static inline unsigned int __ballot_sync(unsigned int m, int p) {
  return (unsigned)emu::warp_op(emu::kBallot, m, p != 0, 0, 32);
}
static inline int __any_sync(unsigned int m, int p) { return (int)emu::warp_op(emu::kAny, m, p != 0, 0, 32); }
static inline int __all_sync(unsigned int m, int p) { return (int)emu::warp_op(emu::kAll, m, p != 0, 0, 32); }
static inline unsigned int __activemask() {
  const int w = emu::g_block.current / 32, np = emu::lanes_present(w);
  unsigned int m = 0;
  for (int l = 0; l < np; ++l)
    if (emu::g_block.fibers[w * 32 + l].state != emu::kDone) m |= 1u << l;
  return m;
}
static inline unsigned int __lanemask_lt() { return (1u << (emu::g_block.current % 32)) - 1u; }
