// Helpers shared by the tests: where the shared data lives, seeded random tensors,
// and comparison with the numeric policy's bound.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "voxinfer/core/tensor.h"

namespace voxinfer::test {

// The shared models and data sets: $VOXINFER_SHARED_DIR, else ../shared beside the checkout.
inline std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("VOXINFER_SHARED_DIR")) return env;
  return VOXINFER_DEFAULT_SHARED_DIR;
}

inline std::filesystem::path test_data_dir() { return VOXINFER_TEST_DATA_DIR; }

// Fills a tensor with uniform values in [lo, hi) from a fixed seed.
inline Tensor random_tensor(const Shape& shape, std::uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t(shape, DType::f32);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// max |a - b| over two same-shaped f32 tensors.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous(), y = b.contiguous();
  double m = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i)
    m = std::max(m, static_cast<double>(std::abs(x.data<float>()[i] - y.data<float>()[i])));
  return m;
}

inline double max_abs(const Tensor& a) {
  const Tensor x = a.contiguous();
  double m = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) m = std::max(m, static_cast<double>(std::abs(x.data<float>()[i])));
  return m;
}

}  // namespace voxinfer::test

// Skips the current test when the shared folder (or a path inside it) is missing.
#define VOXINFER_REQUIRE_SHARED(rel)                                                                  \
  do {                                                                                                \
    if (!std::filesystem::exists(::voxinfer::test::shared_dir() / (rel)))                            \
      GTEST_SKIP() << "shared data not found: " << (::voxinfer::test::shared_dir() / (rel)).string() \
                   << " (set VOXINFER_SHARED_DIR to run this test)";                                  \
  } while (0)
