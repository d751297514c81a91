// The real trained brainchop MeshNet (TF.js layers model) must reproduce tfjs's
// reference logits on the 32^3 block (shared data) and its argmax labels on the full 256^3
// volume (the model and the T1 ship in examples/, tfjs's labels in tests/data).
#include <gtest/gtest.h>

#include <chrono>

#include "test_util.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

const char* kModel = "data/brainchop_meshnet/model5_gw_ae/model.json";

// Volume [1, Z, Y, X] -> model tensor [1, 1, X, Y, Z] (the NIfTI i axis is the model's D axis).
Tensor to_model(const Volume& v, float scale) {
  const std::int64_t nx = v.nx(), ny = v.ny(), nz = v.nz();
  Tensor t(Shape{1, 1, nx, ny, nz}, DType::f32);
  float* d = t.data<float>();
  for (std::int64_t z = 0; z < nz; ++z)
    for (std::int64_t y = 0; y < ny; ++y)
      for (std::int64_t x = 0; x < nx; ++x) d[(x * ny + y) * nz + z] = v.at(0, z, y, x) * scale;
  return t;
}

TEST(MeshNet, Crop32LogitsMatchTfjs) {
  VOXINFER_REQUIRE_SHARED(kModel);
  const auto base = test::shared_dir() / "data/brainchop_meshnet";
  auto session = graph::Session::from_file((test::shared_dir() / kModel).string());
  const Volume in = read_image((base / "input/t1_crop_crop32.nii.gz").string());
  const Volume ref = read_image((base / "expected/t1_crop_crop32_model5_gw_ae_logits.nii.gz").string());
  ASSERT_EQ(ref.channels(), 3);
  const auto out = session.run(std::vector<Tensor>{to_model(in, 1.f / 255.f)});
  ASSERT_EQ(out[0].shape(), (Shape{1, 3, 32, 32, 32}));
  double err = 0, maxref = 0;
  const float* o = out[0].data<float>();
  for (std::int64_t c = 0; c < 3; ++c)
    for (std::int64_t z = 0; z < 32; ++z)
      for (std::int64_t y = 0; y < 32; ++y)
        for (std::int64_t x = 0; x < 32; ++x) {
          const double r = ref.at(c, z, y, x);
          maxref = std::max(maxref, std::abs(r));
          err = std::max(err, std::abs(r - o[((c * 32 + x) * 32 + y) * 32 + z]));
        }
  std::printf("[meshnet] crop32 max_abs_err=%.3g max_ref=%.3g bound=%.3g\n", err, maxref, 1e-4 * std::max(1.0, maxref));
  EXPECT_LE(err, 1e-4 * std::max(1.0, maxref));
}

TEST(MeshNet, FullVolumeLabelsMatchTfjs) {
  const auto examples = test::test_data_dir().parent_path().parent_path() / "examples";
  auto session = graph::Session::from_file((examples / "models/meshnet_gwm/model.json").string());
  const Volume in = read_image((examples / "data/t1_crop.nii.gz").string());
  const Volume ref = read_image((test::test_data_dir() / "meshnet_gwm_t1_crop_labels.nii.gz").string());
  // min-max normalisation over the whole volume, as brainchop does for this model.
  float lo = in.channel(0)[0], hi = lo;
  for (std::int64_t i = 0; i < in.voxels(); ++i) {
    lo = std::min(lo, in.channel(0)[i]);
    hi = std::max(hi, in.channel(0)[i]);
  }
  Tensor t = to_model(in, 1.f);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = (t.data<float>()[i] - lo) / (hi - lo);
  const auto t0 = std::chrono::steady_clock::now();
  const auto out = session.run(std::vector<Tensor>{t});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::int64_t n = in.nx();
  ASSERT_EQ(out[0].shape(), (Shape{1, 3, n, n, n}));
  const float* o = out[0].data<float>();
  const std::int64_t plane = n * n * n;
  std::int64_t agree = 0, counts[3] = {0, 0, 0};
  for (std::int64_t z = 0; z < n; ++z)
    for (std::int64_t y = 0; y < n; ++y)
      for (std::int64_t x = 0; x < n; ++x) {
        const std::int64_t k = (x * n + y) * n + z;
        int best = 0;
        for (int c = 1; c < 3; ++c)
          if (o[c * plane + k] > o[best * plane + k]) best = c;
        counts[best]++;
        agree += static_cast<int>(ref.at(0, z, y, x)) == best;
      }
  const double frac = static_cast<double>(agree) / static_cast<double>(plane);
  std::printf("[meshnet] full volume: %.3f s, labels agree on %.6f%% (%lld differ), counts %lld/%lld/%lld\n", s, 100 * frac,
              static_cast<long long>(plane - agree), static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
              static_cast<long long>(counts[2]));
  EXPECT_GE(frac, 0.9999);
}

}  // namespace
}  // namespace voxinfer
