// Element-wise channel expressions (MONAI's Lambdad functions) against torch. The expected
// values were computed by /usr/bin/python3 with torch 1.13: each lambda applied with eval() to
// the [C, 6, 1, 1] float32 tensors kInput / kValues below, the result cast to float32 and
// flattened per channel.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/channel_expression.h"

namespace voxinfer {
namespace {

constexpr int kVoxels = 6;
const float kNan = std::nanf("");
// Three binary channels (a thresholded sigmoid output) and three arbitrary ones.
const std::vector<std::vector<float>> kInput = {
    {0, 1, 0, 1, 0, 1}, {1, 1, 0, 0, 1, 0}, {0, 0, 1, 1, 1, 0}};
const std::vector<std::vector<float>> kValues = {
    {0.2f, -1.5f, 3.0f, 0.49f, kNan, 7.25f}, {0.9f, 2.5f, -3.0f, 0.51f, 1.0f, -7.25f}, {0.1f, 0.0f, 0.5f, 0.5f, 2.0f, 1.0f}};

// Evaluates `text` voxel by voxel: result[channel][voxel].
std::vector<std::vector<float>> run(const std::string& text, const std::vector<std::vector<float>>& in) {
  const auto e = ChannelExpression::compile(text, static_cast<std::int64_t>(in.size()));
  std::vector<std::vector<float>> out(static_cast<std::size_t>(e.out_channels()), std::vector<float>(kVoxels));
  std::vector<float> v(in.size()), scratch(e.scratch_size()), r(static_cast<std::size_t>(e.out_channels()));
  for (int i = 0; i < kVoxels; ++i) {
    for (std::size_t c = 0; c < in.size(); ++c) v[c] = in[c][static_cast<std::size_t>(i)];
    e.evaluate(v.data(), scratch.data(), r.data());
    for (std::size_t c = 0; c < r.size(); ++c) out[c][static_cast<std::size_t>(i)] = r[c];
  }
  return out;
}

void expect_near(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want,
                 const std::string& text) {
  ASSERT_EQ(got.size(), want.size()) << text;
  for (std::size_t c = 0; c < want.size(); ++c)
    for (std::size_t i = 0; i < want[c].size(); ++i) {
      if (std::isnan(want[c][i])) {
        EXPECT_TRUE(std::isnan(got[c][i])) << text << " channel " << c << " voxel " << i;
        continue;
      }
      EXPECT_NEAR(got[c][i], want[c][i], 1e-6f * std::max(1.f, std::abs(want[c][i])))
          << text << " channel " << c << " voxel " << i;
    }
}

TEST(ChannelExpression, MatchesTorch) {
  struct Case {
    const char* text;
    const std::vector<std::vector<float>>* in;
    std::vector<std::vector<float>> want;
  };
  const std::vector<Case> cases = {
      // brats_mri_segmentation's post-processing
      {"lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))", &kInput,
       {{2, 1, 4, 4, 4, 1}}},
      {"lambda x: torch.cat([x[1:2], torch.logical_or(x[[0]], x[[2]]), x[[2]]], dim=0)", &kInput,
       {{1, 1, 0, 0, 1, 0}, {0, 1, 1, 1, 1, 1}, {0, 0, 1, 1, 1, 0}}},
      {"lambda x: (x[0] * 2 - x[[1]]) / 4 + x[2:] ** 2 - x[[1]] // 2 % 3", &kValues,
       {{-0.11499999463558197f, -2.375f, 1.5f, 0.3675000071525574f, kNan, 4.4375f}}},
      {"lambda x: ((x >= 0.5) & (x != 1)) | (x[[1]] < -1)", &kValues,
       {{0, 0, 1, 0, 0, 1}, {1, 1, 1, 1, 0, 1}, {0, 0, 1, 1, 1, 1}}},
      {"lambda x: torch.argmax(x, dim=0, keepdim=True)", &kValues, {{1, 1, 0, 1, 0, 0}}},
      {"lambda x: torch.nan_to_num(x, nan=255)", &kValues,
       {{0.2f, -1.5f, 3.0f, 0.49f, 255.f, 7.25f}, {0.9f, 2.5f, -3.0f, 0.51f, 1.0f, -7.25f}, {0.1f, 0.0f, 0.5f, 0.5f, 2.0f, 1.0f}}},
      {"lambda x: torch.softmax(x[1:], dim=0)", &kValues,
       {{0.6899744272232056f, 0.9241418242454529f, 0.02931223064661026f, 0.5024999976158142f, 0.2689414322376251f,
         0.0002611903182696551f},
        {0.31002551317214966f, 0.07585817575454712f, 0.970687747001648f, 0.4975000321865082f, 0.7310585975646973f,
         0.9997387528419495f}}},
      {"lambda x: torch.clamp(x, min=0, max=1).sum(dim=0, keepdim=True)", &kValues, {{1.2f, 1.0f, 1.5f, 1.5f, kNan, 2.0f}}},
      {"lambda x: (x[[0]] > x[[1]]).float() * 3 + (~(x[[2]] > 0.4)).int()", &kValues, {{1, 1, 3, 0, 0, 3}}},
  };
  for (const auto& c : cases) expect_near(run(c.text, *c.in), c.want, c.text);
}

TEST(ChannelExpression, RefusesWhatIsNotElementWise) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"lambda x: x.numpy()", "the function 'numpy' is not supported"},
      {"lambda x: torch.flip(x, [1])", "the function 'torch.flip' is not supported"},
      {"lambda x: x[[3]]", "the channel index 3 is out of range for 3 channel(s)"},
      {"lambda x: x[0, 1]", "indexing beyond the channel axis"},
      {"lambda x: x[[0]] > 0 and x[[1]] > 0", "'and', 'or' and 'not' are not element-wise"},
      {"lambda x: torch.cat([x[0], x[1]])", "every tensor needs a channel axis"},
      {"lambda x: torch.sum(x)", "needs dim=0"},
      {"lambda x: torch.argmax(x, dim=1)", "only dim=0"},
      {"lambda x: x[0:2] + x", "of 2 and 3 channels does not broadcast"},
      {"lambda x: __import__('os')", "the name '__import__' is not supported"},
      {"lambda x: y", "the name 'y' is not supported"},
      {"lambda x: x +", "the expression ends early"},
  };
  for (const auto& [text, want] : cases) {
    try {
      ChannelExpression::compile(text, 3);
      ADD_FAILURE() << text << " compiled";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported) << text;
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << text << ": " << e.what();
    }
  }
}

