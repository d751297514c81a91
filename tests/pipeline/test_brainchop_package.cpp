// A brainchop package end to end on a fresh clone: model5_gw_ae (brainchop's entry 1: min-max
// normalisation, mask x > 0, crop padding 18, the network, argmax, restore, largest connected
// component) on the shipped demo T1, against the labels of brainchop's pipeline reproduced
// independently (tests/data/brainchop_model5_gw_ae_e1_t1_crop_labels.nii.gz, a copy of the
// shared reference t1_crop_model5_gw_ae_e1_labels.nii.gz).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/pipeline_spec.h"
#include "voxinfer/pipeline/postprocess.h"
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

std::string spec_error(const std::string& text) {
  try {
    (void)parse_pipeline_spec(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "parsed";
}

std::string spec_with(const std::string& preprocess, const std::string& postprocess, const std::string& labels) {
  return R"({"task": "segmentation", "model": "model.json", "axes": "xyz", "input": {"channels": 1},
             "preprocess": )" + preprocess + R"(, "inference": {"roi_size": "whole"}, "postprocess": )" + postprocess +
         R"(, "labels": )" + labels + "}";
}

TEST(BrainchopPackage, ConformAndBinarizeFields) {
  const std::string one = R"([{"value": 1, "name": "brain"}])";
  const std::string two = R"([{"value": 1, "name": "wm"}, {"value": 2, "name": "gm"}])";
  const std::string post = R"({"activation": "none", "binarize": true})";
  const PipelineSpec s = parse_pipeline_spec(spec_with(R"({"conform": true})", post, one));
  EXPECT_TRUE(s.preprocess.conform);
  EXPECT_TRUE(s.postprocess.binarize);
  EXPECT_NE(spec_error(spec_with(R"({"conform": true, "orientation": "LIA"})", post, one)).find("preprocess.conform"),
            std::string::npos);
  EXPECT_NE(spec_error(spec_with(R"({"conform": 1})", post, one)).find("preprocess.conform"), std::string::npos);
  EXPECT_NE(spec_error(spec_with(R"({"conform": true})", post, two)).find("postprocess.binarize"), std::string::npos);
}

// binarize runs after the largest foreground component: labels 1 and 2 of the kept component
// become 1, the removed island stays 0.
TEST(BrainchopPackage, BinarizeAfterTheLargestComponent) {
  Volume labels(1, 1, 1, 8);
  const float v[8] = {1, 2, 2, 1, 0, 0, 2, 0};
  std::copy(v, v + 8, labels.channel(0));
  PostprocessSpec p;
  p.activation = Activation::none;
  p.keep_largest_foreground = true;
  p.binarize = true;
  postprocess_labels(labels, p);
  const float want[8] = {1, 1, 1, 1, 0, 0, 0, 0};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(labels.channel(0)[i], want[i]) << i;
}

}  // namespace
}  // namespace voxinfer
