#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/pipeline/sliding_window.h"

namespace voxinfer {
namespace {

using Starts = std::vector<std::int64_t>;

// A pointwise "network": K = 2 channels from channel 0: 2x + 1 and sin(x) + 0.25 * c1.
Tensor pointwise(const Tensor& x) {
  const std::int64_t b = x.dim(0), c = x.dim(1), r = x.dim(2) * x.dim(3) * x.dim(4);
  Tensor y(Shape{b, 2, x.dim(2), x.dim(3), x.dim(4)}, DType::f32);
  for (std::int64_t n = 0; n < b; ++n)
    for (std::int64_t i = 0; i < r; ++i) {
      const float v = x.data<float>()[(n * c) * r + i];
      const float w = c > 1 ? x.data<float>()[(n * c + 1) * r + i] : 0.f;
      y.data<float>()[(n * 2) * r + i] = 2 * v + 1;
      y.data<float>()[(n * 2 + 1) * r + i] = std::sin(v) + 0.25f * w;
    }
  return y;
}

// A network that looks at neighbours: channel 0 = 3x3x3 box sum inside the tile (zero
// outside), channel 1 = x^2, channel 2 = x at the mirrored position along axis 2 plus
// 0.1 * the tile-local index along axis 0 (neither translation nor flip invariant).
// Channels 0 and 1 are flip-equivariant.
Tensor neighbourly(const Tensor& x, int channels = 3) {
  const std::int64_t b = x.dim(0), c = x.dim(1), r0 = x.dim(2), r1 = x.dim(3), r2 = x.dim(4);
  Tensor y(Shape{b, channels, r0, r1, r2}, DType::f32);
  auto in = [&](std::int64_t n, std::int64_t i, std::int64_t j, std::int64_t l) {
    if (i < 0 || j < 0 || l < 0 || i >= r0 || j >= r1 || l >= r2) return 0.f;
    return x.data<float>()[(((n * c) * r0 + i) * r1 + j) * r2 + l];
  };
  for (std::int64_t n = 0; n < b; ++n)
    for (std::int64_t i = 0; i < r0; ++i)
      for (std::int64_t j = 0; j < r1; ++j)
        for (std::int64_t l = 0; l < r2; ++l) {
          float s = 0;
          for (int di = -1; di <= 1; ++di)
            for (int dj = -1; dj <= 1; ++dj)
              for (int dl = -1; dl <= 1; ++dl) s += in(n, i + di, j + dj, l + dl);
          const float v = in(n, i, j, l);
          y.at<float>(n, 0, i, j, l) = s;
          y.at<float>(n, 1, i, j, l) = v * v;
          if (channels > 2) y.at<float>(n, 2, i, j, l) = in(n, i, j, r2 - 1 - l) + 0.1f * float(i);
        }
  return y;
}

SlidingWindowOptions options(Size3 roi, double overlap, BlendMode blend = BlendMode::gaussian,
                             WindowStyle style = WindowStyle::nnunet) {
  SlidingWindowOptions o;
  o.roi_size = roi;
  o.overlap = {overlap, overlap, overlap};
  o.blend = blend;
  o.style = style;
  return o;
}

void expect_near_rel(const Tensor& a, const Tensor& b, double rel) {
  ASSERT_EQ(a.shape(), b.shape());
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<float>()[i], y = b.data<float>()[i];
    ASSERT_NEAR(x, y, rel * std::max(1.0, std::abs(y))) << "element " << i;
  }
}

void expect_equal(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  for (std::int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << "element " << i;
}

TEST(TileStarts, NnunetHandComputed) {
  // size 200, roi 96, overlap 0.5: step 48, n = ceil(104 / 48) + 1 = 4, spread 104 / 3.
  EXPECT_EQ(tile_starts(200, 96, 0.5, WindowStyle::nnunet), (Starts{0, 35, 69, 104}));
  EXPECT_EQ(tile_starts(96, 96, 0.5, WindowStyle::nnunet), (Starts{0}));
  EXPECT_EQ(tile_starts(100, 64, 0.5, WindowStyle::nnunet), (Starts{0, 18, 36}));
  // n = ceil(5 / 2) + 1 = 4, spread 5 / 3: 0, 1.67, 3.33, 5.
  EXPECT_EQ(tile_starts(13, 8, 0.75, WindowStyle::nnunet), (Starts{0, 2, 3, 5}));
  // 2.5 rounds to even (np.round), not up.
  EXPECT_EQ(tile_starts(12, 7, 0.5, WindowStyle::nnunet), (Starts{0, 2, 5}));
  // overlap 0: ceil(104 / 96) + 1 = 3 tiles.
  EXPECT_EQ(tile_starts(200, 96, 0.0, WindowStyle::nnunet), (Starts{0, 52, 104}));
  // 5 * (1 - 0.8) = 0.9999999999999998 in doubles: n = 5 over 3 voxels, as in Python.
  EXPECT_EQ(tile_starts(8, 5, 0.8, WindowStyle::nnunet), (Starts{0, 1, 2, 2, 3}));
}

TEST(TileStarts, NnunetCountMatchesThePublishedFormula) {
  for (std::int64_t roi : {5, 16, 33, 96})
    for (double ov : {0.0, 0.25, 0.5, 0.6, 0.8})
      for (std::int64_t size = roi; size < roi * 4 + 7; size += 3) {
        const Starts s = tile_starts(size, roi, ov, WindowStyle::nnunet);
        const auto n = static_cast<std::size_t>(std::ceil(double(size - roi) / (double(roi) * (1 - ov)))) + 1;
        ASSERT_EQ(s.size(), n) << size << " " << roi << " " << ov;
        EXPECT_EQ(s.front(), 0);
        EXPECT_EQ(s.back(), size - roi);
        for (std::size_t i = 1; i < s.size(); ++i) {
          // Non-decreasing: with tiny float steps (5 * (1 - 0.8) < 1) nnU-Net repeats a start too.
          ASSERT_GE(s[i], s[i - 1]);
          ASSERT_LE(s[i] - s[i - 1], roi);  // no gaps
        }
      }
}

// An overlap just below 1 (0.9999 is inside [0, 1)) would make the tile count explode; it is
// refused with a message that says how far the overlap may go.
TEST(TileStarts, OverlapThatMovesTilesByLessThanAVoxelIsRefused) {
  for (const auto style : {WindowStyle::nnunet, WindowStyle::monai}) {
    try {
      tile_starts(512, 96, 0.9999, style);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_input);
      EXPECT_NE(std::string(e.what()).find("at most 0.98"), std::string::npos) << e.what();
    }
    EXPECT_EQ(tile_starts(96, 96, 0.9999, style), (Starts{0}));  // one tile: the step does not matter
    EXPECT_GE(tile_starts(100, 96, 0.98, style).size(), 3u);
  }
}

TEST(TileStarts, MonaiHandComputed) {
  // interval 48: 0, 48, 96, then 144 moved back to 200 - 96.
  EXPECT_EQ(tile_starts(200, 96, 0.5, WindowStyle::monai), (Starts{0, 48, 96, 104}));
  // interval int(96 * 0.75) = 72.
  EXPECT_EQ(tile_starts(200, 96, 0.25, WindowStyle::monai), (Starts{0, 72, 104}));
  // interval int(96 * 0.4) = int(38.400000000000006) = 38.
  EXPECT_EQ(tile_starts(150, 96, 0.6, WindowStyle::monai), (Starts{0, 38, 54}));
  EXPECT_EQ(tile_starts(96, 96, 0.5, WindowStyle::monai), (Starts{0}));
  EXPECT_THROW(tile_starts(10, 12, 0.5, WindowStyle::monai), Error);
}

TEST(ImportanceMap, NnunetMatchesTheFormula) {
  const Size3 roi{8, 6, 5};
  const Tensor m = importance_map(roi, BlendMode::gaussian, 0.125, WindowStyle::nnunet);
  ASSERT_EQ(m.shape(), (Shape{8, 6, 5}));
  for (std::int64_t i = 0; i < 8; ++i)
    for (std::int64_t j = 0; j < 6; ++j)
      for (std::int64_t l = 0; l < 5; ++l) {
        // centre r / 2 = (4, 3, 2), sigma = r / 8 = (1, 0.75, 0.625); nothing truncated here.
        const double e = std::exp(-(i - 4.0) * (i - 4.0) / (2 * 1.0)) * std::exp(-(j - 3.0) * (j - 3.0) / (2 * 0.5625)) *
                         std::exp(-(l - 2.0) * (l - 2.0) / (2 * 0.390625));
        ASSERT_NEAR(m.at<float>(i, j, l), e, 1e-6 * e + 1e-12) << i << "," << j << "," << l;
      }
  EXPECT_EQ(m.at<float>(4, 3, 2), 1.f);
}

TEST(ImportanceMap, NnunetTruncationIsReplacedByTheSmallestValue) {
  // sigma = 20 * 0.05 = 1, scipy's radius int(4 + 0.5) = 4 around centre 10.
  const Tensor m = importance_map({20, 1, 1}, BlendMode::gaussian, 0.05, WindowStyle::nnunet);
  const double smallest = std::exp(-16.0 / 2);
  for (std::int64_t i = 0; i < 20; ++i) {
    const double d = double(i - 10);
    const double e = std::abs(d) <= 4 ? std::exp(-d * d / 2) : smallest;
    EXPECT_NEAR(m.at<float>(i, 0, 0), e, 1e-6 * e) << i;
  }
}

TEST(ImportanceMap, MonaiMatchesTheFormula) {
  const Size3 roi{5, 4, 3};
  const Tensor m = importance_map(roi, BlendMode::gaussian, 0.125, WindowStyle::monai);
  // centre (r - 1) / 2, sigma r / 8, then clamped below at max(min, 1e-3).
  double mn = 1e9;
  auto raw = [&](std::int64_t i, std::int64_t j, std::int64_t l) {
    const double s0 = 0.625, s1 = 0.5, s2 = 0.375;
    const double x = i - 2.0, y = j - 1.5, z = l - 1.0;
    return std::exp(-x * x / (2 * s0 * s0)) * std::exp(-y * y / (2 * s1 * s1)) * std::exp(-z * z / (2 * s2 * s2));
  };
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t j = 0; j < 4; ++j)
      for (std::int64_t l = 0; l < 3; ++l) mn = std::min(mn, raw(i, j, l));
  const double floor_value = std::max(mn, 1e-3);
  int clamped = 0;
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t j = 0; j < 4; ++j)
      for (std::int64_t l = 0; l < 3; ++l) {
        const double e = std::max(raw(i, j, l), floor_value);
        clamped += raw(i, j, l) < floor_value;
        ASSERT_NEAR(m.at<float>(i, j, l), e, 1e-6 * e) << i << "," << j << "," << l;
      }
  EXPECT_GT(clamped, 0);
  const Tensor c = importance_map(roi, BlendMode::constant, 0.125, WindowStyle::monai);
  for (std::int64_t i = 0; i < c.numel(); ++i) EXPECT_EQ(c.data<float>()[i], 1.f);
}

