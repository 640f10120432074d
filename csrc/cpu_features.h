// Runtime instruction-set detection and selection.
//
// The extension is compiled for baseline x86-64; only files named *_avx512.cpp and
// *_avx2.cpp use wider instructions, and they are called only when selected_isa() says so.
// PYDL_ISA=avx512|avx2|generic in the environment forces a path (checked once, at import);
// forcing one the CPU lacks is an error.
#pragma once

#include <string>
#include <vector>

namespace pydl {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
bool cpu_supports(Isa isa);          // hardware + OS support
std::vector<std::string> available_isas();
Isa selected_isa();                  // the one kernels use
void select_isa(const std::string& name);  // "avx512" | "avx2" | "generic"; throws if unsupported
void init_isa_from_env();            // reads PYDL_ISA (called at module import)
// Ways of the level-1 data cache (CPUID; 8 where the CPU does not say): Zen 3 / Zen 4 8,
// Intel cores since Sunny Cove and Zen 5 12.
int l1d_ways();

}  // namespace pydl
