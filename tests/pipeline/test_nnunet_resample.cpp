// nnU-Net v2's resampling against the real thing: fixtures written by scipy 1.10.1 and
// scikit-image 0.19.3 (tests/data/nnunet_resample/make_fixtures.py), results independent of
// the thread count, and the separate-z and new-shape rules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/pipeline/nnunet_resample.h"

namespace voxinfer::nnunet {
namespace {

using Index3 = std::array<std::int64_t, 3>;

struct FixtureCase {
  std::string name;
  bool is_seg = false;
  SeparateZ sep;
  int order = 3, order_z = 0;
  bool f16 = false;
  Index3 shape{};
};

std::filesystem::path fixture_dir() {
  return test::test_data_dir() / "nnunet_resample";
}

// cases.txt: "name is_seg separate axis order order_z round_to_f16 n0 n1 n2" per line.
std::vector<FixtureCase> fixture_cases() {
  std::ifstream in(fixture_dir() / "cases.txt");
  std::vector<FixtureCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    FixtureCase c;
    int is_seg = 0, separate = 0, f16 = 0;
    ss >> c.name >> is_seg >> separate >> c.sep.axis >> c.order >> c.order_z >> f16 >> c.shape[0] >> c.shape[1] >>
        c.shape[2];
    if (!ss) ADD_FAILURE() << "bad line in cases.txt: " << line;
    c.is_seg = is_seg != 0;
    c.sep.separate = separate != 0;
    c.f16 = f16 != 0;
    cases.push_back(c);
  }
  return cases;
}

// nnU-Net computes in float64 and stores float32 (float16 for logits). Our float64 results
// differ from scipy's by summation order only (~1e-15 relative), so the stored values differ
// by at most one float32 rounding step, 2^-24 of the largest magnitude; 1e-5 of it leaves room
// without hiding a wrong coordinate, weight or boundary (those show up as 1e-2 and more).
// Labels must match exactly (any difference is at least 1).
constexpr double kRelTol = 1e-5;

TEST(NnunetResample, MatchesScipyAndSkimageFixtures) {
  const std::vector<FixtureCase> cases = fixture_cases();
  ASSERT_GE(cases.size(), 30u) << "fixtures missing in " << fixture_dir();
  for (const FixtureCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Tensor in = read_npy((fixture_dir() / (c.name + "_in.npy")).string());
    const Tensor ref = read_npy((fixture_dir() / (c.name + "_out.npy")).string());
    const Tensor out = resample_data_or_seg(in, c.shape, c.is_seg, c.sep, c.order, c.order_z, c.f16);
    ASSERT_EQ(out.shape(), ref.shape());
    const double diff = test::max_abs_diff(out, ref), top = test::max_abs(ref);
    std::int64_t differ = 0;
    for (std::int64_t i = 0; i < out.numel(); ++i) differ += out.data<float>()[i] != ref.data<float>()[i];
    std::printf("  %-22s max|diff| %.3g  max|ref| %.5g  differing values %lld of %lld\n", c.name.c_str(), diff, top,
                static_cast<long long>(differ), static_cast<long long>(out.numel()));
    if (c.is_seg) {
      EXPECT_EQ(differ, 0);
    } else {
      EXPECT_LE(diff, kRelTol * std::max(1.0, top));
    }
  }
}

TEST(NnunetResample, HalfRoundingIsStraightFromFloat64) {
  // 0.75 * 1 + 0.25 * b = 1 + 2^-11 + 2^-25 lies just above the half-way point between the
  // halves 1 and 1 + 2^-10; rounding through float32 would land on it and go to even (1).
  const float b = 1.0f + 0x1p-9f + 0x1p-23f;
  const Tensor in = Tensor::from_vector<float>(Shape{1, 1, 1, 2}, {1.0f, b});
  const Tensor out = resample_data_or_seg(in, {1, 1, 4}, false, {}, 1, 0, true);
  EXPECT_EQ(out.data<float>()[1], 1.0f + 0x1p-10f);
  EXPECT_EQ(out.data<float>()[0], 1.0f);
}

TEST(NnunetResample, IdentityShapeCopies) {
  const Tensor in = test::random_tensor(Shape{2, 3, 4, 5}, 7, -5.f, 5.f);
  const Tensor out = resample_data_or_seg(in, {3, 4, 5}, false, {}, 3, 0);
  EXPECT_EQ(test::max_abs_diff(in, out), 0.0);
  EXPECT_FALSE(out.shares_storage_with(in));
}

// Every configuration is computed with 1 thread and compared bitwise with other counts. The
// shapes give several lane blocks and plane chunks, and both orders of the axis-0 pass.
TEST(NnunetResample, BitwiseIdenticalForAnyThreadCount) {
  struct Config {
    Index3 shape;
    bool is_seg;
    SeparateZ sep;
    int order, order_z;
    bool f16;
  };
  const std::vector<Config> configs = {
      {{9, 71, 23}, false, {}, 3, 0, false},   // axis 0 down, in-plane mixed
      {{29, 20, 50}, false, {}, 3, 0, false},  // axis 0 up first
      {{30, 55, 61}, false, {}, 1, 0, true},   // logits
      {{11, 40, 37}, false, {}, 5, 0, false},       {{25, 31, 29}, false, {true, 0}, 3, 1, false},
      {{12, 9, 44}, false, {true, 1}, 3, 1, false}, {{21, 52, 30}, false, {true, 2}, 1, 0, false},
      {{23, 33, 41}, true, {}, 1, 0, false},        {{23, 33, 41}, true, {true, 0}, 1, 1, false},
  };
  Tensor data = test::random_tensor(Shape{2, 17, 40, 37}, 11, -200.f, 200.f);
  // Few distinct values, for the label paths.
  Tensor labels(Shape{2, 17, 40, 37}, DType::f32);
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels.data<float>()[i] = std::floor((data.data<float>()[i] + 200.f) / 100.f);
  for (const Config& c : configs) {
    SCOPED_TRACE(testing::Message() << "shape " << c.shape[0] << "x" << c.shape[1] << "x" << c.shape[2] << " seg "
                                    << c.is_seg << " separate " << c.sep.separate << " axis " << c.sep.axis << " order "
                                    << c.order << " order_z " << c.order_z);
    const Tensor& in = c.is_seg ? labels : data;
    set_num_threads(1);
    const Tensor ref = resample_data_or_seg(in, c.shape, c.is_seg, c.sep, c.order, c.order_z, c.f16);
    for (int threads : {2, 3, 5, 8}) {
      set_num_threads(threads);
      const Tensor out = resample_data_or_seg(in, c.shape, c.is_seg, c.sep, c.order, c.order_z, c.f16);
      EXPECT_EQ(std::memcmp(out.raw(), ref.raw(), ref.nbytes()), 0) << threads << " threads";
    }
  }
  set_num_threads(0);
}

// Slabs of output planes put together equal the whole result bit for bit, whatever the slab size.
TEST(NnunetResample, SlabsAlongAxis0EqualTheWholeResult) {
  struct Config {
    Index3 shape;
    SeparateZ sep;
    int order, order_z;
    bool f16;
  };
  const std::vector<Config> configs = {
      {{29, 20, 50}, {}, 1, 0, true},                                           // axis 0 pass first
      {{9, 71, 23}, {}, 1, 0, false},                                           // in-plane passes first
      {{9, 40, 37}, {}, 0, 0, false},         {{17, 33, 20}, {}, 3, 0, false},  // axis 0 keeps its size: any order
      {{25, 31, 29}, {true, 0}, 3, 0, false},  // 2D cubic per slice, nearest along axis 0
      {{25, 31, 29}, {true, 0}, 3, 1, true},  {{8, 40, 37}, {true, 0}, 3, 1, false},
      {{12, 9, 44}, {true, 1}, 1, 3, false},  {{21, 52, 30}, {true, 2}, 1, 0, false},
      {{17, 40, 37}, {}, 3, 0, false},  // identical shape
  };
  const Tensor data = test::random_tensor(Shape{2, 17, 40, 37}, 13, -200.f, 200.f);
  for (const Config& c : configs) {
    SCOPED_TRACE(testing::Message() << "shape " << c.shape[0] << "x" << c.shape[1] << "x" << c.shape[2] << " separate "
                                    << c.sep.separate << " axis " << c.sep.axis << " order " << c.order << " order_z "
                                    << c.order_z);
    const Tensor whole = resample_data_or_seg(data, c.shape, false, c.sep, c.order, c.order_z, c.f16);
    const std::int64_t plane = c.shape[1] * c.shape[2];
    for (std::int64_t slab : {1, 3, 7, 100}) {
      Tensor joined(whole.shape(), DType::f32);
      std::int64_t next = 0;
      resample_data_in_slabs(data, c.shape, c.sep, c.order, c.order_z, c.f16, slab,
                             [&](std::int64_t first, const Tensor& part) {
                               EXPECT_EQ(first, next);
                               const std::int64_t count = part.dim(1);
                               EXPECT_LE(count, slab);
                               next = first + count;
                               for (std::int64_t ch = 0; ch < part.dim(0); ++ch)
                                 std::memcpy(joined.data<float>() + (ch * c.shape[0] + first) * plane,
                                             part.data<float>() + ch * count * plane,
                                             static_cast<std::size_t>(count * plane) * sizeof(float));
                             });
      EXPECT_EQ(next, c.shape[0]);
      EXPECT_EQ(std::memcmp(joined.raw(), whole.raw(), whole.nbytes()), 0) << "slabs of " << slab;
    }
  }
  EXPECT_TRUE(can_stream_planes({}, 1, 3));
  EXPECT_TRUE(can_stream_planes({true, 0}, 3, 1));
  EXPECT_FALSE(can_stream_planes({}, 3, 0));
  EXPECT_FALSE(can_stream_planes({true, 0}, 1, 3));
  try {
    resample_data_in_slabs(data, {9, 20, 20}, {}, 3, 0, false, 4, [](std::int64_t, const Tensor&) {});
    ADD_FAILURE() << "order 3 along axis 0 cannot stream";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
  }
}

TEST(NnunetResample, DecideSeparateZ) {
  auto check = [](std::optional<bool> force, std::array<double, 3> cur, std::array<double, 3> next, bool separate,
                  int axis) {
    const SeparateZ s = decide_separate_z(force, cur, next);
    EXPECT_EQ(s.separate, separate) << cur[0] << " " << cur[1] << " " << cur[2];
    if (separate) {
      EXPECT_EQ(s.axis, axis);
    }
  };
  check(std::nullopt, {1, 1, 1}, {1.5, 1.5, 1.5}, false, -1);
  check(std::nullopt, {5, 0.8, 0.8}, {1, 1, 1}, true, 0);
  check(std::nullopt, {0.8, 5, 0.8}, {1, 1, 1}, true, 1);
  check(std::nullopt, {0.8, 0.8, 5}, {1, 1, 1}, true, 2);
  // The ratio must exceed the threshold.
  check(std::nullopt, {3, 1, 1}, {1, 1, 1}, false, -1);
  check(std::nullopt, {3.01, 1, 1}, {1, 1, 1}, true, 0);
  // The current spacing is isotropic: the target decides.
  check(std::nullopt, {1, 1, 1}, {4, 1, 1}, true, 0);
  // Current decides before target.
  check(std::nullopt, {0.5, 0.5, 2}, {4, 1, 1}, true, 2);
  // Two axes tie for the largest spacing: no separate z, even forced.
  check(std::nullopt, {0.24, 1.25, 1.25}, {0.24, 1.25, 1.25}, false, -1);
  check(true, {0.24, 1.25, 1.25}, {1, 1, 1}, false, -1);
  check(true, {1, 1, 1}, {1, 1, 1}, false, -1);
  // Forced: the largest current spacing, whatever the ratio; forced off wins over anisotropy.
  check(true, {1, 1, 2}, {1, 1, 1}, true, 2);
  check(false, {5, 1, 1}, {5, 1, 1}, false, -1);
  // Another threshold.
  check(std::nullopt, {2.5, 1, 1}, {1, 1, 1}, false, -1);
  EXPECT_TRUE(decide_separate_z(std::nullopt, {2.5, 1, 1}, {1, 1, 1}, 2.0).separate);
  EXPECT_THROW(decide_separate_z(std::nullopt, {0, 1, 1}, {1, 1, 1}), Error);
}

TEST(NnunetResample, ComputeNewShape) {
  // Values checked against Python: int(round(spacing / new_spacing * shape)).
  EXPECT_EQ(compute_new_shape({100, 200, 301}, {2.5, 0.7, 0.7}, {1.5, 0.8, 0.8}), (Index3{167, 175, 263}));
  // Halves go to even.
  EXPECT_EQ(compute_new_shape({5, 7, 9}, {1, 1, 1}, {2, 2, 2}), (Index3{2, 4, 4}));
  EXPECT_EQ(compute_new_shape({300, 512, 512}, {1, 0.78125, 0.78125}, {3, 1.5, 1.5}), (Index3{100, 267, 267}));
  EXPECT_EQ(compute_new_shape({3, 10, 10}, {0.1, 0.3, 0.7}, {0.3, 0.3, 0.3}), (Index3{1, 10, 23}));
}

TEST(NnunetResample, RejectsBadArguments) {
  const Tensor in = test::random_tensor(Shape{1, 4, 5, 6}, 3);
  auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::internal;
  };
  EXPECT_EQ(code_of([&] {
              resample_data_or_seg(in.reshape(Shape{4, 5, 6}), {2, 2, 2}, false, {}, 3, 0);
            }),
            ErrorCode::invalid_input);
  EXPECT_EQ(code_of([&] { resample_data_or_seg(in, {2, 2, 2}, false, {}, 6, 0); }), ErrorCode::invalid_input);
  EXPECT_EQ(code_of([&] { resample_data_or_seg(in, {2, 2, 2}, false, {true, 3}, 3, 0); }), ErrorCode::invalid_input);
  EXPECT_EQ(code_of([&] { resample_data_or_seg(in, {0, 2, 2}, false, {}, 3, 0); }), ErrorCode::invalid_input);
  EXPECT_EQ(code_of([&] {
              resample_data_or_seg(Tensor(Shape{1, 4, 5, 6}, DType::f64), {2, 2, 2}, false, {}, 3, 0);
            }),
            ErrorCode::invalid_input);
}

}  // namespace
}  // namespace voxinfer::nnunet