TEST(SlidingWindow, RoiCoveringTheVolumeIsOneDirectRun) {
  const Tensor img = test::random_tensor(Shape{2, 5, 6, 7}, 21);
  const Size3 roi{8, 6, 10};
  // Direct: pad symmetrically (odd voxel after), run once, crop.
  Tensor padded(Shape{1, 2, 8, 6, 10}, DType::f32);
  for (std::int64_t c = 0; c < 2; ++c)
    for (std::int64_t z = 0; z < 5; ++z)
      for (std::int64_t y = 0; y < 6; ++y)
        for (std::int64_t x = 0; x < 7; ++x) padded.at<float>(0, c, z + 1, y, x + 1) = img.at<float>(c, z, y, x);
  const Tensor direct = neighbourly(padded);
  for (auto style : {WindowStyle::nnunet, WindowStyle::monai}) {
    int calls = 0;
    SlidingWindowStats stats;
    const Tensor out = sliding_window(img, options(roi, 0.5, BlendMode::gaussian, style), [&](const Tensor& x) {
      ++calls;
      return neighbourly(x);
    }, &stats);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(stats.tiles, 1);
    ASSERT_EQ(out.shape(), (Shape{3, 5, 6, 7}));
    for (std::int64_t k = 0; k < 3; ++k)
      for (std::int64_t z = 0; z < 5; ++z)
        for (std::int64_t y = 0; y < 6; ++y)
          for (std::int64_t x = 0; x < 7; ++x) {
            const float e = direct.at<float>(0, k, z + 1, y, x + 1);
            ASSERT_NEAR(out.at<float>(k, z, y, x), e, 1e-6 * std::max(1.f, std::abs(e)));
          }
  }
}

