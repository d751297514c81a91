// Networks built from nnU-Net plans against PyTorch (dynamic-network-architectures v0.4.4) on
// random weights: ResidualEncoderUNet with strided/projected skips, a 2D PlainConvUNet with batch
// norm and ReLU, a 3D PlainConvUNet with nonlin_first and non-affine instance norm
// (tests/data/nnunet_arch, written by its make_fixtures.py).
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace voxinfer
