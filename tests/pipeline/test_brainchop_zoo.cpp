// brainchop's zoo through the shipped packages (examples/models/brainchop/) with brainchop's
// own pipeline, against the labels of brainchop's pipeline reproduced in the shared folder:
// normalisation, mask, crop with padding, the pre-model cascade, argmax, restore, largest
// connected component. Every case must agree on >= 99.99% of the voxels of the input's grid.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "test_util.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

const fs::path kPackages = fs::path(VOXINFER_TEST_DATA_DIR) / "../../examples/models/brainchop";
const char* kZoo = "data/brainchop_zoo";

void check_reference(const std::string& package, const std::string& reference) {
  const fs::path zoo = test::shared_dir() / kZoo;
  const fs::path expected = zoo / "expected" / (reference + "_labels.nii.gz");
  if (!fs::exists(expected))
    GTEST_SKIP() << "shared data not found: " << expected.string() << " (set VOXINFER_SHARED_DIR to run this test)";
  const Volume input = read_image((zoo / "input/t1_crop.nii.gz").string());
  const Volume ref = read_image(expected.string());
  SegmentationPipeline pipeline(kPackages / package);
  const auto t0 = std::chrono::steady_clock::now();
  const SegmentationResult r = pipeline.run(input);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.labels.data.shape(), ref.data.shape());
  EXPECT_EQ(r.labels.geometry.affine_lps(), input.geometry.affine_lps());
  const float* a = r.labels.channel(0);
  const float* b = ref.channel(0);
  std::int64_t agree = 0;
  const std::int64_t n = ref.voxels();
  for (std::int64_t i = 0; i < n; ++i) agree += a[i] == b[i];
  const double pct = 100.0 * static_cast<double>(agree) / static_cast<double>(n);
  std::printf(
      "[brainchop] %s vs %s: %lld of %lld voxels differ, agreement %.5f%%, network grid %lldx%lldx%lld, %.1f s\n",
      package.c_str(), reference.c_str(), static_cast<long long>(n - agree), static_cast<long long>(n), pct,
      static_cast<long long>(r.model_grid[0]), static_cast<long long>(r.model_grid[1]),
      static_cast<long long>(r.model_grid[2]), s);
  EXPECT_GE(pct, 99.99);
}

TEST(BrainchopZooPipeline, Model5GwAeEntry1) {
  check_reference("model5_gw_ae", "t1_crop_model5_gw_ae_e1");
}
TEST(BrainchopZooPipeline, Model18clsEntry6) {
  check_reference("model18cls", "t1_crop_model18cls_e6");
}
TEST(BrainchopZooPipeline, Model21With104ClassesCascadeEntry14) {
  check_reference("model21_104class", "t1_crop_model21_104class_e14");
}
// A menu variant: entry 15, the same network without the pre-model (mask x > 0).
TEST(BrainchopZooPipeline, Model21With104ClassesVariantEntry15) {
  check_reference("model21_104class/pipeline.e15.json", "t1_crop_model21_104class_e15");
}
TEST(BrainchopZooPipeline, MindgrabEntry16) {
  check_reference("mindgrab", "t1_crop_mindgrab_e16");
}

}  // namespace
}  // namespace voxinfer
