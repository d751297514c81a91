// A brainchop package end to end on a fresh clone: model5_gw_ae (brainchop's entry 1: min-max
// normalisation, mask x > 0, crop padding 18, the network, argmax, restore, largest connected
// component) on the shipped demo T1, against the labels of brainchop's pipeline reproduced
// independently (tests/data/brainchop_model5_gw_ae_e1_t1_crop_labels.nii.gz, a copy of the
// shared reference t1_crop_model5_gw_ae_e1_labels.nii.gz).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "test_util.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

TEST(BrainchopPackage, Model5GwAeOnTheShippedT1MatchesBrainchopsPipeline) {
  const fs::path root = fs::path(VOXINFER_TEST_DATA_DIR) / "../..";
  const Volume input = read_image((root / "examples/data/t1_crop.nii.gz").string());
  const Volume ref = read_image((test::test_data_dir() / "brainchop_model5_gw_ae_e1_t1_crop_labels.nii.gz").string());
  SegmentationPipeline pipeline(root / "examples/models/brainchop/model5_gw_ae");
  const SegmentationResult r = pipeline.run(input);
  ASSERT_EQ(r.labels.data.shape(), ref.data.shape());
  EXPECT_EQ(r.labels.geometry.affine_lps(), input.geometry.affine_lps());
  EXPECT_FALSE(r.conformed_labels.data.defined());  // 256^3 uint8 LIA: used as it is
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < ref.voxels(); ++i) differ += r.labels.channel(0)[i] != ref.channel(0)[i];
  std::printf("[brainchop] model5_gw_ae on the shipped T1: %lld of %lld voxels differ from brainchop's pipeline\n",
              static_cast<long long>(differ), static_cast<long long>(ref.voxels()));
  EXPECT_LE(static_cast<double>(differ), 1e-4 * static_cast<double>(ref.voxels()));
}

}  // namespace
}  // namespace voxinfer
