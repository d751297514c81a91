// The normalisation functions of every ISA against a double-precision reference: per-lane
// moments and the affine pass with each activation, for plain (1 lane) and blocked (8, 16
// lanes) data, counts that end in a partial group of floats, data with a large offset, in
// place and out of place, with guard zones around dst.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/norm.h"
#include "voxinfer/core/cpu.h"

namespace voxinfer::kernels::norm {
namespace {

std::vector<Isa> isas() {
  std::vector<Isa> v{Isa::generic};
  if (static_cast<int>(hardware_isa()) >= static_cast<int>(Isa::avx2)) v.push_back(Isa::avx2);
  if (hardware_isa() == Isa::avx512) v.push_back(Isa::avx512);
  return v;
}

std::vector<float> random_floats(std::size_t n, unsigned seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

TEST(NormKernels, MomentsMatchDoubleReference) {
  for (const Isa isa : isas())
    for (const int lanes : {1, 8, 16})
      for (const std::int64_t rows : {1, 3, 5, 63, 64, 1000, 32768 / lanes})
        for (const float offset : {0.f, 1000.f}) {
          SCOPED_TRACE(std::string(isa_name(isa)) + " lanes " + std::to_string(lanes) + " rows " +
                       std::to_string(rows) + " offset " + std::to_string(offset));
          const std::int64_t count = rows * lanes;
          std::vector<float> p =
              random_floats(static_cast<std::size_t>(count), 7u + static_cast<unsigned>(rows), -1.f, 2.f);
          for (std::int64_t i = 0; i < count; ++i)
            p[static_cast<std::size_t>(i)] += offset + 0.25f * static_cast<float>(i % lanes);
          Moments out[16];
          fns(isa).moments(p.data(), count, lanes, out);
          for (int l = 0; l < lanes; ++l) {
            double m = 0, v = 0;
            for (std::int64_t r = 0; r < rows; ++r) m += p[static_cast<std::size_t>(r * lanes + l)];
            m /= static_cast<double>(rows);
            for (std::int64_t r = 0; r < rows; ++r) v += std::pow(p[static_cast<std::size_t>(r * lanes + l)] - m, 2);
            v /= static_cast<double>(rows);
            ASSERT_EQ(out[l].n, static_cast<double>(rows));
            // Relative to the spread (about 0.75): float sums of deviations over 1024 terms.
            ASSERT_NEAR(out[l].mean, m, 2e-6 * (1.0 + offset)) << "lane " << l;
            ASSERT_NEAR(out[l].variance(), v, 2e-5 * (v + 1e-3)) << "lane " << l;
          }
        }
}

TEST(NormKernels, AffineMatchesDoubleReferenceWithGuards) {
  constexpr std::int64_t kGuard = 64;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::leaky_relu, Activation::prelu,
                             Activation::sigmoid};
  for (const Isa isa : isas())
    for (const int lanes : {1, 8, 16})
      for (const std::int64_t rows : {1, 2, 3, 5, 31, 100})
        for (const Activation act : acts)
          for (const bool inplace : {false, true})
            for (const bool stream : {false, true}) {
              SCOPED_TRACE(std::string(isa_name(isa)) + " lanes " + std::to_string(lanes) + " rows " +
                           std::to_string(rows) + " act " + std::to_string(static_cast<int>(act)) +
                           (inplace ? " in place" : "") + (stream ? " streamed" : ""));
              const std::int64_t count = rows * lanes;
              const std::vector<float> s =
                  random_floats(static_cast<std::size_t>(count), 11u + static_cast<unsigned>(count), -3.f, 3.f);
              const std::vector<float> m = random_floats(16, 12, -0.5f, 0.5f), a = random_floats(16, 13, 0.2f, 2.f),
                                       b = random_floats(16, 14, -0.5f, 0.5f);
              const std::vector<float> sl = random_floats(16, 15, 0.05f, 0.5f);  // PRelu slopes per lane
              // dst 64-byte aligned, so that the streamed path takes non-temporal stores.
              std::vector<float> storage(static_cast<std::size_t>(count + 2 * kGuard + 16), 77.f);
              float* base =
                  storage.data() + (16 - reinterpret_cast<std::uintptr_t>(storage.data()) / sizeof(float) % 16) % 16;
              float* d = base + kGuard;
              const float* src = s.data();
              if (inplace) {
                std::memcpy(d, s.data(), static_cast<std::size_t>(count) * sizeof(float));
                src = d;
              }
              fns(isa).affine(src, d, count, lanes, m.data(), a.data(), b.data(), act, 0.1f, sl.data(), stream);
              for (std::int64_t g = 0; g < kGuard; ++g) {
                ASSERT_EQ(base[g], 77.f) << "write before dst";
                ASSERT_EQ(base[kGuard + count + g], 77.f) << "write after dst";
              }
              for (std::int64_t i = 0; i < count; ++i) {
                const auto l = static_cast<std::size_t>(i % lanes);
                double e = (static_cast<double>(s[static_cast<std::size_t>(i)]) - m[l]) * a[l] + b[l];
                if (act == Activation::relu) e = e > 0 ? e : 0;
                if (act == Activation::leaky_relu) e = e >= 0 ? e : 0.1 * e;
                if (act == Activation::prelu) e = e >= 0 ? e : sl[l] * e;
                if (act == Activation::sigmoid) e = 1 / (1 + std::exp(-e));
                ASSERT_NEAR(d[i], e, 2e-6 * (1 + std::abs(e))) << "element " << i;
              }
            }
}

}  // namespace
}  // namespace voxinfer::kernels::norm
