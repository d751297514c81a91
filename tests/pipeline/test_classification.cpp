// Classification: DenseNet121 reproduces PyTorch's probabilities; occlusion sensitivity
// peaks exactly where a synthetic model looks and equals a brute-force computation;
// image + tabular models; bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "onnx_builder.h"
#include "test_util.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/pipeline/classification.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

class Classification : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("voxinfer_cls_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path package(const std::string& name, const std::string& json) {
    const fs::path p = dir_ / name;
    fs::create_directories(p);
    std::ofstream(p / "pipeline.json") << json;
    return p;
  }
  fs::path dir_;
};

Volume volume_from(const Tensor& t) {  // [1, C, Z, Y, X] -> Volume (zyx order, unit spacing)
  Volume v(t.dim(1), t.dim(2), t.dim(3), t.dim(4));
  std::memcpy(v.data.raw(), t.raw(), t.nbytes());
  return v;
}

TEST_F(Classification, DenseNet121MatchesPyTorchProbabilities) {
  VOXINFER_REQUIRE_SHARED("models/densenet121_s/model.onnx");
  const fs::path m = test::shared_dir() / "models/densenet121_s";
  const fs::path p = package("densenet", R"({"task": "classification", "model": "model.onnx", "axes": "zyx",
      "input": {"channels": 1}, "postprocess": {"activation": "softmax"}, "classes": ["negative", "positive"]})");
  fs::copy_file(m / "model.onnx", p / "model.onnx");
  ClassificationOptions opt;
  opt.uncertainty = true;
  ClassificationPipeline pipeline(p, opt);
  const Tensor in = read_npy((m / "input.npy").string());
  const Tensor ref = read_npy((m / "output.npy").string());
  const auto r = pipeline.run({volume_from(in)});
  ASSERT_EQ(r.classes.size(), 2u);
  const double l0 = ref.data<float>()[0], l1 = ref.data<float>()[1];
  const double p1 = 1.0 / (1.0 + std::exp(l0 - l1));
  std::printf("[classify] densenet121: p = (%.6f, %.6f), PyTorch (%.6f, %.6f), TTA std %.4f\n", r.classes[0].probability,
              r.classes[1].probability, 1 - p1, p1, r.uncertainty[0].std);
  EXPECT_NEAR(r.classes[1].probability, p1, 1e-4);
  EXPECT_NEAR(r.classes[0].probability, 1 - p1, 1e-4);
  EXPECT_EQ(r.top, p1 > 0.5 ? 1 : 0);
  ASSERT_EQ(r.uncertainty.size(), 2u);
  EXPECT_EQ(r.tta_passes, 8);
}

// logits = [10 * mean(x[region]), 0]: the decision depends only on `region`.
fs::path region_model(const fs::path& dir, const std::vector<std::int64_t>& lo, const std::vector<std::int64_t>& hi, bool tabular) {
  test::OnnxBuilder b;
  b.input("x", {-1, 1, 12, 12, 12});
  if (tabular) b.input("t", {-1, 2});
  b.constant_i64("starts", {lo[0], lo[1], lo[2]});
  b.constant_i64("ends", {hi[0], hi[1], hi[2]});
  b.constant_i64("axes", {2, 3, 4});
  b.constant("ten", {}, {10.f});
  b.constant("zero", {}, {0.f});
  b.node("Slice", {"x", "starts", "ends", "axes"}, "region");
  auto* r = b.node("ReduceMean", {"region"}, "m5");
  test::OnnxBuilder::attr_ints(r, "axes", {1, 2, 3, 4});
  test::OnnxBuilder::attr_int(r, "keepdims", 0);
  auto* u = b.node("Unsqueeze", {"m5", "one_axis"}, "m");
  (void)u;
  b.constant_i64("one_axis", {1});
  b.node("Mul", {"m", "ten"}, "a");
  b.node("Mul", {"m", "zero"}, "z");
  if (tabular) {
    b.constant_i64("s0", {0});
    b.constant_i64("e1", {1});
    b.constant_i64("e2", {2});
    b.constant_i64("ax1", {1});
    b.node("Slice", {"t", "s0", "e1", "ax1"}, "t0");
    b.node("Slice", {"t", "e1", "e2", "ax1"}, "t1");
    b.node("Add", {"a", "t0"}, "a2");
    b.node("Add", {"z", "t1"}, "z2");
    auto* c = b.node("Concat", {"a2", "z2"}, "logits");
    test::OnnxBuilder::attr_int(c, "axis", 1);
  } else {
    auto* c = b.node("Concat", {"a", "z"}, "logits");
    test::OnnxBuilder::attr_int(c, "axis", 1);
  }
  b.output("logits");
  fs::create_directories(dir);
  b.save((dir / "model.onnx").string());
  return dir;
}

