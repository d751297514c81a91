// The general package steps brainchop's pipeline is made of: quantile normalisation, the
// threshold mask and its crop, whole-volume inference, the largest foreground component,
// and their pipeline.json fields.
#include <gtest/gtest.h>

#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/pipeline_spec.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"

namespace voxinfer {
namespace {

std::string spec_text(const std::string& preprocess, const std::string& inference = R"({"roi_size": "whole"})",
                      const std::string& extra = "") {
  return R"({"task": "segmentation", "model": "model.json", "axes": "xyz", "input": {"channels": 1},
             "preprocess": )" +
         preprocess + R"(, "inference": )" + inference + extra + R"(,
             "postprocess": {"activation": "none", "keep_largest_foreground": true},
             "labels": [{"value": 1, "name": "a"}]})";
}

TEST(BrainchopSteps, SpecFields) {
  const PipelineSpec s = parse_pipeline_spec(spec_text(
      R"({"intensity": [{"op": "quantile", "lo": 0.05, "hi": 0.95}], "crop_foreground": {"margin": 20, "threshold": 0.5}})",
      R"({"roi_size": "whole"})", R"(, "network": {"instance_norm_after": "*_gn", "epsilon": 1e-5})"));
  EXPECT_TRUE(s.inference.whole_volume);
  EXPECT_TRUE(s.postprocess.keep_largest_foreground);
  ASSERT_TRUE(s.preprocess.crop_foreground);
  EXPECT_EQ(s.preprocess.crop_foreground->margin, 20);
  EXPECT_EQ(s.preprocess.crop_foreground->threshold, 0.5);
  ASSERT_EQ(s.preprocess.intensity.size(), 1u);
  EXPECT_EQ(s.preprocess.intensity[0].kind, IntensityOp::Kind::quantile);
  ASSERT_TRUE(s.network);
  EXPECT_EQ(s.network->instance_norm_after, "*_gn");
  const PipelineSpec cascade = parse_pipeline_spec(spec_text(R"({"crop_foreground": {"model": "../pre"}})"));
  EXPECT_EQ(cascade.preprocess.crop_foreground->model, "../pre");

  auto error_of = [](const std::string& text) {
    try {
      parse_pipeline_spec(text);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_model);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(spec_text(R"({})", R"({"roi_size": "all"})")).find("inference.roi_size"), std::string::npos);
  EXPECT_NE(error_of(spec_text(R"({"crop_foreground": {"threshold": 0.5}})", R"({"roi_size": [8, 8, 8]})"))
                .find("crop_foreground.threshold: only applies with inference.roi_size \"whole\""),
            std::string::npos);
  EXPECT_NE(error_of(spec_text(R"({"crop_foreground": {"threshold": 1.5}})")).find("crop_foreground.threshold"),
            std::string::npos);
  EXPECT_NE(error_of(spec_text(R"({"crop_foreground": {"threshold": 0.5, "model": "x"}})")).find("not both"),
            std::string::npos);
  EXPECT_NE(error_of(spec_text(R"({"intensity": [{"op": "quantile", "lo": 0.9, "hi": 0.1}]})")).find("intensity[0].hi"),
            std::string::npos);
  EXPECT_NE(error_of(spec_text(R"({})", R"({"roi_size": "whole"})", R"(, "network": {"instance_norm_after": ""})"))
                .find("network.instance_norm_after"),
            std::string::npos);
}

TEST(BrainchopSteps, QuantileNormalisationAsBrainchop) {
  // 100 values 99, 98, ..., 0: sorted s[i] = i; qmin = s[floor(5)] = 5, qmax = s[ceil(95) - 1] = 94.
  Volume v(1, 4, 5, 5);
  for (std::int64_t i = 0; i < 100; ++i) v.channel(0)[i] = static_cast<float>(99 - i);
  IntensityOp op;
  op.kind = IntensityOp::Kind::quantile;
  op.lo = 0.05;
  op.hi = 0.95;
  apply_intensity(v, op);
  for (std::int64_t i = 0; i < 100; ++i) {
    const float x = static_cast<float>(99 - i);
    EXPECT_EQ(v.channel(0)[i], (x - 5.f) / 89.f) << "value " << x;  // not clipped: 0 -> -5/89, 99 -> 94/89
  }
  // 7 values: floor(0.35) = 0, ceil(6.65) - 1 = 6: the whole range.
  Volume w(1, 1, 1, 7);
  for (std::int64_t i = 0; i < 7; ++i) w.channel(0)[i] = static_cast<float>(i * i);
  apply_intensity(w, op);
  EXPECT_EQ(w.channel(0)[0], 0.f);
  EXPECT_EQ(w.channel(0)[6], 1.f);
}

