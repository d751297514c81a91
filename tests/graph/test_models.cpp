// Every model in the shared zoo must reproduce its PyTorch output within the numeric
// policy's bound: max|err| <= 1e-4 * max(1, max|ref|), with graph passes on and off,
// and the planned arena must be smaller than the sum of all activations.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "test_util.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/io/npy.h"

namespace voxinfer {
namespace {

struct Case {
  std::string model;
  std::string input;   // input.npy or input_alt.npy
  std::string output;
  bool optimize;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string n = info.param.model + "_" + info.param.input.substr(0, info.param.input.size() - 4) + (info.param.optimize ? "_opt" : "_plain");
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

class ModelParity : public ::testing::TestWithParam<Case> {};

TEST_P(ModelParity, MatchesPyTorch) {
  const Case& c = GetParam();
  const std::string rel = "models/" + c.model;
  VOXINFER_REQUIRE_SHARED(rel + "/" + c.input);
  const auto dir = test::shared_dir() / rel;
  graph::SessionOptions opt;
  opt.optimize = c.optimize;
  auto session = graph::Session::from_file((dir / "model.onnx").string(), opt);
  const Tensor in = read_npy((dir / c.input).string());
  const Tensor ref = read_npy((dir / c.output).string());
  const auto t0 = std::chrono::steady_clock::now();
  auto out = session.run(std::vector<Tensor>{in});
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].shape(), ref.shape());
  const double err = test::max_abs_diff(out[0], ref);
  const double bound = 1e-4 * std::max(1.0, test::max_abs(ref));
  const auto stats = session.plan_stats({in.shape()});
  std::printf("[parity] %s %s optimize=%d max_abs_err=%.3g bound=%.3g max_ref=%.3g time_ms=%.1f arena=%lld activations=%lld ratio=%.3f\n",
              c.model.c_str(), c.input.c_str(), c.optimize, err, bound, test::max_abs(ref), ms,
              static_cast<long long>(stats.arena_bytes), static_cast<long long>(stats.activation_bytes),
              stats.activation_bytes ? static_cast<double>(stats.arena_bytes) / static_cast<double>(stats.activation_bytes) : 0.0);
  EXPECT_LE(err, bound);
  if (stats.activation_bytes > 0) {
    EXPECT_LT(stats.arena_bytes, stats.activation_bytes);
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> v;
  for (const char* m : {"tiny", "unet_spleen", "basicunet_s", "segresnet_s", "attentionunet_s", "vnet_s", "densenet121_s"}) {
    for (bool opt : {true, false}) {
      v.push_back({m, "input.npy", "output.npy", opt});
      if (opt) v.push_back({m, "input_alt.npy", "output_alt.npy", opt});
    }
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Zoo, ModelParity, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
}  // namespace voxinfer
