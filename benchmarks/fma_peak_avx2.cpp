// One thread's FMA peak with 8-wide AVX2 FMAs (compiled with -mavx2 -mfma only).
#include <immintrin.h>

#include <chrono>

#include "fma_peak.h"

namespace voxinfer::bench {

double fma_peak_gflops_avx2() {
  constexpr int kAcc = 12;  // independent chains: latency 4 x 2 ports, with room to spare
  constexpr long kIters = 20'000'000;
  __m256 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < kIters; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m256 sum = acc[0];
  for (int i = 1; i < kAcc; ++i) sum = _mm256_add_ps(sum, acc[i]);
  volatile float sink = _mm256_cvtss_f32(sum);
  (void)sink;
  return 2.0 * 8 * kAcc * static_cast<double>(kIters) / s * 1e-9;
}

}  // namespace voxinfer::bench