TEST_F(Classification, OcclusionPeaksInTheDecisiveRegionAndMatchesBruteForce) {
  const fs::path p = region_model(dir_ / "occ", {4, 4, 4}, {8, 8, 8}, false);
  std::ofstream(p / "pipeline.json") << R"({"task": "classification", "model": "model.onnx", "axes": "zyx",
      "input": {"channels": 1}, "postprocess": {"activation": "softmax"}, "classes": ["region", "other"]})";
  // Bright decisive region, random background.
  Tensor img = test::random_tensor(Shape{1, 1, 12, 12, 12}, 5, 0.f, 0.2f);
  for (int z = 4; z < 8; ++z)
    for (int y = 4; y < 8; ++y)
      for (int x = 4; x < 8; ++x) img.at<float>(0, 0, z, y, x) = 1.f;
  ClassificationOptions opt;
  OcclusionOptions occ;
  occ.mask_size = {4, 4, 4};
  occ.overlap = 0.5;
  occ.mode = OcclusionOptions::Mode::mean_img;
  occ.n_batch = 5;
  opt.explain = occ;
  ClassificationPipeline pipeline(p, opt);
  const auto r = pipeline.run({volume_from(img)});
  ASSERT_TRUE(r.explanation.has_value());
  EXPECT_EQ(r.explained_class, 0);
  const Volume& map = *r.explanation;
  // Brute force: every occlusion position, p(x) - p(occluded), averaged per voxel.
  double mean = 0;
  for (std::int64_t i = 0; i < img.numel(); ++i) mean += img.data<float>()[i];
  mean /= static_cast<double>(img.numel());
  auto p0 = [](const Tensor& t) {
    double s = 0;
    for (int z = 4; z < 8; ++z)
      for (int y = 4; y < 8; ++y)
        for (int x = 4; x < 8; ++x) s += t.at<float>(0, 0, z, y, x);
    return 1.0 / (1.0 + std::exp(-10.0 * s / 64.0));
  };
  const double base = p0(img);
  std::vector<double> sum(12 * 12 * 12, 0.0);
  std::vector<int> cnt(12 * 12 * 12, 0);
  const std::int64_t starts[] = {0, 2, 4, 6, 8};
  for (auto a : starts)
    for (auto b : starts)
      for (auto c : starts) {
        Tensor o = img.clone();
        for (int z = 0; z < 4; ++z)
          for (int y = 0; y < 4; ++y)
            for (int x = 0; x < 4; ++x) o.at<float>(0, 0, a + z, b + y, c + x) = static_cast<float>(mean);
        const double d = base - p0(o);
        for (int z = 0; z < 4; ++z)
          for (int y = 0; y < 4; ++y)
            for (int x = 0; x < 4; ++x) {
              sum[static_cast<std::size_t>(((a + z) * 12 + b + y) * 12 + c + x)] += d;
              cnt[static_cast<std::size_t>(((a + z) * 12 + b + y) * 12 + c + x)]++;
            }
      }
  EXPECT_EQ(r.occlusions, 125);
  double max_err = 0, peak = -1, far_max = 0, global_max = -1;
  for (int z = 0; z < 12; ++z)
    for (int y = 0; y < 12; ++y)
      for (int x = 0; x < 12; ++x) {
        const auto i = static_cast<std::size_t>((z * 12 + y) * 12 + x);
        const double want = cnt[i] ? sum[i] / cnt[i] : 0.0;
        max_err = std::max(max_err, std::abs(want - map.at(0, z, y, x)));
        const bool inside = z >= 4 && z < 8 && y >= 4 && y < 8 && x >= 4 && x < 8;
        if (inside) peak = std::max(peak, static_cast<double>(map.at(0, z, y, x)));
        global_max = std::max(global_max, static_cast<double>(map.at(0, z, y, x)));
        const bool far = z < 2 || z >= 10 || y < 2 || y >= 10 || x < 2 || x >= 10;
        if (far) far_max = std::max(far_max, std::abs(static_cast<double>(map.at(0, z, y, x))));
      }
  std::printf("[classify] occlusion: max |map - brute force| = %.3g, peak inside %.4f, max |map| far outside %.3g\n", max_err, peak, far_max);
  EXPECT_LE(max_err, 1e-5);
  EXPECT_GT(peak, 0.0);
  EXPECT_EQ(peak, global_max);  // the map peaks inside the decisive region
  EXPECT_EQ(far_max, 0.0);  // occlusions that do not touch the region change nothing
}

TEST_F(Classification, ImagePlusTabularInputsAndBadInputs) {
  const fs::path p = region_model(dir_ / "tab", {0, 0, 0}, {12, 12, 12}, true);
  std::ofstream(p / "pipeline.json") << R"({"task": "classification", "model": "model.onnx", "axes": "zyx",
      "input": {"channels": 1, "tabular": {"length": 2, "names": ["age", "sex"]}},
      "postprocess": {"activation": "softmax"}, "classes": ["yes", "no"]})";
  ClassificationPipeline pipeline(p);
  Tensor img(Shape{1, 1, 12, 12, 12}, DType::f32);
  for (std::int64_t i = 0; i < img.numel(); ++i) img.data<float>()[i] = 0.05f;
  const auto r = pipeline.run({volume_from(img)}, {0.3f, 1.2f});
  const double l0 = 10 * 0.05 + 0.3, l1 = 1.2;
  EXPECT_NEAR(r.classes[0].probability, 1 / (1 + std::exp(l1 - l0)), 1e-6);
  auto expect_code = [](const std::function<void()>& f, const std::string& fragment) {
    try {
      f();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(ErrorCode::invalid_input)) << e.what();
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_code([&] { pipeline.run({volume_from(img)}, {1.f}); }, "tabular");
  expect_code([&] { pipeline.run({volume_from(img), volume_from(img)}, {1.f, 2.f}); }, "channel");
  expect_code([&] { pipeline.run({}, {1.f, 2.f}); }, "no input");
}

}  // namespace
}  // namespace voxinfer