TEST(BrainchopSteps, LargestForegroundComponentTakesAllLabelsTogether) {
  Volume l(1, 6, 6, 6);
  std::fill_n(l.channel(0), l.voxels(), 0.f);
  auto set = [&](std::int64_t z, std::int64_t y, std::int64_t x, float v) { l.channel(0)[(z * 6 + y) * 6 + x] = v; };
  // Big: labels 1 and 2 touching at a corner only (26-connected), 4 voxels.
  set(0, 0, 0, 1);
  set(0, 0, 1, 1);
  set(1, 1, 2, 2);
  set(1, 1, 3, 2);
  // Small: a label-1 island of 3 voxels.
  set(5, 5, 3, 1);
  set(5, 5, 4, 1);
  set(5, 5, 5, 3);
  Volume six = l;
  six.data = l.data.clone();
  keep_largest_foreground(l, 26);
  EXPECT_EQ(l.channel(0)[(1 * 6 + 1) * 6 + 2], 2.f);
  EXPECT_EQ(l.channel(0)[0], 1.f);
  EXPECT_EQ(l.channel(0)[(5 * 6 + 5) * 6 + 3], 0.f);
  EXPECT_EQ(l.channel(0)[(5 * 6 + 5) * 6 + 5], 0.f);
  // 6-connected: the corner-touching pairs are separate components of 2 and 2 voxels, the
  // island has 3: the island wins.
  keep_largest_foreground(six, 6);
  EXPECT_EQ(six.channel(0)[0], 0.f);
  EXPECT_EQ(six.channel(0)[(5 * 6 + 5) * 6 + 5], 3.f);
}

TEST(BrainchopSteps, WholeVolumeRunsOnceOnTheThresholdBoxAndPastesBack) {
  // 10 x 9 x 8 (x, y, z) grid; a bright block x 4..6, y 3..5, z 2..4 of value 10, a dim voxel
  // of value 4 at (1, 1, 1) (under 0.5 x max), background 0.
  Geometry g;
  g.spacing = Eigen::Vector3d(1, 1, 1);
  Volume in(1, 8, 9, 10, g);
  float* p = in.channel(0);
  std::fill_n(p, in.voxels(), 0.f);
  for (std::int64_t z = 2; z <= 4; ++z)
    for (std::int64_t y = 3; y <= 5; ++y)
      for (std::int64_t x = 4; x <= 6; ++x) p[(z * 9 + y) * 10 + x] = 10.f;
  p[(1 * 9 + 1) * 10 + 1] = 4.f;
  PipelineSpec spec = parse_pipeline_spec(
      spec_text(R"({"intensity": [{"op": "minmax"}], "crop_foreground": {"margin": 1, "threshold": 0.5}})"));
  spec.postprocess.keep_largest_foreground = false;
  Shape seen;
  int calls = 0;
  // Two channels: background 0.3, foreground = the normalised input.
  const TileCallback net = [&](const Tensor& x) {
    ++calls;
    seen = x.shape();
    Tensor y(Shape{1, 2, x.dim(2), x.dim(3), x.dim(4)}, DType::f32);
    const std::int64_t n = x.numel();
    for (std::int64_t i = 0; i < n; ++i) {
      y.data<float>()[i] = 0.3f;
      y.data<float>()[n + i] = x.data<float>()[i];
    }
    return y;
  };
  const SegmentResult r = segment_whole_volume(in, spec, net);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, (Shape{1, 1, 5, 5, 5}));  // x 3..7, y 2..6, z 1..5 in model order (x, y, z)
  EXPECT_EQ(r.model_size, (std::array<std::int64_t, 3>{5, 5, 5}));
  std::int64_t ones = 0;
  for (std::int64_t z = 0; z < 8; ++z)
    for (std::int64_t y = 0; y < 9; ++y)
      for (std::int64_t x = 0; x < 10; ++x) {
        const float l = r.labels.channel(0)[(z * 9 + y) * 10 + x];
        const bool block = z >= 2 && z <= 4 && y >= 3 && y <= 5 && x >= 4 && x <= 6;
        EXPECT_EQ(l, block ? 1.f : 0.f) << x << "," << y << "," << z;  // the dim voxel lies outside the box
        ones += l == 1.f;
      }
  EXPECT_EQ(ones, 27);
  EXPECT_EQ(r.labels.geometry.affine_lps(), in.geometry.affine_lps());
}

}  // namespace
}  // namespace voxinfer