// MONAI's chain after Invertd: sigmoid, AsDiscreted(threshold=0.5), then the BraTS lambda; the
// masks are the thresholded channels when no lambda follows.
TEST(VoxelRule, SigmoidThresholdThenLambda) {
  PostprocessSpec p;
  p.activation = Activation::sigmoid;
  p.discretize = Discretize::threshold;
  p.lambdas = {"lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"};
  const VoxelRule rule(p, 3, {});
  EXPECT_EQ(rule.out_channels(), 1);
  std::vector<float> scratch(rule.scratch_size());
  const float logits[][3] = {{-1, 2, -3}, {0.5f, 2, -3}, {0.5f, 2, 0}, {-1, -1, -1}};
  const float want[] = {2, 1, 4, 0};  // sigmoid(0) = 0.5 is on (>= threshold)
  for (int i = 0; i < 4; ++i) EXPECT_EQ(rule.label(logits[i], false, scratch.data()), want[i]) << i;
  PostprocessSpec plain;
  plain.activation = Activation::sigmoid;
  const VoxelRule masks(plain, 3, {1, 2, 4});
  EXPECT_EQ(masks.out_channels(), 3);
  float out[3];
  masks.channels(logits[1], false, scratch.data(), out);
  EXPECT_EQ(out[0], 1.f);
  EXPECT_EQ(out[1], 1.f);
  EXPECT_EQ(out[2], 0.f);
  std::vector<float> s2(masks.scratch_size());
  EXPECT_EQ(masks.label(logits[2], false, s2.data()), 4.f);  // the last channel on
}

}  // namespace
}  // namespace voxinfer
