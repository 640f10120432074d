#include "threading.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#include <stdexcept>
#include <string>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pydl {
namespace {

// How many threads (at most `want`) can exist at once. libgomp exits the whole process when it
// cannot create a worker (a memory limit, a thread limit), so a team size is tried here first:
// `want` threads are started with the default attributes (libgomp's, unless OMP_STACKSIZE is
// set), each waits until all have started or one failed to, then all exit.
int creatable_threads(int want) {
#if defined(__linux__)
  struct Gate {
    std::mutex m;
    std::condition_variable cv;
    bool open = false;
  } gate;
  void* (*wait_at_gate)(void*) = [](void* p) -> void* {
    auto* g = static_cast<Gate*>(p);
    std::unique_lock<std::mutex> lock(g->m);
    g->cv.wait(lock, [g] { return g->open; });
    return nullptr;
  };
  std::vector<pthread_t> started;
  started.reserve(static_cast<std::size_t>(want));
  for (int i = 0; i < want; ++i) {
    pthread_t t;
    if (pthread_create(&t, nullptr, wait_at_gate, &gate) != 0) break;
    started.push_back(t);
  }
  {
    std::lock_guard<std::mutex> lock(gate.m);
    gate.open = true;
  }
  gate.cv.notify_all();
  for (pthread_t t : started) pthread_join(t, nullptr);
  return static_cast<int>(started.size());
#else
  return want;
#endif
}

// The largest team size known to be creatable (so each size is tried once, not per call).
std::atomic<int> g_team_ok{1};

// The largest team pydl uses: max(1024, 4 x the hardware threads). More never helps a kernel,
// and asking for, say, 10^6 would start (and probe) tens of thousands of OS threads.
int max_team() {
  static const int m = std::max(1024, 4 * static_cast<int>(std::thread::hardware_concurrency()));
  return m;
}

// `n` threads (at most max_team()), or as many as can be created (at least 1).
int grantable_threads(int n) {
  n = std::min(n, max_team());
  if (n <= g_team_ok.load(std::memory_order_relaxed)) return n;
  const int got = 1 + creatable_threads(n - 1);
  int known = g_team_ok.load(std::memory_order_relaxed);
  while (got > known && !g_team_ok.compare_exchange_weak(known, got)) {
  }
  return std::min(n, got);
}

int initial_threads() {
#ifdef _OPENMP
  return grantable_threads(std::max(1, omp_get_max_threads()));
#else
  return 1;
#endif
}

std::atomic<int>& thread_setting() {
  static std::atomic<int> n{initial_threads()};
  return n;
}

// Fork safety. GCC's libgomp keeps its worker threads across parallel regions; a child forked
// after they started has the pool's bookkeeping but not its threads, and its first parallel
// region waits for them forever (multiprocessing's "fork" start method, DataLoader-style
// workers). Such a child runs every kernel serially instead: same results (they never depend on
// the thread count), no region opened.
std::atomic<bool> g_serial_child{false};

void after_fork_in_child() {
  if (detail::g_pool_started.load(std::memory_order_relaxed)) g_serial_child.store(true, std::memory_order_relaxed);
}

[[maybe_unused]] const bool g_fork_handler = [] {
#if defined(__linux__) || defined(__APPLE__)
  pthread_atfork(nullptr, nullptr, after_fork_in_child);
#endif
  return true;
}();

}  // namespace

namespace detail {
std::atomic<bool> g_pool_started{false};
}  // namespace detail

bool in_serial_child() { return g_serial_child.load(std::memory_order_relaxed); }

int get_num_threads() { return in_serial_child() ? 1 : thread_setting().load(std::memory_order_relaxed); }

int set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("[set_num_threads] n must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
  n = grantable_threads(n);
#else
  n = 1;
#endif
  thread_setting().store(n, std::memory_order_relaxed);
  return n;
}

int threads_for(double work, double min_work_per_thread) {
#ifdef _OPENMP
  if (omp_in_parallel() || in_serial_child()) return 1;
  int n = get_num_threads();
  if (n <= 1 || min_work_per_thread <= 0) return n;
  double by_work = work / min_work_per_thread;
  if (by_work < 2.0) return 1;
  return static_cast<int>(std::min<double>(n, by_work));
#else
  (void)work;
  (void)min_work_per_thread;
  return 1;
#endif
}

int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

void leave_master_cpu(int master_cpu) {
#if defined(__linux__)
  if (master_cpu < 0 || sched_getcpu() != master_cpu) return;
  cpu_set_t own, others;
  if (sched_getaffinity(0, sizeof own, &own) != 0) return;
  others = own;
  CPU_CLR(master_cpu, &others);
  if (CPU_COUNT(&others) == 0) return;
  if (sched_setaffinity(0, sizeof others, &others) == 0) sched_setaffinity(0, sizeof own, &own);
#else
  (void)master_cpu;
#endif
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace pydl
