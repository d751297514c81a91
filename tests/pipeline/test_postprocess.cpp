#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <deque>
#include <random>

#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/pipeline/postprocess.h"

namespace voxinfer {
namespace {

Volume label_volume(std::int64_t z, std::int64_t y, std::int64_t x, const Geometry& g = {}) { return Volume(1, z, y, x, g); }

TEST(Channels, SoftmaxSigmoidArgmax) {
  // Two voxels, three channels: [1, 2, 3] and [5, 5, 0].
  Tensor t = Tensor::from_vector<float>(Shape{3, 2}, {1, 5, 2, 5, 3, 0});
  const Tensor am = argmax_channels(t);
  EXPECT_EQ(am.shape(), (Shape{1, 2}));
  EXPECT_EQ(am.data<float>()[0], 2.f);
  EXPECT_EQ(am.data<float>()[1], 0.f);  // tie: the first
  softmax_channels(t);
  const double s = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(t.at<float>(0, 0), std::exp(1.0) / s, 1e-7);
  EXPECT_NEAR(t.at<float>(2, 0), std::exp(3.0) / s, 1e-7);
  EXPECT_NEAR(t.at<float>(0, 1), 1 / (2 + std::exp(-5.0)), 1e-7);
  EXPECT_NEAR(t.at<float>(2, 1), std::exp(-5.0) / (2 + std::exp(-5.0)), 1e-7);
  Tensor u = Tensor::from_vector<float>(Shape{1, 3}, {0, 2, -100});
  sigmoid_inplace(u);
  EXPECT_FLOAT_EQ(u.data<float>()[0], 0.5f);
  EXPECT_NEAR(u.data<float>()[1], 1 / (1 + std::exp(-2.0)), 1e-7);
  EXPECT_NEAR(u.data<float>()[2], 0, 1e-30);
}

TEST(Channels, ThresholdAndPredictLabels) {
  // Nested regions (BraTS style): whole tumour 1, core 2, enhancing 4, listed outer to inner.
  const Tensor p = Tensor::from_vector<float>(Shape{3, 4}, {0.9f, 0.9f, 0.2f, 0.9f,  //
                                                            0.6f, 0.1f, 0.1f, 0.7f,  //
                                                            0.2f, 0.1f, 0.1f, 0.5f});
  const std::vector<int> values{1, 2, 4};
  const Tensor l = threshold_channels(p, values, 0.5f);
  EXPECT_EQ(l.data<float>()[0], 2.f);
  EXPECT_EQ(l.data<float>()[1], 1.f);
  EXPECT_EQ(l.data<float>()[2], 0.f);
  EXPECT_EQ(l.data<float>()[3], 4.f);  // >= threshold counts
  EXPECT_THROW(threshold_channels(p, std::vector<int>{1, 2}, 0.5f), Error);
  // Logits: sigmoid(x) >= 0.5 iff x >= 0.
  const Tensor logits = Tensor::from_vector<float>(Shape{2, 2}, {1, -1, -1, 2});
  const Tensor sig = predict_labels(logits, Activation::sigmoid, 0.5f, std::vector<int>{3, 7});
  EXPECT_EQ(sig.data<float>()[0], 3.f);
  EXPECT_EQ(sig.data<float>()[1], 7.f);
  const Tensor soft = predict_labels(logits, Activation::softmax, 0.5f, {});
  EXPECT_EQ(soft.data<float>()[0], 0.f);
  EXPECT_EQ(soft.data<float>()[1], 1.f);
}

TEST(Components, DiagonalNeighboursAndConnectivity) {
  Volume v = label_volume(2, 2, 2);
  v.at(0, 0, 0, 0) = 1;
  v.at(0, 1, 1, 1) = 1;  // touches the first by a corner only
  v.at(0, 0, 1, 1) = 2;  // another label, adjacent to both
  const Components c26 = connected_components(v, 26);
  ASSERT_EQ(c26.count(), 2);
  EXPECT_EQ(c26.values[1], 1);
  EXPECT_EQ(c26.voxels[1], 2);
  EXPECT_EQ(c26.values[2], 2);
  EXPECT_EQ(c26.ids.at<std::int32_t>(1, 1, 1), 1);
  const Components c6 = connected_components(v, 6);
  ASSERT_EQ(c6.count(), 3);
  // ids in raster order of each component's first voxel: (0,0,0)=1, (0,1,1)=2, (1,1,1)=3.
  EXPECT_EQ(c6.ids.at<std::int32_t>(0, 0, 0), 1);
  EXPECT_EQ(c6.ids.at<std::int32_t>(0, 1, 1), 2);
  EXPECT_EQ(c6.ids.at<std::int32_t>(1, 1, 1), 3);
  EXPECT_EQ(c6.ids.at<std::int32_t>(1, 0, 0), 0);
  EXPECT_THROW(connected_components(v, 18), Error);
}

// Breadth-first reference labelling, ids in raster order of first voxel.
Tensor reference_components(const Volume& v, int connectivity) {
  const std::int64_t nz = v.nz(), ny = v.ny(), nx = v.nx();
  Tensor ids(Shape{nz, ny, nx}, DType::i32);
  std::int32_t next = 0;
  for (std::int64_t z = 0; z < nz; ++z)
    for (std::int64_t y = 0; y < ny; ++y)
      for (std::int64_t x = 0; x < nx; ++x) {
        if (v.at(0, z, y, x) == 0 || ids.at<std::int32_t>(z, y, x)) continue;
        ++next;
        std::deque<std::array<std::int64_t, 3>> q{{z, y, x}};
        ids.at<std::int32_t>(z, y, x) = next;
        while (!q.empty()) {
          const auto [a, b, c] = q.front();
          q.pop_front();
          for (int dz = -1; dz <= 1; ++dz)
            for (int dy = -1; dy <= 1; ++dy)
              for (int dx = -1; dx <= 1; ++dx) {
                const int manhattan = std::abs(dz) + std::abs(dy) + std::abs(dx);
                if (manhattan == 0 || (connectivity == 6 && manhattan > 1)) continue;
                const std::int64_t zz = a + dz, yy = b + dy, xx = c + dx;
                if (zz < 0 || yy < 0 || xx < 0 || zz >= nz || yy >= ny || xx >= nx) continue;
                if (v.at(0, zz, yy, xx) != v.at(0, a, b, c) || ids.at<std::int32_t>(zz, yy, xx)) continue;
                ids.at<std::int32_t>(zz, yy, xx) = next;
                q.push_back({zz, yy, xx});
              }
        }
      }
  return ids;
}

TEST(Components, MatchBreadthFirstReferenceAcrossSlabs) {
  std::mt19937 rng(42);
  for (double density : {0.2, 0.45}) {
    Volume v = label_volume(23, 9, 11);
    std::uniform_real_distribution<double> u(0, 1);
    for (std::int64_t i = 0; i < v.voxels(); ++i) {
      const double r = u(rng);
      v.channel(0)[i] = r < density ? 1.f : (r < density * 1.5 ? 2.f : 0.f);
    }
    for (int conn : {6, 26}) {
      const Tensor ref = reference_components(v, conn);
      for (int threads : {1, 3}) {
        set_num_threads(threads);
        const Components c = connected_components(v, conn);
        for (std::int64_t i = 0; i < v.voxels(); ++i)
          ASSERT_EQ(c.ids.data<std::int32_t>()[i], ref.data<std::int32_t>()[i])
              << "voxel " << i << " connectivity " << conn << " density " << density << " threads " << threads;
        std::int64_t total = 0;
        for (std::int64_t id = 1; id <= c.count(); ++id) total += c.voxels[static_cast<std::size_t>(id)];
        std::int64_t fg = 0;
        for (std::int64_t i = 0; i < v.voxels(); ++i) fg += v.channel(0)[i] != 0;
        EXPECT_EQ(total, fg);
      }
      set_num_threads(0);
    }
  }
}

TEST(Components, SnakeThroughManySlabsIsOneComponent) {
  // Rows that switch between y = 0 and y = 4 every two planes, joined by a column in the
  // plane before each switch: one path through 30 planes, crossing every slab boundary.
  Volume v = label_volume(30, 5, 5);
  for (std::int64_t z = 0; z < 30; ++z) {
    const std::int64_t y = (z / 2) % 2 ? 4 : 0;
    for (std::int64_t x = 0; x < 5; ++x) v.at(0, z, y, x) = 3;
    if (z % 2 == 1)
      for (std::int64_t yy = 0; yy < 5; ++yy) v.at(0, z, yy, z % 5) = 3;
  }
  for (int conn : {6, 26}) {
    const Components c = connected_components(v, conn);
    EXPECT_EQ(c.count(), 1);
    EXPECT_EQ(c.voxels[1], 30 * 5 + 15 * 4);
  }
  // Without the columns' middles the rows fall apart into 15 pairs of planes, plus the
  // far end of the last column, which has no next plane to join.
  for (std::int64_t z = 1; z < 30; z += 2)
    for (std::int64_t yy = 1; yy < 4; ++yy) v.at(0, z, yy, z % 5) = 0;
  EXPECT_EQ(connected_components(v, 26).count(), 16);
}

Volume blobs(const Geometry& g) {
  // Label 1: a 5-voxel bar and a 3-voxel bar; label 2: a single voxel and a 4-voxel bar.
  Volume v = label_volume(4, 6, 8, g);
  for (int x = 0; x < 5; ++x) v.at(0, 0, 0, x) = 1;
  for (int x = 0; x < 3; ++x) v.at(0, 3, 5, x) = 1;
  v.at(0, 2, 3, 7) = 2;
  for (int x = 4; x < 8; ++x) v.at(0, 3, 0, x) = 2;
  return v;
}

std::int64_t count_value(const Volume& v, float value) {
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < v.voxels(); ++i) n += v.channel(0)[i] == value;
  return n;
}

TEST(Components, KeepLargestAndRemoveSmall) {
  Geometry g;
  g.spacing = {2, 2, 2};  // 8 mm^3 per voxel
  Volume a = blobs(g);
  keep_largest_component(a, std::vector<int>{1});
  EXPECT_EQ(count_value(a, 1), 5);
  EXPECT_EQ(a.at(0, 0, 0, 4), 1.f);
  EXPECT_EQ(a.at(0, 3, 5, 0), 0.f);
  EXPECT_EQ(count_value(a, 2), 5);  // not listed: untouched

  Volume b = blobs(g);
  remove_small_components(b, 25.0);  // 3 voxels = 24 mm^3 and 1 voxel = 8 mm^3 go
  EXPECT_EQ(count_value(b, 1), 5);
  EXPECT_EQ(count_value(b, 2), 4);
  EXPECT_EQ(b.at(0, 2, 3, 7), 0.f);

  Volume c = blobs(g);
  PostprocessSpec spec;
  spec.keep_largest_component = {2};
  spec.remove_small_mm3 = 30;  // 3 voxels (24) go, 4 voxels (32) stay
  postprocess_labels(c, spec);
  EXPECT_EQ(count_value(c, 1), 5);
  EXPECT_EQ(count_value(c, 2), 4);
  EXPECT_EQ(c.at(0, 3, 5, 1), 0.f);
}

TEST(Statistics, HandMadeVolume) {
  Geometry g;
  g.spacing = {2, 1, 0.5};  // 1 mm^3 per voxel
  Volume labels = label_volume(1, 2, 3, g);
  Volume image(1, 1, 2, 3, g);
  const float lab[6] = {0, 1, 1, 3, 1, 0};
  const float img[6] = {9, 10, 20, -5, 30, 7};
  for (int i = 0; i < 6; ++i) {
    labels.channel(0)[i] = lab[i];
    image.channel(0)[i] = img[i];
  }
  std::vector<LabelSpec> names(2);
  names[0].value = 2;
  names[0].name = "absent";
  names[1].value = 1;
  names[1].name = "organ \"A\"";
  const auto stats = label_statistics(labels, image, names);
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_EQ(stats[0].value, 2);
  EXPECT_EQ(stats[0].voxels, 0);
  EXPECT_EQ(stats[1].value, 1);
  EXPECT_EQ(stats[1].name, "organ \"A\"");
  EXPECT_EQ(stats[1].voxels, 3);
  EXPECT_DOUBLE_EQ(stats[1].volume_ml, 0.003);
  EXPECT_DOUBLE_EQ(stats[1].mean, 20);
  EXPECT_DOUBLE_EQ(stats[1].min, 10);
  EXPECT_DOUBLE_EQ(stats[1].max, 30);
  EXPECT_EQ(stats[2].value, 3);  // found but not named
  EXPECT_EQ(stats[2].name, "");
  EXPECT_DOUBLE_EQ(stats[2].mean, -5);

  const auto j = nlohmann::json::parse(to_json(stats));
  ASSERT_EQ(j["labels"].size(), 3u);
  EXPECT_TRUE(j["labels"][0]["mean"].is_null());
  EXPECT_EQ(j["labels"][1]["name"], "organ \"A\"");
  EXPECT_EQ(j["labels"][1]["voxels"], 3);
  EXPECT_DOUBLE_EQ(j["labels"][1]["volume_ml"].get<double>(), 0.003);
  EXPECT_DOUBLE_EQ(j["labels"][1]["max"].get<double>(), 30);

  Volume bad = labels;
  bad.data = labels.data.clone();
  bad.channel(0)[0] = 1.5f;
  EXPECT_THROW(label_statistics(bad, image), Error);
  Volume small(1, 1, 1, 3);
  EXPECT_THROW(label_statistics(labels, small), Error);
}

}  // namespace
}  // namespace voxinfer
