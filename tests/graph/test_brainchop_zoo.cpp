// brainchop's trained networks (TF.js layers models from its zoo) against TF.js's own logits
// on a 32^3 block of the demo T1 (min-max normalised, zero padding at the block's faces).
// mindgrab needs the per-channel normalisation brainchop applies after its "*_gn" layers.
#include <gtest/gtest.h>

#include "test_util.h"
#include "voxinfer/graph/graph_edits.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

const char* kZoo = "data/brainchop_zoo";

// Volume [1, Z, Y, X] -> model tensor [1, 1, X, Y, Z] (the NIfTI i axis is the model's D axis).
Tensor to_model(const Volume& v) {
  const std::int64_t nx = v.nx(), ny = v.ny(), nz = v.nz();
  Tensor t(Shape{1, 1, nx, ny, nz}, DType::f32);
  float* d = t.data<float>();
  for (std::int64_t z = 0; z < nz; ++z)
    for (std::int64_t y = 0; y < ny; ++y)
      for (std::int64_t x = 0; x < nx; ++x) d[(x * ny + y) * nz + z] = v.at(0, z, y, x);
  return t;
}

void check_block(const std::string& model, const char* norm_after) {
  const auto base = test::shared_dir() / kZoo;
  graph::Graph g = graph::load_model((base / model / "model.json").string());
  if (norm_after) {
    EXPECT_EQ(graph::insert_instance_norm_after(g, norm_after, 1e-5f), 25);
  }
  graph::Session session(std::move(g));
  const Volume in = read_image((base / "input/t1_crop_block32_minmax_f32.nii.gz").string());
  const Volume ref = read_image((base / "expected" / ("t1_crop_block32_" + model + "_logits_tfjs.nii.gz")).string());
  const std::int64_t k = ref.channels(), n = 32;
  const auto out = session.run(std::vector<Tensor>{to_model(in)});
  ASSERT_EQ(out[0].shape(), (Shape{1, k, n, n, n}));
  double err = 0, maxref = 0;
  std::int64_t label_diff = 0;
  const float* o = out[0].data<float>();
  const std::int64_t plane = n * n * n;
  for (std::int64_t z = 0; z < n; ++z)
    for (std::int64_t y = 0; y < n; ++y)
      for (std::int64_t x = 0; x < n; ++x) {
        int best_ref = 0, best = 0;
        for (std::int64_t c = 0; c < k; ++c) {
          const double r = ref.at(c, z, y, x);
          const double v = o[c * plane + (x * n + y) * n + z];
          maxref = std::max(maxref, std::abs(r));
          err = std::max(err, std::abs(r - v));
          if (r > ref.at(best_ref, z, y, x)) best_ref = static_cast<int>(c);
          if (v > o[best * plane + (x * n + y) * n + z]) best = static_cast<int>(c);
        }
        label_diff += best != best_ref;
      }
  std::printf("[brainchop] %s block32 max_abs_err=%.3g max_ref=%.3g label_diff=%lld\n", model.c_str(), err, maxref,
              static_cast<long long>(label_diff));
  EXPECT_LE(err, 1e-4 * std::max(1.0, maxref));
  EXPECT_EQ(label_diff, 0);
}

TEST(BrainchopZoo, Model18clsBlockLogitsMatchTfjs) {
  VOXINFER_REQUIRE_SHARED(std::string(kZoo) + "/model18cls/model.json");
  check_block("model18cls", nullptr);
}

TEST(BrainchopZoo, MindgrabBlockLogitsMatchTfjs) {
  VOXINFER_REQUIRE_SHARED(std::string(kZoo) + "/mindgrab/model.json");
  check_block("mindgrab", "*_gn");
}

}  // namespace
}  // namespace voxinfer
