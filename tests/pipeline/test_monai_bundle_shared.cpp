// MONAI bundles: the model-zoo spleen bundle in ../shared/data/monai_bundle, translated and run
// on every shared input, against the label maps and probabilities MONAI 1.4's own bundle
// runner wrote (skipped when the shared data is absent).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "test_util.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

fs::path spleen_dir() {
  return test::shared_dir() / "data" / "monai_bundle" / "spleen_ct_segmentation";
}

void expect_same_grid(const Volume& ours, const Volume& ref) {
  EXPECT_EQ(ours.nx(), ref.nx());
  EXPECT_EQ(ours.ny(), ref.ny());
  EXPECT_EQ(ours.nz(), ref.nz());
  EXPECT_LT((ours.geometry.origin - ref.geometry.origin).norm(), 1e-3);
  EXPECT_LT((ours.geometry.spacing - ref.geometry.spacing).norm(), 1e-5);
  EXPECT_LT((ours.geometry.direction - ref.geometry.direction).norm(), 1e-6);
}

TEST(MonaiBundleShared, PreprocessingMatchesMonaiNetworkInput) {
  if (!fs::exists(spleen_dir())) GTEST_SKIP() << "no " << spleen_dir();
  const monai::Bundle b = monai::load_bundle(spleen_dir());
  const fs::path prob_dir = spleen_dir() / "expected" / "probabilities" / "example_ct_sm_reoriented";
  const Volume input = read_volume((spleen_dir() / "inputs" / "example_ct_sm_reoriented.nii.gz").string());
  const Volume ours = preprocess_for_model(input, b.spec);
  const Volume ref = read_volume((prob_dir / "example_ct_sm_reoriented_preprocessed.nii.gz").string());
  expect_same_grid(ours, ref);
  ASSERT_EQ(ours.voxels(), ref.voxels());
  double max_err = 0;
  for (std::int64_t i = 0; i < ours.voxels(); ++i)
    max_err = std::max(max_err, static_cast<double>(std::abs(ours.channel(0)[i] - ref.channel(0)[i])));
  std::printf("preprocessed 243x201x44: max |ours - MONAI| = %.3g\n", max_err);
  EXPECT_LT(max_err, 1e-5);
}

TEST(MonaiBundleShared, ProbabilitiesOnTheInputGridMatchMonai) {
  if (!fs::exists(spleen_dir())) GTEST_SKIP() << "no " << spleen_dir();
  const monai::Bundle b = monai::load_bundle(spleen_dir());
  const fs::path prob_dir = spleen_dir() / "expected" / "probabilities" / "example_ct_sm_reoriented";
  const Volume input = read_volume((spleen_dir() / "inputs" / "example_ct_sm_reoriented.nii.gz").string());
  const Volume ref = read_volume((prob_dir / "example_ct_sm_reoriented_prob.nii.gz").string());
  ASSERT_EQ(ref.channels(), 2);
  // The same steps segment_volume streams, on whole volumes, keeping the probabilities.
  const Volume v = preprocess_for_model(input, b.spec);
  graph::Session session = graph::Session::from_file(b.network.string());
  Tensor logits = sliding_window(to_model_tensor(v, b.spec.axes), SlidingWindowOptions::from_spec(b.spec.inference),
                                 [&](const Tensor& batch) { return session.run(std::vector<Tensor>{batch}).at(0); });
  softmax_channels(logits);
  const Volume prob_model = volume_from_model_tensor(logits, b.spec.axes, v.geometry);
  const Volume prob = resample_to_grid(prob_model, input.geometry, {input.nx(), input.ny(), input.nz()});
  expect_same_grid(prob, ref);
  ASSERT_EQ(prob.data.numel(), ref.data.numel());
  const double err = test::max_abs_diff(prob.data, ref.data);
  std::printf("probabilities 30x122x101x2: max |ours - MONAI| = %.3g\n", err);
  EXPECT_LT(err, 1e-3);
}

TEST(MonaiBundleShared, EveryInputMatchesMonaiLabels) {
  if (!fs::exists(spleen_dir())) GTEST_SKIP() << "no " << spleen_dir();
  monai::Bundle b = monai::load_bundle(spleen_dir());
  SegmentationPipeline pipeline(spleen_dir(), b.spec, b.network);
  for (const char* name : {"example_ct_sm", "example_ct_sm_reoriented", "example_ct_dicom", "example_ct"}) {
    const Volume input = read_volume((spleen_dir() / "inputs" / (std::string(name) + ".nii.gz")).string());
    const Volume ref = read_volume((spleen_dir() / "expected" / name / (std::string(name) + "_trans.nii.gz")).string());
    const auto t0 = std::chrono::steady_clock::now();
    const SegmentationResult r = pipeline.run(input);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    expect_same_grid(r.labels, ref);
    ASSERT_EQ(r.labels.voxels(), ref.voxels()) << name;
    std::int64_t same = 0, ours_fg = 0, ref_fg = 0;
    for (std::int64_t i = 0; i < ref.voxels(); ++i) {
      same += r.labels.channel(0)[i] == ref.channel(0)[i];
      ours_fg += r.labels.channel(0)[i] != 0;
      ref_fg += ref.channel(0)[i] != 0;
    }
    const double agree = static_cast<double>(same) / static_cast<double>(ref.voxels());
    std::printf("%-26s %lld voxels differ of %lld (agreement %.5f%%), spleen %lld vs MONAI %lld, %.1f s\n", name,
                static_cast<long long>(ref.voxels() - same), static_cast<long long>(ref.voxels()), 100 * agree,
                static_cast<long long>(ours_fg), static_cast<long long>(ref_fg), s);
    EXPECT_GE(agree, 0.9995) << name;
  }
}

}  // namespace
}  // namespace voxinfer