TEST(SlidingWindow, PointwiseNetworkGivesThePointwiseFunction) {
  const Tensor img = test::random_tensor(Shape{2, 40, 33, 29}, 5, -3.f, 3.f);
  const Tensor expected = pointwise(img.reshape(Shape{1, 2, 40, 33, 29})).reshape(Shape{2, 40, 33, 29});
  for (auto style : {WindowStyle::nnunet, WindowStyle::monai})
    for (auto blend : {BlendMode::gaussian, BlendMode::constant}) {
      SlidingWindowOptions o = options({16, 12, 10}, 0.5, blend, style);
      o.batch = 3;
      SlidingWindowStats stats;
      const Tensor out = sliding_window(img, o, pointwise, &stats);
      expect_near_rel(out, expected, 2e-6);
      EXPECT_GT(stats.tiles, 20);
    }
}

TEST(SlidingWindow, MirrorTtaOfAFlipEquivariantNetworkChangesNothing) {
  const Tensor img = test::random_tensor(Shape{1, 21, 17, 15}, 8);
  auto net = [](const Tensor& x) { return neighbourly(x, 2); };
  SlidingWindowOptions o = options({10, 8, 9}, 0.5);
  SlidingWindowStats plain_stats, tta_stats;
  const Tensor plain = sliding_window(img, o, net, &plain_stats);
  o.mirror_axes = {0, 1, 2};
  const Tensor tta = sliding_window(img, o, net, &tta_stats);
  expect_near_rel(tta, plain, 1e-5);
  EXPECT_EQ(tta_stats.network_calls, 8 * plain_stats.network_calls);
}

