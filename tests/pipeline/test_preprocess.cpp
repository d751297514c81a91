#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "test_util.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/pipeline/preprocess.h"

namespace voxinfer {
namespace {

// A volume of distinct random values on an arbitrary geometry.
Volume make_volume(std::int64_t c, std::int64_t z, std::int64_t y, std::int64_t x, const Geometry& g,
                   std::uint32_t seed = 1) {
  Volume v;
  v.data = test::random_tensor(Shape{c, z, y, x}, seed, -100.f, 100.f);
  v.geometry = g;
  return v;
}

Geometry oblique_geometry() {
  // 30 degrees about S, then 10 degrees about L: no axis is aligned.
  const double a = M_PI / 6, b = M_PI / 18;
  Eigen::Matrix3d rz, rx;
  rz << std::cos(a), -std::sin(a), 0, std::sin(a), std::cos(a), 0, 0, 0, 1;
  rx << 1, 0, 0, 0, std::cos(b), -std::sin(b), 0, std::sin(b), std::cos(b);
  Geometry g;
  g.direction = rx * rz;
  g.spacing = {0.8, 1.1, 2.5};
  g.origin = {-30.5, 12.25, 7};
  return g;
}

// Every voxel of `out` sits at the physical position of an input voxel holding the same values.
void expect_same_voxels_in_space(const Volume& in, const Volume& out) {
  ASSERT_EQ(out.channels(), in.channels());
  ASSERT_EQ(out.voxels(), in.voxels());
  for (std::int64_t z = 0; z < out.nz(); ++z)
    for (std::int64_t y = 0; y < out.ny(); ++y)
      for (std::int64_t x = 0; x < out.nx(); ++x) {
        const Eigen::Vector3d p = out.geometry.index_to_physical(Eigen::Vector3d(double(x), double(y), double(z)));
        const Eigen::Vector3d i = in.geometry.physical_to_index(p);
        const Eigen::Vector3d r = i.array().round().matrix();
        ASSERT_NEAR((i - r).norm(), 0, 1e-9) << "voxel " << x << "," << y << "," << z << " is off the input grid";
        for (std::int64_t c = 0; c < in.channels(); ++c)
          ASSERT_EQ(out.at(c, z, y, x), in.at(c, std::int64_t(r.z()), std::int64_t(r.y()), std::int64_t(r.x())));
      }
}

void expect_same_geometry(const Geometry& a, const Geometry& b, double tol = 1e-9) {
  EXPECT_NEAR((a.spacing - b.spacing).norm(), 0, tol);
  EXPECT_NEAR((a.origin - b.origin).norm(), 0, tol);
  EXPECT_NEAR((a.direction - b.direction).norm(), 0, tol);
}

void expect_equal_tensors(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  const Tensor x = a.contiguous(), y = b.contiguous();
  for (std::int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(x.data<float>()[i], y.data<float>()[i]) << "element " << i;
}

TEST(Reorient, HandComputedLpsToRas) {
  Geometry g;  // LPS identity
  g.spacing = {2, 3, 4};
  g.origin = {10, 20, 30};
  Volume v(1, 1, 2, 3, g);
  for (int i = 0; i < 6; ++i) v.data.data<float>()[i] = float(i);  // [y][x] = 3y + x
  const AxisPermutation t = orientation_transform(g, "RAS");
  EXPECT_EQ(t.perm, (std::array<int, 3>{0, 1, 2}));
  EXPECT_EQ(t.flip, (std::array<bool, 3>{true, true, false}));
  const Volume r = reorient(v, "RAS");
  EXPECT_EQ(r.geometry.orientation_code(), "RAS");
  // x and y reversed: r[y][x] = v[1-y][2-x].
  EXPECT_EQ(r.at(0, 0, 0, 0), 5.f);
  EXPECT_EQ(r.at(0, 0, 0, 2), 3.f);
  EXPECT_EQ(r.at(0, 0, 1, 0), 2.f);
  // The new origin is the old last voxel in x and y: 10 + 2*2, 20 + 1*3.
  EXPECT_DOUBLE_EQ(r.geometry.origin.x(), 14);
  EXPECT_DOUBLE_EQ(r.geometry.origin.y(), 23);
  EXPECT_DOUBLE_EQ(r.geometry.origin.z(), 30);
  EXPECT_DOUBLE_EQ(r.geometry.direction(0, 0), -1);
  EXPECT_DOUBLE_EQ(r.geometry.direction(1, 1), -1);
}

TEST(Reorient, RoundTripsKeepEveryVoxelCentre) {
  Geometry g;
  g.spacing = {0.7, 1.3, 2.9};
  g.origin = {5, -7, 11};
  const Volume v = make_volume(2, 5, 4, 3, g, 7);
  const std::vector<std::string> chain = {"RAS", "LPS", "LIA", "RAS", "PIR", "LPS"};
  Volume cur = v;
  for (const auto& code : chain) {
    Volume next = reorient(cur, code);
    EXPECT_EQ(next.geometry.orientation_code(), code);
    expect_same_voxels_in_space(cur, next);
    expect_same_voxels_in_space(v, next);
    cur = next;
  }
  // Back in LPS: the original grid and voxels.
  expect_same_geometry(cur.geometry, v.geometry);
  expect_equal_tensors(cur.data, v.data);
}

TEST(Reorient, InverseUndoes) {
  Geometry g;
  g.direction = direction_from_code("LIA");
  g.spacing = {1, 2, 3};
  g.origin = {1, 2, 3};
  const Volume v = make_volume(1, 4, 5, 6, g, 3);
  const AxisPermutation t = orientation_transform(g, "RAS");
  const Volume r = permute_axes(v, t);
  EXPECT_EQ(r.geometry.orientation_code(), "RAS");
  EXPECT_EQ(r.nx(), 6);  // L stays on x; A comes from z, S from y
  EXPECT_EQ(r.ny(), 4);
  EXPECT_EQ(r.nz(), 5);
  const Volume back = permute_axes(r, inverse(t));
  expect_same_geometry(back.geometry, g);
  expect_equal_tensors(back.data, v.data);
  EXPECT_TRUE(orientation_transform(g, "LIA").is_identity());
}

TEST(Reorient, ObliqueDirectionsArePermutedNotSnapped) {
  const Geometry g = oblique_geometry();
  const Volume v = make_volume(1, 3, 4, 5, g, 5);
  for (const char* code : {"RAS", "LIA", "SPL"}) {
    const Volume r = reorient(v, code);
    EXPECT_EQ(r.geometry.orientation_code(), code);
    EXPECT_TRUE(r.geometry.is_oblique());
    // Each output direction column is +- an input column.
    for (int c = 0; c < 3; ++c) {
      double best = 0;
      for (int a = 0; a < 3; ++a) best = std::max(best, std::abs(r.geometry.direction.col(c).dot(g.direction.col(a))));
      EXPECT_NEAR(best, 1.0, 1e-12);
    }
    expect_same_voxels_in_space(v, r);
    const Volume back = reorient(r, g.orientation_code());
    expect_same_geometry(back.geometry, g);
    expect_equal_tensors(back.data, v.data);
  }
}

TEST(Resample, SameSpacingIsTheIdentity) {
  Geometry g = oblique_geometry();
  const Volume v = make_volume(2, 4, 5, 6, g, 11);
  for (Interpolation interp : {Interpolation::linear, Interpolation::nearest}) {
    const Volume r = resample_to_spacing(v, {0.8, 1.1, 2.5}, interp);
    expect_same_geometry(r.geometry, g, 0);
    expect_equal_tensors(r.data, v.data);
    const Volume s = resample_to_grid(v, g, {6, 5, 4}, interp);
    expect_same_geometry(s.geometry, g, 0);
    expect_equal_tensors(s.data, v.data);
  }
}

TEST(Resample, SizeRules) {
  Geometry g;
  g.spacing = {1.0, 0.7, 3.0};
  // extent: round(n * s / s'); centres: round((n - 1) * s / s' + 1); halves to even.
  EXPECT_EQ(resampled_size({10, 15, 5}, g, {0.5, 1.4, 2.0}, SizeRule::extent), (std::array<std::int64_t, 3>{20, 8, 8}));
  EXPECT_EQ(resampled_size({10, 15, 5}, g, {0.5, 1.4, 2.0}, SizeRule::centres), (std::array<std::int64_t, 3>{19, 8, 7}));
  // MONAI rounds (n - 1) * s / s' + 1 as a whole: 30 planes of 3 mm at 2 mm give
  // round(44.5) = 44 (compute_shape_offset), not round(43.5) + 1 = 45.
  Geometry m;
  m.spacing = {3.0, 3.0, 3.0};
  EXPECT_EQ(resampled_size({122, 101, 30}, m, {1.5, 1.5, 2.0}, SizeRule::centres), (std::array<std::int64_t, 3>{243, 201, 44}));
  // 5 * 0.5 = 2.5 rounds to 2 (even), as numpy and Python do.
  Geometry h;
  EXPECT_EQ(resampled_size({5, 3, 1}, h, {2.0, 2.0, 1.0}, SizeRule::extent), (std::array<std::int64_t, 3>{2, 2, 1}));
}

TEST(Resample, TrilinearReproducesALinearFunction) {
  Geometry g;
  g.spacing = {1.0, 2.0, 1.5};
  g.origin = {3, 4, 5};
  Volume v(1, 6, 7, 8, g);
  auto f = [](const Eigen::Vector3d& p) { return 0.5 * p.x() - 0.25 * p.y() + 0.125 * p.z() + 2; };
  for (std::int64_t z = 0; z < 6; ++z)
    for (std::int64_t y = 0; y < 7; ++y)
      for (std::int64_t x = 0; x < 8; ++x)
        v.at(0, z, y, x) = float(f(g.index_to_physical(Eigen::Vector3d(double(x), double(y), double(z)))));
  const Volume r = resample_to_spacing(v, {0.75, 1.25, 2.0});
  EXPECT_EQ(r.nx(), 11);  // round(8 / 0.75) = round(10.67)
  EXPECT_EQ(r.ny(), 11);  // round(7 * 2 / 1.25) = round(11.2)
  EXPECT_EQ(r.nz(), 4);   // round(6 * 1.5 / 2) = round(4.5) = 4
  expect_same_geometry(r.geometry, Geometry{Eigen::Vector3d(0.75, 1.25, 2.0), g.origin, g.direction});
  int checked = 0;
  for (std::int64_t z = 0; z < r.nz(); ++z)
    for (std::int64_t y = 0; y < r.ny(); ++y)
      for (std::int64_t x = 0; x < r.nx(); ++x) {
        const Eigen::Vector3d p = r.geometry.index_to_physical(Eigen::Vector3d(double(x), double(y), double(z)));
        const Eigen::Vector3d i = g.physical_to_index(p);
        if ((i.array() > Eigen::Array3d(7, 6, 5)).any()) {
          continue;  // beyond the last input centre: border value, checked below
        }
        EXPECT_NEAR(r.at(0, z, y, x), f(p), 1e-4) << x << "," << y << "," << z;
        ++checked;
      }
  EXPECT_GT(checked, 300);
  // Border: x = 10 sits at input x 7.5 -> the value at input x 7.
  EXPECT_NEAR(r.at(0, 0, 0, 10), v.at(0, 0, 0, 7), 1e-6);
}

TEST(Resample, NearestKeepsLabelValues) {
  Geometry g;
  g.spacing = {1, 1, 1};
  Volume v(1, 4, 4, 4, g);
  for (std::int64_t i = 0; i < v.voxels(); ++i) v.data.data<float>()[i] = float(i % 3);
  const Volume r = resample_to_spacing(v, {0.6, 1.7, 0.9}, Interpolation::nearest);
  for (std::int64_t i = 0; i < r.voxels(); ++i) {
    const float x = r.data.data<float>()[i];
    EXPECT_TRUE(x == 0.f || x == 1.f || x == 2.f) << x;
  }
  // Output voxel 0 is input voxel 0; output x=2 sits at input x 1.2 -> 1.
  EXPECT_EQ(r.at(0, 0, 0, 0), v.at(0, 0, 0, 0));
  EXPECT_EQ(r.at(0, 0, 0, 2), v.at(0, 0, 0, 1));
}

TEST(Resample, OntoAShiftedGridAveragesNeighbours) {
  Geometry g;
  g.spacing = {2, 2, 2};
  const Volume v = make_volume(1, 3, 3, 3, g, 9);
  Geometry h = g;
  h.origin = {1, 0, 0};  // half a voxel along x
  const Volume r = resample_to_grid(v, h, {2, 3, 3});
  for (std::int64_t z = 0; z < 3; ++z)
    for (std::int64_t y = 0; y < 3; ++y)
      for (std::int64_t x = 0; x < 2; ++x)
        EXPECT_NEAR(r.at(0, z, y, x), 0.5f * (v.at(0, z, y, x) + v.at(0, z, y, x + 1)), 1e-4);
  // A permuted and flipped copy of an oblique grid is not axis-aligned relative to the
  // input, so it takes the general path; its voxel centres coincide with the input's.
  const Geometry og = oblique_geometry();
  const Volume ov = make_volume(1, 4, 5, 6, og, 4);
  const Volume ro = reorient(ov, "SAR");
  const Volume same = resample_to_grid(ov, ro.geometry, {ro.nx(), ro.ny(), ro.nz()});
  expect_equal_tensors(same.data, ro.data);
}

TEST(Resample, IndependentOfThreadCount) {
  const Volume v = make_volume(1, 9, 10, 11, oblique_geometry(), 2);
  set_num_threads(1);
  const Volume a = resample_to_spacing(v, {0.5, 0.9, 1.7});
  const Volume c = resample_to_grid(v, Geometry{}, {7, 8, 9});
  set_num_threads(4);
  const Volume b = resample_to_spacing(v, {0.5, 0.9, 1.7});
  const Volume d = resample_to_grid(v, Geometry{}, {7, 8, 9});
  set_num_threads(0);
  expect_equal_tensors(a.data, b.data);
  expect_equal_tensors(c.data, d.data);
}

TEST(Resize, MatchesTorchTrilinearAlignCornersFalse) {
  Geometry g;
  g.spacing = {2, 1, 1};
  Volume v(1, 1, 1, 4, g);
  for (int i = 0; i < 4; ++i) v.at(0, 0, 0, i) = float(i);
  const Volume r = resize(v, {8, 1, 1});
  const float expected[8] = {0, 0.25f, 0.75f, 1.25f, 1.75f, 2.25f, 2.75f, 3};
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(r.at(0, 0, 0, i), expected[i]) << i;
  EXPECT_DOUBLE_EQ(r.geometry.spacing.x(), 1.0);
  EXPECT_DOUBLE_EQ(r.geometry.origin.x(), -0.5);  // the output's first centre sits at input index -0.25
}

TEST(Intensity, FixedOps) {
  Volume v(1, 1, 1, 5);
  const float in[5] = {-100, -57, 0, 164, 300};
  for (int i = 0; i < 5; ++i) v.at(0, 0, 0, i) = in[i];
  IntensityOp clip;
  clip.kind = IntensityOp::Kind::clip;
  clip.min = -57;
  clip.max = 164;
  IntensityOp scale;
  scale.kind = IntensityOp::Kind::scale;
  scale.from = {-57, 164};
  scale.to = {0, 1};
  const std::vector<IntensityOp> ops{clip, scale};
  apply_intensity(v, ops);
  const float expected[5] = {0, 0, 57.f / 221.f, 1, 1};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(v.at(0, 0, 0, i), expected[i], 1e-7) << i;

  IntensityOp z;
  z.kind = IntensityOp::Kind::zscore;
  z.mean = 10;
  z.std = 4;
  Volume w(1, 1, 1, 2);
  w.at(0, 0, 0, 0) = 2;
  w.at(0, 0, 0, 1) = 30;
  apply_intensity(w, z);
  EXPECT_FLOAT_EQ(w.at(0, 0, 0, 0), -2);
  EXPECT_FLOAT_EQ(w.at(0, 0, 0, 1), 5);

  IntensityOp s2 = scale;  // clipped output
  s2.from = {0, 10};
  s2.to = {1, -1};
  s2.clip_output = true;
  Volume u(1, 1, 1, 3);
  u.at(0, 0, 0, 0) = -5;
  u.at(0, 0, 0, 1) = 5;
  u.at(0, 0, 0, 2) = 15;
  apply_intensity(u, s2);
  EXPECT_FLOAT_EQ(u.at(0, 0, 0, 0), 1);
  EXPECT_FLOAT_EQ(u.at(0, 0, 0, 1), 0);
  EXPECT_FLOAT_EQ(u.at(0, 0, 0, 2), -1);
}

TEST(Intensity, PerImageOps) {
  // Channel 0: 0, 2, 4, 6 (with one zero); channel 1: constant 3.
  Volume v(2, 1, 2, 2);
  const float c0[4] = {0, 2, 4, 6};
  for (int i = 0; i < 4; ++i) {
    v.channel(0)[i] = c0[i];
    v.channel(1)[i] = 3;
  }
  IntensityOp z;
  z.kind = IntensityOp::Kind::zscore;
  Volume a = v;
  a.data = v.data.clone();
  apply_intensity(a, z);
  const double sd = std::sqrt(5.0);  // population std of 0,2,4,6 around 3
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(a.channel(0)[i], (c0[i] - 3) / sd, 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.channel(1)[i], 0.f);  // constant channel -> 0
  // nonzero: statistics of 2, 4, 6 (mean 4, std sqrt(8/3)); the zero stays zero.
  z.nonzero = true;
  Volume b = v;
  b.data = v.data.clone();
  apply_intensity(b, z);
  EXPECT_EQ(b.channel(0)[0], 0.f);
  for (int i = 1; i < 4; ++i) EXPECT_NEAR(b.channel(0)[i], (c0[i] - 4) / std::sqrt(8.0 / 3.0), 1e-6);
  // minmax over all channels (channel_wise false): min 0, max 6.
  IntensityOp mm;
  mm.kind = IntensityOp::Kind::minmax;
  mm.channel_wise = false;
  Volume c = v;
  c.data = v.data.clone();
  apply_intensity(c, mm);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(c.channel(0)[i], c0[i] / 6.f);
  EXPECT_FLOAT_EQ(c.channel(1)[0], 0.5f);
  // per channel: the constant channel becomes 0.
  mm.channel_wise = true;
  Volume d = v;
  d.data = v.data.clone();
  apply_intensity(d, mm);
  EXPECT_FLOAT_EQ(d.channel(0)[3], 1.f);
  EXPECT_FLOAT_EQ(d.channel(1)[0], 0.f);
}

TEST(Intensity, PercentilesMatchNumpy) {
  std::vector<float> vals{7, 1, 10, 3, 5, 2, 9, 4, 8, 6};
  // np.percentile(np.arange(1, 11), q) for q = 25, 50, 99.5, 0, 100.
  EXPECT_DOUBLE_EQ(percentile(vals, 25), 3.25);
  EXPECT_DOUBLE_EQ(percentile(vals, 50), 5.5);
  EXPECT_NEAR(percentile(vals, 99.5), 9.955, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(vals, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(vals, 100), 10);
  Volume v(1, 1, 1, 10);
  for (int i = 0; i < 10; ++i) v.at(0, 0, 0, i) = float(i + 1);
  IntensityOp pc;
  pc.kind = IntensityOp::Kind::percentile_clip;
  pc.lo = 25;
  pc.hi = 50;
  apply_intensity(v, pc);
  EXPECT_FLOAT_EQ(v.at(0, 0, 0, 0), 3.25f);
  EXPECT_FLOAT_EQ(v.at(0, 0, 0, 3), 4.f);
  EXPECT_FLOAT_EQ(v.at(0, 0, 0, 9), 5.5f);
}

TEST(ModelTensor, AxisOrders) {
  const Volume v = make_volume(2, 3, 4, 5, Geometry{}, 13);
  const Tensor zyx = to_model_tensor(v, AxisOrder::zyx);
  EXPECT_EQ(zyx.shape(), (Shape{1, 2, 3, 4, 5}));
  EXPECT_TRUE(zyx.shares_storage_with(v.data));
  const Tensor xyz = to_model_tensor(v, AxisOrder::xyz);
  EXPECT_EQ(xyz.shape(), (Shape{1, 2, 5, 4, 3}));
  for (std::int64_t c = 0; c < 2; ++c)
    for (std::int64_t z = 0; z < 3; ++z)
      for (std::int64_t y = 0; y < 4; ++y)
        for (std::int64_t x = 0; x < 5; ++x) ASSERT_EQ(xyz.at<float>(0, c, x, y, z), v.at(c, z, y, x));
  expect_equal_tensors(from_model_order(xyz, AxisOrder::xyz), v.data);
  expect_equal_tensors(from_model_order(zyx, AxisOrder::zyx), v.data);
  const Volume back = volume_from_model_tensor(xyz, AxisOrder::xyz, v.geometry);
  EXPECT_EQ(back.nx(), 5);
  expect_equal_tensors(back.data, v.data);
}

}  // namespace
}  // namespace voxinfer

namespace voxinfer {
namespace {

Volume ramp(std::int64_t z, std::int64_t y, std::int64_t x, const Geometry& g = {}) {
  Volume v(1, z, y, x, g);
  for (std::int64_t i = 0; i < v.voxels(); ++i) v.data.data<float>()[i] = float(i + 1);
  return v;
}

TEST(Crop, WindowKeepsPhysicalPositions) {
  Geometry g;
  g.spacing = {0.5, 2, 3};
  g.origin = {1, 2, 3};
  g.direction = direction_from_code("RAI");
  const Volume v = ramp(3, 4, 5, g);
  const Volume c = crop_or_pad(v, {-1, 2, 1}, {4, 3, 3}, -7.f);
  for (std::int64_t z = 0; z < 3; ++z)
    for (std::int64_t y = 0; y < 3; ++y)
      for (std::int64_t x = 0; x < 4; ++x) {
        const std::int64_t ix = x - 1, iy = y + 2, iz = z + 1;
        const bool inside = ix >= 0 && ix < 5 && iy < 4 && iz < 3;
        EXPECT_EQ(c.at(0, z, y, x), inside ? v.at(0, iz, iy, ix) : -7.f) << x << "," << y << "," << z;
        const Eigen::Vector3d p = c.geometry.index_to_physical(Eigen::Vector3d(double(x), double(y), double(z)));
        const Eigen::Vector3d q = v.geometry.index_to_physical(Eigen::Vector3d(double(ix), double(iy), double(iz)));
        EXPECT_NEAR((p - q).norm(), 0, 1e-12);
      }
}

TEST(Crop, CenterCropOrPadLikeMonai) {
  const Volume v = ramp(1, 1, 10);
  // 10 -> 4: start 10/2 - 4/2 = 3.
  const Volume a = center_crop_or_pad(v, {4, 1, 1});
  EXPECT_EQ(a.at(0, 0, 0, 0), 4.f);
  EXPECT_EQ(a.at(0, 0, 0, 3), 7.f);
  // 9 -> 4: start 4 - 2 = 2.
  const Volume b = center_crop_or_pad(ramp(1, 1, 9), {4, 1, 1});
  EXPECT_EQ(b.at(0, 0, 0, 0), 3.f);
  // 5 -> 8: pad 1 before, 2 after.
  const Volume c = center_crop_or_pad(ramp(1, 1, 5), {8, 1, 1});
  const float expected[8] = {0, 1, 2, 3, 4, 5, 0, 0};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(c.at(0, 0, 0, i), expected[i]) << i;
  EXPECT_DOUBLE_EQ(c.geometry.origin.x(), -1);
}

TEST(Crop, ForegroundBoxAndCrop) {
  Volume v(2, 6, 7, 8);
  EXPECT_FALSE(foreground_box(v).has_value());
  v.at(0, 2, 3, 4) = 1;
  v.at(1, 4, 1, 5) = 2;  // another channel counts too
  v.at(0, 5, 5, 5) = -3;  // negative values are background
  const auto box = foreground_box(v);
  ASSERT_TRUE(box.has_value());
  EXPECT_EQ(box->begin, (std::array<std::int64_t, 3>{4, 1, 2}));
  EXPECT_EQ(box->end, (std::array<std::int64_t, 3>{6, 4, 5}));
  const auto grown = foreground_box(v, 2);
  EXPECT_EQ(grown->begin, (std::array<std::int64_t, 3>{2, 0, 0}));
  EXPECT_EQ(grown->end, (std::array<std::int64_t, 3>{8, 6, 6}));
  // A 2x3x3 window centred on the box: start = begin + len/2 - size/2 = (4, 1, 2).
  const Volume c = foreground_crop(v, {2, 3, 3});
  EXPECT_EQ(c.at(0, 0, 2, 0), 1.f);  // (4, 3, 2) -> (0, 2, 0)
  EXPECT_EQ(c.at(1, 2, 0, 1), 2.f);  // (5, 1, 4) -> (1, 0, 2)
}

}  // namespace
}  // namespace voxinfer
