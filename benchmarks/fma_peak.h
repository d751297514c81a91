// Measured FMA peak of this machine per ISA (independent fused multiply-adds in registers),
// for the "% of peak" counters of the kernel benchmarks.
#pragma once

#include "voxinfer/core/cpu.h"

namespace voxinfer::bench {

// GFLOP/s of one thread running only FMAs of the ISA's widest vectors (2 FLOP per lane).
double fma_peak_gflops_avx2();
double fma_peak_gflops_avx512();

// The peak of `threads` threads running at once for the ISA (measured once, then cached).
double fma_peak_gflops(Isa isa, int threads);

}  // namespace voxinfer::bench