TEST(SlidingWindow, MirrorTtaAveragesTheFlippedPredictions) {
  // One tile; the network adds the tile-local index along axis 0. Mirroring axis 0 adds
  // r0 - 1 - i instead, so the average adds (r0 - 1) / 2 everywhere.
  const Tensor img = test::random_tensor(Shape{1, 6, 4, 5}, 3);
  auto net = [](const Tensor& x) {
    Tensor y = x.clone();
    for (std::int64_t i = 0; i < x.dim(2); ++i)
      for (std::int64_t j = 0; j < x.dim(3); ++j)
        for (std::int64_t l = 0; l < x.dim(4); ++l) y.at<float>(0, 0, i, j, l) += float(i);
    return y;
  };
  SlidingWindowOptions o = options({6, 4, 5}, 0.5);
  o.mirror_axes = {0};
  const Tensor out = sliding_window(img, o, net);
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = 0; j < 4; ++j)
      for (std::int64_t l = 0; l < 5; ++l) ASSERT_NEAR(out.at<float>(0, i, j, l), img.at<float>(0, i, j, l) + 2.5f, 1e-5);
}

TEST(SlidingWindow, StreamingEqualsWholeVolume) {
  struct Case {
    Shape image;
    Size3 roi;
    std::array<double, 3> overlap;
    std::int64_t batch;
    std::vector<int> mirror;
    WindowStyle style;
  };
  const std::vector<Case> cases = {
      {Shape{2, 50, 20, 18}, {12, 10, 9}, {0.5, 0.25, 0.6}, 5, {1}, WindowStyle::nnunet},
      {Shape{1, 37, 11, 13}, {8, 11, 6}, {0.5, 0.5, 0.5}, 1, {}, WindowStyle::monai},
      {Shape{1, 7, 30, 25}, {10, 8, 8}, {0.5, 0.5, 0.5}, 4, {0, 2}, WindowStyle::nnunet},  // padded along axis 0
      {Shape{1, 64, 9, 9}, {9, 9, 9}, {0.75, 0.5, 0.5}, 2, {}, WindowStyle::nnunet},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.image.str());
    const Tensor img = test::random_tensor(tc.image, 17);
    SlidingWindowOptions o = options(tc.roi, 0.5, BlendMode::gaussian, tc.style);
    o.overlap = tc.overlap;
    o.batch = tc.batch;
    o.mirror_axes = tc.mirror;
    auto net = [](const Tensor& x) { return neighbourly(x); };
    SlidingWindowStats whole_stats, stream_stats;
    const Tensor whole = sliding_window(img, o, net, &whole_stats);
    Tensor assembled(whole.shape(), DType::f32);
    std::int64_t next = 0;
    sliding_window_stream(img, o, net, [&](const Tensor& slab, std::int64_t begin) {
      ASSERT_EQ(begin, next) << "slabs must arrive in order, each plane once";
      ASSERT_EQ(slab.dim(0), whole.dim(0));
      ASSERT_EQ(slab.dim(2), whole.dim(2));
      ASSERT_EQ(slab.dim(3), whole.dim(3));
      const std::int64_t plane = whole.dim(2) * whole.dim(3);
      for (std::int64_t k = 0; k < slab.dim(0); ++k)
        std::memcpy(assembled.data<float>() + (k * whole.dim(1) + begin) * plane,
                    slab.data<float>() + k * slab.dim(1) * plane, static_cast<std::size_t>(slab.dim(1) * plane) * 4);
      next = begin + slab.dim(1);
    }, &stream_stats);
    EXPECT_EQ(next, whole.dim(1));
    expect_equal(assembled, whole);
    EXPECT_EQ(stream_stats.tiles, whole_stats.tiles);
    EXPECT_LE(stream_stats.measured_peak_bytes, stream_stats.predicted_peak_bytes);
    EXPECT_LE(whole_stats.measured_peak_bytes, whole_stats.predicted_peak_bytes);
    EXPECT_GT(stream_stats.measured_peak_bytes, 0u);
  }
}

