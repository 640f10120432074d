// Process-wide thread count and the one way pydl opens a parallel region.
//
// omp_set_num_threads only affects the calling thread, and pydl kernels are called from
// whatever Python thread the user happens to use, so the setting lives here and every
// parallel region passes its thread count explicitly.
//
// Every family's parallel regions go through `parallel_team` / `parallel_for` below, which
//   - open no region at all for one thread (body runs inline with tid 0, nthreads 1);
//   - move a worker that woke up on its master's CPU off it first (see leave_master_cpu);
//   - hand the body its thread index, so per-thread scratch is indexed by the team's own rank
//     (never by omp_get_thread_num() of an enclosing team).
// Bodies must not throw: validate and allocate before the region.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pydl {

// Threads available to pydl (>= 1). Defaults to omp_get_max_threads() at load time,
// which honours OMP_NUM_THREADS.
int get_num_threads();
// n >= 1 (throws std::invalid_argument otherwise). Returns the count set: n, or fewer when only
// fewer threads can be created (a memory or thread limit), so a region never fails to start.
int set_num_threads(int n);

// Threads to use for a job of `work` units when one thread should get at least
// `min_work_per_thread` units. Returns 1 inside an enclosing parallel region, so a kernel
// called from a parallel loop runs serially. Small jobs stay serial: threads must never make
// a tiny op slower (an OpenMP fork/join costs ~1-2 us).
int threads_for(double work, double min_work_per_thread);

bool openmp_enabled();

// True in a child process forked after this process started its OpenMP worker threads: every
// region then runs inline on one thread (libgomp's pool does not survive fork, and a region
// would wait for it forever). get_num_threads() reports 1 there.
bool in_serial_child();

namespace detail {
extern std::atomic<bool> g_pool_started;  // set by the first region with more than one thread
}  // namespace detail

// The CPU the calling thread runs on, or -1 where that can't be asked.
int current_cpu();

// On 2-vCPU VMs the kernel often wakes an OpenMP worker on the CPU of the thread that woke it;
// the two then take turns on one CPU (4-8 ms per parallel region, measured) while the other CPU
// idles. A worker that finds itself on `master_cpu` moves off it once (an affinity without that
// CPU, then its own affinity restored). No-op where affinity can't be set.
void leave_master_cpu(int master_cpu);

// body(tid, nthreads) on a team of nt threads (inline when nt <= 1).
template <class F>
inline void parallel_team(int nt, F&& body) {
#ifdef _OPENMP
  if (nt > 1 && !in_serial_child()) {
    if (!detail::g_pool_started.load(std::memory_order_relaxed))
      detail::g_pool_started.store(true, std::memory_order_relaxed);
    const int master = current_cpu();
#pragma omp parallel num_threads(nt)
    {
      const int tid = omp_get_thread_num();
      if (tid != 0) leave_master_cpu(master);
      body(tid, omp_get_num_threads());
    }
    return;
  }
#endif
  body(0, 1);
}

// body(i, tid) for i in [0, n) on nt threads. chunk == 0: contiguous static blocks, one per
// thread (the i -> thread map depends only on n and nt); chunk > 0: dynamic, `chunk` at a time.
template <class F>
inline void parallel_for(int nt, std::int64_t n, F&& body, std::int64_t chunk = 0) {
  if (n <= 0) return;
  if (nt > n) nt = static_cast<int>(n);
  if (nt <= 1 || in_serial_child()) {
    // No worksharing construct here: an orphaned `omp for` would bind to an enclosing caller's
    // team and hand this loop's iterations to its threads.
    for (std::int64_t i = 0; i < n; ++i) body(i, 0);
    return;
  }
  parallel_team(nt, [&](int tid, int team) {
    if (chunk > 0) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (std::int64_t b = 0; b < (n + chunk - 1) / chunk; ++b) {
        const std::int64_t e = b * chunk + chunk < n ? b * chunk + chunk : n;
        for (std::int64_t i = b * chunk; i < e; ++i) body(i, tid);
      }
    } else {
      const std::int64_t b = n * tid / team, e = n * (tid + 1) / team;
      for (std::int64_t i = b; i < e; ++i) body(i, tid);
    }
  });
}

