#include "cpu_features.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#if defined(PYDL_X86)
#include <cpuid.h>
#endif

namespace pydl {
namespace {

#if defined(PYDL_X86)
// XCR0: which register states the OS saves on context switch.
std::uint64_t read_xcr0() {
  std::uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

bool detect(Isa isa) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12);
  if (!(osxsave && avx && fma)) return false;
  const std::uint64_t xcr0 = read_xcr0();
  if ((xcr0 & 0x6) != 0x6) return false;  // XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx2 = b & (1u << 5);
  if (isa == Isa::avx2) return avx2;
  const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;  // opmask, ZMM_Hi256, Hi16_ZMM
  return avx2 && f && dq && bw && vl && zmm_state;
}

// Associativity of the level-1 data cache from CPUID's cache descriptors: leaf 4 (Intel) or
// 0x8000001D (AMD), one subleaf per cache, EAX[4:0] the type (1 data, 3 unified, 0 no more),
// EAX[7:5] the level, EBX[31:22] the ways minus one. 0 when the CPU does not say.
int cpuid_l1d_ways() {
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
  const bool amd = b == 0x68747541u;  // "Auth"(enticAMD)
  unsigned leaf = 4;
  if (amd) {
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x8000001Du) return 0;
    leaf = 0x8000001Du;
  } else if (a < 4) {
    return 0;
  }
  for (unsigned sub = 0; sub < 16; ++sub) {
    __cpuid_count(leaf, sub, a, b, c, d);
    const unsigned type = a & 0x1F, level = (a >> 5) & 0x7;
    if (type == 0) break;
    if (level == 1 && (type == 1 || type == 3)) return static_cast<int>((b >> 22) & 0x3FF) + 1;
  }
  return 0;
}
#else
bool detect(Isa) { return false; }
int cpuid_l1d_ways() { return 0; }
#endif

Isa best_isa() {
  if (detect(Isa::avx512)) return Isa::avx512;
  if (detect(Isa::avx2)) return Isa::avx2;
  return Isa::generic;
}

std::atomic<int>& isa_setting() {
  static std::atomic<int> v{static_cast<int>(best_isa())};
  return v;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

bool cpu_supports(Isa isa) { return isa == Isa::generic || detect(isa); }

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (Isa i : {Isa::avx512, Isa::avx2, Isa::generic})
    if (cpu_supports(i)) out.push_back(isa_name(i));
  return out;
}

Isa selected_isa() { return static_cast<Isa>(isa_setting().load(std::memory_order_relaxed)); }

void select_isa(const std::string& name) {
  Isa isa;
  if (name == "avx512") isa = Isa::avx512;
  else if (name == "avx2") isa = Isa::avx2;
  else if (name == "generic") isa = Isa::generic;
  else throw std::invalid_argument("[isa] unknown ISA '" + name + "', expected avx512, avx2 or generic");
  if (!cpu_supports(isa))
    throw std::invalid_argument("[isa] this CPU does not support '" + name + "' (available: " +
                                [] { std::string s; for (auto& x : available_isas()) s += (s.empty() ? "" : ", ") + x; return s; }() + ")");
  isa_setting().store(static_cast<int>(isa), std::memory_order_relaxed);
}

void init_isa_from_env() {
  const char* env = std::getenv("PYDL_ISA");
  if (env && *env) select_isa(env);
}

int l1d_ways() {
  static const int ways = [] {
    const int w = cpuid_l1d_ways();
    return w > 0 ? w : 8;
  }();
  return ways;
}

}  // namespace pydl