TEST(SlidingWindow, StreamingMemoryFollowsTheSlab) {
  // A long volume: the ring holds one roi of planes, the whole mode K x volume.
  SlidingWindowOptions o = options({16, 16, 16}, 0.5);
  const SlidingWindowPlan plan = plan_sliding_window({400, 64, 64}, o);
  EXPECT_EQ(plan.ring_planes, 16);
  EXPECT_EQ(plan.max_slab_planes, 16);  // the last slab is a whole tile
  const std::size_t stream = predicted_peak_bytes(plan, 1, 3, true);
  const std::size_t whole = predicted_peak_bytes(plan, 1, 3, false);
  // Accumulator + weights (4 x 16 planes), slab (3 x 16 planes), importance map, batch in/out.
  const std::size_t plane = 64 * 64 * 4, tile = 16 * 16 * 16 * 4;
  EXPECT_EQ(stream, 4 * 16 * plane + 3 * 16 * plane + tile + 4 * tile);
  EXPECT_EQ(whole, 4 * 400 * plane + 3 * 400 * plane + tile + 4 * tile);
  // A batch spanning several axis-0 starts widens the ring.
  o.batch = 40;  // 7 x 7 tiles per plane group: 40 tiles reach into the next group
  EXPECT_EQ(plan_sliding_window({400, 64, 64}, o).ring_planes, 24);
}

