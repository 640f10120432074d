// Process-wide thread count for every pydl parallel region.
//
// omp_set_num_threads only affects the calling thread, and pydl kernels are called from
// whatever Python thread the user happens to use, so the setting lives here and every
// parallel region passes num_threads(pydl::threads_for(...)) explicitly.
#pragma once

#include <cstdint>

namespace pydl {

// Threads available to pydl (>= 1). Defaults to omp_get_max_threads() at load time,
// which honours OMP_NUM_THREADS.
int get_num_threads();
void set_num_threads(int n);  // n >= 1; throws std::invalid_argument otherwise

// Threads to use for a job of `work` units when one thread should get at least
// `min_work_per_thread` units. Returns 1 inside an enclosing parallel region, so a kernel
// called from a parallel loop runs serially. Small jobs stay serial: threads must never make
// a tiny op slower (an OpenMP fork/join costs ~1-2 us).
int threads_for(double work, double min_work_per_thread);

bool openmp_enabled();

}  // namespace pydl