// Work items [0, n) shared out among a team, round after round, each round ending in a barrier.
// In a round thread `rank` first takes the items of its home range (the rank-th of `team`
// near-equal parts, in order), then items of other threads' ranges that their owners have not
// started. When every thread runs at the same speed each does exactly its home items, so what a
// thread packed for them (weights in its own L2) stays its own; a thread that is slower this
// round (a busy SMT sibling, a power-saving core, a shared vCPU) leaves items to the faster ones
// instead of making them wait at the barrier. Each home range has one counter on its own cache
// line; owner and helpers both claim items with fetch_add, so each item goes to exactly one
// thread. Two sets of counters are used in turn: round r takes from set r & 1 while set
// (r + 1) & 1, finished with before the barrier that ended round r - 1, is refilled for r + 1.
//
//   every thread: q.start(rank, team); team_barrier(team);
//   each round r: q.begin_round(rank, team, r); while (q.next(rank, team, r, item)) ...; team_barrier(team);
class TeamQueues {
 public:
  // n items for teams of up to max_team threads. `home`, when given, holds max_team + 1 ascending
  // item indices, home[0] = 0 and home[max_team] = n: thread r's own items are [home[r],
  // home[r + 1]) when the team has max_team threads (else, and without `home`, near-equal parts).
  // Allocates: construct before the parallel region.
  TeamQueues(std::int64_t n, int max_team, const std::int64_t* home = nullptr)
      : n_(n), max_team_(max_team > 0 ? max_team : 1), home_(home), next_(new Counter[2 * max_team_]) {}
  // Fills this thread's range for rounds 0 and 1; a barrier must follow before round 0.
  void start(int rank, int team) {
    reset(0, rank, team);
    reset(1, rank, team);
  }
  // At the start of round r (after the barrier that ended round r - 1): refills this thread's
  // range for round r + 1.
  void begin_round(int rank, int team, std::int64_t round) {
    if (round > 0) reset((round + 1) & 1, rank, team);
  }
  // The next item of round `round` for `rank`: its own range first, then the others' in turn;
  // false when the round has none left for it.
  bool next(int rank, int team, std::int64_t round, std::int64_t& item) {
    Counter* set = next_.get() + (round & 1) * max_team_;
    for (int k = 0; k < team; ++k) {
      const int r = (rank + k) % team;
      const std::int64_t end = begin(r + 1, team);
      // Another thread's range only while it has two or more items not started: its last one
      // is cheaper for it (its data are in its caches) than for a helper that would take it
      // just before the owner gets there and leave the owner waiting at the barrier instead.
      if (set[r].v.load(std::memory_order_relaxed) > end - (k == 0 ? 1 : 2)) continue;
      const std::int64_t i = set[r].v.fetch_add(1, std::memory_order_relaxed);
      if (i < end) {
        item = i;
        return true;
      }
    }
    return false;
  }
  // First item of home range `rank` (rank == team: n).
  std::int64_t begin(int rank, int team) const {
    if (home_ && team == max_team_) return home_[rank];
    return n_ * rank / team;
  }

 private:
  struct alignas(64) Counter {
    std::atomic<std::int64_t> v{0};
  };
  void reset(int set, int rank, int team) {
    next_[set * max_team_ + rank].v.store(begin(rank, team), std::memory_order_relaxed);
  }
  std::int64_t n_;
  int max_team_;
  const std::int64_t* home_;
  std::unique_ptr<Counter[]> next_;
};

// A barrier for the team of parallel_team. A team of one skips it: called outside any region of
// its own, an orphaned barrier would bind to an enclosing caller's team and deadlock.
inline void team_barrier(int nthreads) {
#ifdef _OPENMP
  if (nthreads > 1) {
#pragma omp barrier
  }
#else
  (void)nthreads;
#endif
}

}  // namespace pydl