TEST(SlidingWindow, IndependentOfThreadCount) {
  const Tensor img = test::random_tensor(Shape{1, 30, 22, 19}, 4);
  SlidingWindowOptions o = options({12, 10, 8}, 0.5);
  o.mirror_axes = {2};
  o.batch = 2;
  auto net = [](const Tensor& x) { return neighbourly(x); };
  set_num_threads(1);
  const Tensor a = sliding_window(img, o, net);
  set_num_threads(3);
  const Tensor b = sliding_window(img, o, net);
  set_num_threads(0);
  expect_equal(a, b);
}

TEST(SlidingWindow, ProgressAndBadNetworkOutput) {
  const Tensor img = test::random_tensor(Shape{1, 20, 10, 10}, 4);
  SlidingWindowOptions o = options({10, 10, 10}, 0.5);
  std::vector<std::int64_t> done;
  o.progress = [&](std::int64_t d, std::int64_t total) {
    EXPECT_EQ(total, 3);
    done.push_back(d);
  };
  (void)sliding_window(img, o, pointwise);
  EXPECT_EQ(done, (std::vector<std::int64_t>{1, 2, 3}));
  o.progress = nullptr;
  try {
    (void)sliding_window(img, o, [](const Tensor& x) { return Tensor(Shape{x.dim(0), 2, 10, 10, 9}, DType::f32); });
    ADD_FAILURE() << "a wrong output shape was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("[1,2,10,10,9]"), std::string::npos) << e.what();
  }
  int calls = 0;
  EXPECT_THROW((void)sliding_window(img, o, [&](const Tensor& x) { return pointwise(x).slice(1, 0, ++calls); }), Error);
  o.roi_size = {0, 10, 10};
  EXPECT_THROW((void)sliding_window(img, o, pointwise), Error);
}

TEST(FlipSpatial, ReversesTheFlaggedAxes) {
  const Tensor t = test::random_tensor(Shape{2, 1, 3, 4, 5}, 1);
  const Tensor f = flip_spatial(t, {true, false, true});
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t i = 0; i < 3; ++i)
      for (std::int64_t j = 0; j < 4; ++j)
        for (std::int64_t l = 0; l < 5; ++l) ASSERT_EQ(f.at<float>(n, 0, i, j, l), t.at<float>(n, 0, 2 - i, j, 4 - l));
}

// An image smaller than the tile is padded as MONAI's SlidingWindowInferer pads it
// (symmetrically, the extra voxel at the end), with cval or the edge voxels (padding_mode
// "replicate"). The network returns its tile's mean everywhere, so the output is the padded
// tile's mean. Expected values: torch.nn.functional.pad(t, (1, 1, 1, 1, 0, 1), mode=
// "replicate" | "constant", value=-7).mean() for t = arange(12).reshape(1, 1, 3, 2, 2) * 1.5 - 4
// (torch 1.13).
TEST(SlidingWindow, PaddingWithCvalOrTheEdgeAsMonai) {
  Tensor img(Shape{1, 3, 2, 2}, DType::f32);
  for (std::int64_t i = 0; i < 12; ++i) img.data<float>()[i] = static_cast<float>(i) * 1.5f - 4.f;
  auto mean_net = [](const Tensor& x) {
    Tensor out(x.shape(), DType::f32);
    const std::int64_t per = x.numel() / x.dim(0);
    for (std::int64_t b = 0; b < x.dim(0); ++b) {
      double sum = 0;
      for (std::int64_t i = 0; i < per; ++i) sum += x.data<float>()[b * per + i];
      std::fill_n(out.data<float>() + b * per, per, static_cast<float>(sum / static_cast<double>(per)));
    }
    return out;
  };
  for (const bool replicate : {true, false}) {
    SlidingWindowOptions o = options({4, 4, 4}, 0.25, BlendMode::constant, WindowStyle::monai);
    o.pad_replicate = replicate;
    o.pad_value = -7.f;
    const Tensor out = sliding_window(img, o, mean_net);
    ASSERT_EQ(out.shape(), img.shape());
    for (std::int64_t i = 0; i < 12; ++i) EXPECT_FLOAT_EQ(out.data<float>()[i], replicate ? 5.75f : -4.890625f) << i;
  }
}

}  // namespace
}  // namespace voxinfer
