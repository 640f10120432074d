// Build information, ISA selection and the process-wide thread count.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "big_output.h"
#include "cpu_features.h"
#include "threading.h"

namespace py = pybind11;

void init_config(py::module_& m) {
  pydl::init_isa_from_env();
  m.def("get_num_threads", &pydl::get_num_threads, "Threads every pydl parallel region uses.");
  m.def("set_num_threads", &pydl::set_num_threads, py::arg("n"), "Set the process-wide thread count (>= 1); returns the count set (fewer when no more threads can be created).");
  m.def("openmp_enabled", &pydl::openmp_enabled);
  m.def("selected_isa", [] { return std::string(pydl::isa_name(pydl::selected_isa())); });
  m.def("available_isas", &pydl::available_isas);
  m.def("select_isa", &pydl::select_isa, py::arg("name"),
        "Force 'avx512', 'avx2' or 'generic' micro-kernels (error if the CPU lacks it).");
  m.def("l1d_ways", &pydl::l1d_ways, "Ways of the level-1 data cache (CPUID; 8 where the CPU does not say).");
  m.def("output_cache_bytes", &pydl::big_output_cache_bytes,
        "Bytes of freed big (>= 32 MiB) output blocks kept for reuse (see big_output.h).");
  m.def("output_cache_clear", &pydl::big_output_cache_clear,
        "Free every cached big output block; returns the bytes freed.");
  py::dict build;
  build["compiler"] = PYDL_COMPILER;
  build["cxx_flags"] = PYDL_CXX_FLAGS;
  build["build_type"] = PYDL_BUILD_TYPE;
#ifdef _OPENMP
  build["openmp"] = _OPENMP;
#else
  build["openmp"] = py::none();
#endif
  m.attr("build_info") = build;
}
