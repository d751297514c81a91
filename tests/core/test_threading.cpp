#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "voxinfer/core/threading.h"

namespace voxinfer {
namespace {

float float_sum(const std::vector<float>& v) {
  return parallel_reduce<float>(static_cast<std::int64_t>(v.size()), 1000, 0.f,
                                [&](std::int64_t b, std::int64_t e) {
                                  float s = 0;
                                  for (std::int64_t i = b; i < e; ++i) s += v[static_cast<std::size_t>(i)];
                                  return s;
                                },
                                [](float a, float b) { return a + b; });
}

TEST(Threading, ReductionIsBitwiseIndependentOfThreadCount) {
  std::vector<float> v(1'000'003);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-1e3f, 1e3f);
  for (auto& x : v) x = d(rng);
  set_num_threads(1);
  const float s1 = float_sum(v);
  for (int t : {2, 3, 4, 7}) {
    set_num_threads(t);
    EXPECT_EQ(num_threads(), t);
    const float st = float_sum(v);
    EXPECT_EQ(std::memcmp(&s1, &st, sizeof s1), 0) << "threads=" << t;
  }
  set_num_threads(0);
}

TEST(Threading, ParallelForCoversEveryIndexOnce) {
  for (int t : {1, 2, 5}) {
    set_num_threads(t);
    std::vector<std::atomic<int>> hits(1001);
    parallel_for(1001, 17, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    std::vector<std::atomic<int>> hits2(37);
    parallel_for_threads(37, [&](int, std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) hits2[static_cast<std::size_t>(i)]++;
    });
    for (auto& h : hits2) ASSERT_EQ(h.load(), 1);
  }
  set_num_threads(0);
}

TEST(Threading, Balance211) {
  std::int64_t b = 0, e = 0;
  balance211(10, 3, 0, b, e);
  EXPECT_EQ(b, 0);
  EXPECT_EQ(e, 4);
  balance211(10, 3, 2, b, e);
  EXPECT_EQ(b, 7);
  EXPECT_EQ(e, 10);
}

}  // namespace
}  // namespace voxinfer
