// NiiVue's conform() (pipeline/conform.h): small generated volumes whose expected output
// follows from NiiVue's documented formulas (worked out in each test), and the shared MNI
// template against the file NiiVue itself conformed, voxel for voxel with the same affine.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/conform.h"

namespace voxinfer {
namespace {

// An axis-aligned RAS volume with 1 mm voxels and its RAS origin at 0: NIfTI index (i, j, k)
// lies at world (i, j, k).
Volume ras_volume(std::int64_t nx, std::int64_t ny, std::int64_t nz, const char* voxel_type) {
  Eigen::Matrix4d ras = Eigen::Matrix4d::Identity();
  Volume v(1, nz, ny, nx, Geometry::from_affine_ras(ras));
  v.metadata[kVoxelTypeKey] = voxel_type;
  return v;
}

// NiiVue reads the 8 neighbours at fff + {0, 1} + {0, nx} + {0, nx * ny}; a read past the end
// of the array is undefined in JavaScript, NaN after its (zero) weight, 0 in the uint8 output.
bool reads_past_end(std::int64_t i, std::int64_t j, std::int64_t k, std::int64_t nx, std::int64_t ny, std::int64_t nz) {
  return i + j * nx + k * nx * ny + 1 + nx + nx * ny >= nx * ny * nz;
}

// uint8 input (not rescaled, only shifted by NiiVue's global minimum), 6 x 5 x 4 voxels,
// conformed onto 8^3. conformVox2Vox: centre c = A (dims / 2, 1) = (3, 2.5, 2); LIA output
// affine rows (-1, 0, 0), (0, 0, 1), (0, -1, 0); vol_centre = 0.5 (-8, 8, -8); translation
// c - vol_centre = (7, -1.5, 6). Output (x, y, z) samples input (7 - x, z - 1.5, 6 - y).
// Values f = 20 + i + 2j + 4k: linear, so trilinear sampling is exact, and at j + 0.5 it is an
// integer. Global minimum over the central region (borders floor(dims / 4) = 1, 1, 1):
// f(1, 1, 1) = 27.
TEST(Conform, Uint8InputIsShiftedNotScaled) {
  const std::int64_t nx = 6, ny = 5, nz = 4;
  Volume in = ras_volume(nx, ny, nz, "uint8");
  auto f = [](double i, double j, double k) { return 20 + i + 2 * j + 4 * k; };
  for (std::int64_t k = 0; k < nz; ++k)
    for (std::int64_t j = 0; j < ny; ++j)
      for (std::int64_t i = 0; i < nx; ++i) in.at(0, k, j, i) = static_cast<float>(f(double(i), double(j), double(k)));
  ConformOptions o;
  o.size = {8, 8, 8};
  ConformParameters p;
  const Volume out = niivue_conform(in, o, &p);
  EXPECT_TRUE(p.uint8_input);
  EXPECT_EQ(p.global_min, 27);
  EXPECT_EQ(p.src_min, 27);
  EXPECT_EQ(p.scale, 1);
  EXPECT_EQ(out.geometry.orientation_code(), "LIA");
  Eigen::Matrix4d expected_affine;
  expected_affine << -1, 0, 0, 7, 0, 0, 1, -1.5, 0, -1, 0, 6, 0, 0, 0, 1;
  EXPECT_EQ(out.geometry.affine_ras(), expected_affine);
  EXPECT_EQ(out.metadata.at(kVoxelTypeKey), "uint8");
  int inside = 0;
  for (std::int64_t z = 0; z < 8; ++z)
    for (std::int64_t y = 0; y < 8; ++y)
      for (std::int64_t x = 0; x < 8; ++x) {
        const double i = 7.0 - double(x), j = double(z) - 1.5, k = 6.0 - double(y);
        float expected = 0;
        const bool in_volume = std::floor(i) >= 0 && std::floor(j) >= 0 && std::floor(k) >= 0 &&
                               std::ceil(i) < double(nx) && std::ceil(j) < double(ny) && std::ceil(k) < double(nz);
        if (in_volume && !reads_past_end(std::int64_t(i), std::int64_t(std::floor(j)), std::int64_t(k), nx, ny, nz)) {
          expected = static_cast<float>(std::max(0.0, f(i, j, k) - 27));
          ++inside;
        }
        ASSERT_EQ(out.at(0, z, y, x), expected) << "output voxel " << x << "," << y << "," << z;
      }
  EXPECT_GT(inside, 50);
}

// int16 input, 8^3, 1 mm RAS, onto 8^3: centre (4, 4, 4), translation (8, 0, 8), output (x, y, z)
// samples input (8 - x, z, 8 - y) exactly (integer positions). Values: 0, a block of 500 and one
// voxel of 1000 in the central region. getScale: global range [0, 1000], bin size 1; every
// voxel lies in bins 0..999 (1000 in the last one); nz < 1000 so the upper count is all 512
// voxels, first reached at bin 999: idx = 998, src_max = 998, scale = 255 / 998.
TEST(Conform, Int16InputUsesTheRobustMaximum) {
  const std::int64_t n = 8;
  Volume in = ras_volume(n, n, n, "int16");
  std::fill_n(in.channel(0), in.voxels(), 0.f);
  for (std::int64_t k = 2; k < 6; ++k)
    for (std::int64_t j = 1; j < 7; ++j)
      for (std::int64_t i = 2; i < 5; ++i) in.at(0, k, j, i) = 500;
  in.at(0, 4, 4, 4) = 1000;
  ConformOptions o;
  o.size = {8, 8, 8};
  ConformParameters p;
  const Volume out = niivue_conform(in, o, &p);
  EXPECT_FALSE(p.uint8_input);
  EXPECT_EQ(p.global_min, 0);
  EXPECT_EQ(p.global_max, 1000);
  EXPECT_EQ(p.src_min, 0);
  EXPECT_EQ(p.scale, 255.0 / 998.0);
  for (std::int64_t z = 0; z < n; ++z)
    for (std::int64_t y = 0; y < n; ++y)
      for (std::int64_t x = 0; x < n; ++x) {
        const std::int64_t i = 8 - x, j = z, k = 8 - y;
        float expected = 0;
        if (i < n && k < n && !reads_past_end(i, j, k, n, n, n))
          expected = std::trunc(std::min(255.0, double(in.at(0, k, j, i)) * (255.0 / 998.0)));
        ASSERT_EQ(out.at(0, z, y, x), expected) << "output voxel " << x << "," << y << "," << z;
      }
  // The block maps to trunc(500 * 255 / 998) = 127, the bright voxel is clamped to 255.
  EXPECT_EQ(out.at(0, 4, 4, 4), 255);
  EXPECT_EQ(out.at(0, 3, 4, 4), 127);
}

TEST(Conform, ConformedTest) {
  Volume v = ras_volume(4, 4, 4, "uint8");
  EXPECT_FALSE(is_niivue_conformed(v));
  ConformOptions o;
  o.size = {4, 4, 4};
  std::fill_n(v.channel(0), v.voxels(), 1.f);
  const Volume c = niivue_conform(v, o);
  EXPECT_EQ(c.geometry.orientation_code(), "LIA");
  EXPECT_FALSE(is_niivue_conformed(c));  // 256^3 only
  Volume big(1, 256, 256, 256, c.geometry);
  big.metadata[kVoxelTypeKey] = "uint8";
  EXPECT_TRUE(is_niivue_conformed(big));
  big.metadata[kVoxelTypeKey] = "int16";
  EXPECT_FALSE(is_niivue_conformed(big));
  Volume two(2, 4, 4, 4);
  EXPECT_THROW(niivue_conform(two, o), Error);
}

TEST(Conform, MniTemplateEqualsNiivue) {
  VOXINFER_REQUIRE_SHARED("data/brainchop_zoo/input/conform/MNI152_2009_template_conformed_niivue.nii.gz");
  const auto dir = test::shared_dir() / "data/brainchop_zoo/input/conform";
  const Volume in = read_image((dir / "MNI152_2009_template.nii.gz").string());
  const Volume ref = read_image((dir / "MNI152_2009_template_conformed_niivue.nii.gz").string());
  ConformParameters p;
  const Volume out = niivue_conform(in, {}, &p);
  ASSERT_EQ(out.data.shape(), ref.data.shape());
  EXPECT_EQ(out.geometry.affine_ras(), ref.geometry.affine_ras());
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < ref.voxels(); ++i) differ += out.channel(0)[i] != ref.channel(0)[i];
  std::printf("[conform] MNI152 template: %lld of %lld voxels differ from NiiVue's conform\n",
              static_cast<long long>(differ), static_cast<long long>(ref.voxels()));
  EXPECT_EQ(differ, 0);
  std::ifstream f(dir / "MNI152_2009_template_conform.json");
  const auto j = nlohmann::json::parse(f);
  EXPECT_EQ(p.global_min, j["global_min"].get<double>());
  EXPECT_EQ(p.global_max, j["global_max"].get<double>());
  EXPECT_EQ(p.src_min, j["src_min"].get<double>());
  EXPECT_DOUBLE_EQ(p.scale, j["scale"].get<double>());
  for (int k = 0; k < 16; ++k) EXPECT_EQ(p.inv_vox2vox[k], j["inv_vox2vox"][k].get<double>()) << k;
}

}  // namespace
}  // namespace voxinfer
