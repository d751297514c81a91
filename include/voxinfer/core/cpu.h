// CPU feature detection (cpuid + OS support via xgetbv) and the ISA cap that selects
// kernels: VOXINFER_MAX_ISA=generic|avx2|avx512 or set_max_isa().
#pragma once

#include <string>

namespace voxinfer {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false, avx512bf16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  std::string brand;
};

const CpuFeatures& cpu_features();
// The best ISA this CPU and OS support.
Isa hardware_isa();
// The ISA kernels use: hardware_isa() capped by VOXINFER_MAX_ISA or set_max_isa().
Isa active_isa();
void set_max_isa(Isa cap);
const char* isa_name(Isa isa);
// Parses "generic", "avx2" or "avx512"; throws voxinfer::Error otherwise.
Isa parse_isa(const std::string& name);

}  // namespace voxinfer
