// cpuid/xgetbv feature detection and the ISA cap.
#include "voxinfer/core/cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "voxinfer/core/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define VOXINFER_X86 1
#endif

namespace voxinfer {
namespace {

#ifdef VOXINFER_X86
std::uint64_t xgetbv0() {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef VOXINFER_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const std::uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_os = (xcr0 & 0x6) == 0x6;
  const bool zmm_os = (xcr0 & 0xe6) == 0xe6;
  const bool amx_os = (xcr0 & 0x60000) == 0x60000;
  f.fma = ymm_os && ((c >> 12) & 1);
  f.f16c = ymm_os && ((c >> 29) & 1);
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = ymm_os && ((b >> 5) & 1);
    f.avx512f = zmm_os && ((b >> 16) & 1);
    f.avx512dq = zmm_os && ((b >> 17) & 1);
    f.avx512bw = zmm_os && ((b >> 30) & 1);
    f.avx512vl = zmm_os && ((b >> 31) & 1);
    f.avx512vnni = zmm_os && ((c >> 11) & 1);
    f.amx_bf16 = amx_os && ((d >> 22) & 1);
    f.amx_tile = amx_os && ((d >> 24) & 1);
    f.amx_int8 = amx_os && ((d >> 25) & 1);
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512bf16 = zmm_os && ((a1 >> 5) & 1);
  }
  char brand[49] = {};
  unsigned regs[12] = {};
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002 + i, &regs[i * 4], &regs[i * 4 + 1], &regs[i * 4 + 2], &regs[i * 4 + 3]);
    std::memcpy(brand, regs, 48);
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  }
#endif
  return f;
}

std::atomic<int> g_cap{-1};

Isa env_cap() {
  const char* env = std::getenv("VOXINFER_MAX_ISA");
  if (!env || !*env) return Isa::avx512;
  return parse_isa(env);
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa hardware_isa() {
  const auto& f = cpu_features();
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma) return Isa::avx512;
  if (f.avx2 && f.fma) return Isa::avx2;
  return Isa::generic;
}

Isa active_isa() {
  int cap = g_cap.load();
  if (cap < 0) {
    cap = static_cast<int>(env_cap());
    g_cap.store(cap);
  }
  const Isa hw = hardware_isa();
  return static_cast<int>(hw) < cap ? hw : static_cast<Isa>(cap);
}

void set_max_isa(Isa cap) { g_cap.store(static_cast<int>(cap)); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "generic";
}

Isa parse_isa(const std::string& name) {
  if (name == "generic") return Isa::generic;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw Error(ErrorCode::invalid_input, "unknown ISA '" + name + "' (VOXINFER_MAX_ISA takes generic, avx2 or avx512)");
}

}  // namespace voxinfer
