// Networks built from nnU-Net plans against PyTorch (dynamic-network-architectures v0.4.4) on
// random weights: ResidualEncoderUNet with strided/projected skips, a 2D PlainConvUNet with batch
// norm and ReLU, a 3D PlainConvUNet with nonlin_first and non-affine instance norm
// (tests/data/nnunet_arch, written by its make_fixtures.py).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "voxinfer/app/nnunet.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/pipeline/nnunet.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

void expect_matches_pytorch(const std::string& name, const std::string& config) {
  const fs::path dir = fs::path(VOXINFER_TEST_DATA_DIR) / "nnunet_arch" / name;
  nnunet::Model m = app::open_nnunet_model(dir / ("nnUNetTrainer__nnUNetPlans__" + config));
  Tensor in = read_npy((dir / "input.npy").string());
  const Tensor ref = read_npy((dir / "output.npy").string());
  if (in.rank() == 4) {  // 2D: [N, C, H, W] is one plane of the 3D graph
    Tensor t(Shape{in.dim(0), in.dim(1), 1, in.dim(2), in.dim(3)}, DType::f32);
    std::memcpy(t.raw(), in.raw(), in.nbytes());
    in = t;
  }
  const Tensor out = m.session(0).run(std::vector<Tensor>{in})[0];
  ASSERT_EQ(out.numel(), ref.numel()) << out.shape().str() << " vs " << ref.shape().str();
  double err = 0, peak = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    err = std::max(err, static_cast<double>(std::abs(out.data<float>()[i] - ref.data<float>()[i])));
    peak = std::max(peak, static_cast<double>(std::abs(ref.data<float>()[i])));
  }
  // The numerical policy's bound for a network against its framework.
  EXPECT_LE(err, 1e-4 * std::max(1.0, peak)) << name;
}

TEST(NnunetArchitecture, ResidualEncoderUNetMatchesPyTorch) {
  expect_matches_pytorch("resenc_3d", "3d_fullres");
}
TEST(NnunetArchitecture, PlainConvUNet2dWithBatchNormMatchesPyTorch) {
  expect_matches_pytorch("plain_2d_batchnorm", "2d");
}
TEST(NnunetArchitecture, PlainConvUNetNonlinFirstMatchesPyTorch) {
  expect_matches_pytorch("plain_3d_nonlin_first", "3d_fullres");
}

// A 2D configuration runs slice by slice: with one tile per slice the Gaussian weights divide
// out and the logits are the network's output for each slice, up to half-precision rounding.
TEST(NnunetArchitecture, TwoDimensionalConfigurationPredictsEverySliceWithTheNetwork) {
  const fs::path dir = fs::path(VOXINFER_TEST_DATA_DIR) / "nnunet_arch" / "plain_2d_batchnorm";
  nnunet::Model m = app::open_nnunet_model(dir / "nnUNetTrainer__nnUNetPlans__2d");
  ASSERT_EQ(m.configuration().patch_size, (nnunet::Index3{1, 48, 40}));
  const std::int64_t slices = 3;
  Tensor data(Shape{1, slices, 48, 40}, DType::f32);
  for (std::int64_t i = 0; i < data.numel(); ++i) data.data<float>()[i] = std::sin(0.37f * static_cast<float>(i)) * 2.f;
  nnunet::PredictOptions o;
  o.mirroring = false;
  const Tensor logits = nnunet::half_to_float(nnunet::predict_logits(m, data, o));
  ASSERT_EQ(logits.shape(), (Shape{4, slices, 48, 40}));
  double err = 0, peak = 0;
  for (std::int64_t z = 0; z < slices; ++z) {
    Tensor t(Shape{1, 1, 1, 48, 40}, DType::f32);
    std::memcpy(t.raw(), data.data<float>() + z * 48 * 40, 48 * 40 * sizeof(float));
    const Tensor y = m.session(0).run(std::vector<Tensor>{t})[0];
    for (std::int64_t k = 0; k < 4; ++k)
      for (std::int64_t i = 0; i < 48 * 40; ++i) {
        const float ref = y.data<float>()[k * 48 * 40 + i];
        err = std::max(err, static_cast<double>(std::abs(logits.data<float>()[(k * slices + z) * 48 * 40 + i] - ref)));
        peak = std::max(peak, static_cast<double>(std::abs(ref)));
      }
  }
  EXPECT_GT(peak, 1.0);
  // nnU-Net's half-precision accumulator holds logit x weight (weights up to 10) and is divided
  // by the half-precision weight sum: two roundings, each up to half a step at the largest
  // value, about |l| / 256 in all.
  EXPECT_LE(err, peak / 256.0);
}

// Region-based training: sigmoid heads, each region's label written where its probability
// exceeds 0.5, in regions_class_order (later regions win).
TEST(NnunetArchitecture, RegionBasedHeadsAreThresholdedInRegionsClassOrder) {
  const fs::path dir = fs::path(VOXINFER_TEST_DATA_DIR) / "nnunet_arch" / "plain_3d_regions";
  expect_matches_pytorch("plain_3d_regions", "3d_fullres");
  nnunet::Model m = app::open_nnunet_model(dir / "nnUNetTrainer__nnUNetPlans__3d_fullres");
  ASSERT_TRUE(m.dataset().has_regions);
  ASSERT_EQ(m.dataset().num_heads(), 3);
  const Tensor in = read_npy((dir / "input.npy").string());
  Volume v(1, 8, 8, 8);
  std::memcpy(v.channel(0), in.raw(), 512 * sizeof(float));
  nnunet::PredictOptions o;
  o.mirroring = false;
  o.probabilities = true;
  o.keep_logits = true;
  const auto r = nnunet::predict(m, {v}, o);
  ASSERT_EQ(r.logits.shape(), (Shape{3, 8, 8, 8}));
  const Tensor logits = nnunet::half_to_float(r.logits);
  std::array<std::int64_t, 4> count{};
  for (std::int64_t i = 0; i < 512; ++i) {
    float want = 0;
    for (int k = 0; k < 3; ++k) {
      const float p = 1.f / (1.f + std::exp(-logits.data<float>()[k * 512 + i]));
      EXPECT_NEAR(r.probabilities.channel(k)[i], p, 1e-6f);
      if (p > 0.5f) want = static_cast<float>(m.dataset().regions_class_order[static_cast<std::size_t>(k)]);
    }
    EXPECT_EQ(r.labels.channel(0)[i], want) << i;
    ++count[static_cast<std::size_t>(want)];
  }
  EXPECT_GT(count[0] + count[1] + count[2], 0);
  EXPECT_GT(count[3], 0);  // the last region is reached somewhere: the order matters
}

}  // namespace
}  // namespace voxinfer
