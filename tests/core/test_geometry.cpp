#include <gtest/gtest.h>

#include <cmath>

#include "voxinfer/core/geometry.h"
#include "voxinfer/core/volume.h"

namespace voxinfer {
namespace {

TEST(Geometry, AxisAlignedHandComputed) {
  Geometry g;
  g.spacing = {0.5, 0.75, 2.0};
  g.origin = {-10, 20, 5};
  const Eigen::Vector3d p = g.index_to_physical({2, 4, 3});
  EXPECT_DOUBLE_EQ(p.x(), -10 + 1.0);
  EXPECT_DOUBLE_EQ(p.y(), 20 + 3.0);
  EXPECT_DOUBLE_EQ(p.z(), 5 + 6.0);
  const Eigen::Vector3d i = g.physical_to_index(p);
  EXPECT_NEAR((i - Eigen::Vector3d(2, 4, 3)).norm(), 0, 1e-12);
  EXPECT_EQ(g.orientation_code(), "LPS");
  EXPECT_FALSE(g.is_oblique());
  // RAS affine flips the first two rows.
  const Eigen::Matrix4d ras = g.affine_ras();
  EXPECT_DOUBLE_EQ(ras(0, 0), -0.5);
  EXPECT_DOUBLE_EQ(ras(1, 1), -0.75);
  EXPECT_DOUBLE_EQ(ras(2, 2), 2.0);
  EXPECT_DOUBLE_EQ(ras(0, 3), 10);
  EXPECT_DOUBLE_EQ(ras(1, 3), -20);
  EXPECT_DOUBLE_EQ(ras(2, 3), 5);
}

TEST(Geometry, ObliqueHandComputed) {
  // 30 degrees rotation about S: x axis = (cos, sin, 0), y axis = (-sin, cos, 0) in LPS.
  const double c = std::cos(M_PI / 6), s = std::sin(M_PI / 6);
  Geometry g;
  g.spacing = {2, 1, 3};
  g.origin = {1, 2, 3};
  g.direction << c, -s, 0, s, c, 0, 0, 0, 1;
  // index (1, 1, 1): origin + 2*(c,s,0) + 1*(-s,c,0) + 3*(0,0,1)
  const Eigen::Vector3d p = g.index_to_physical({1, 1, 1});
  EXPECT_NEAR(p.x(), 1 + 2 * c - s, 1e-12);
  EXPECT_NEAR(p.y(), 2 + 2 * s + c, 1e-12);
  EXPECT_NEAR(p.z(), 3 + 3, 1e-12);
  EXPECT_NEAR((g.physical_to_index(p) - Eigen::Vector3d(1, 1, 1)).norm(), 0, 1e-12);
  EXPECT_TRUE(g.is_oblique());
  EXPECT_EQ(g.orientation_code(), "LPS");  // closest axes
  // RAS round trip reproduces the geometry.
  const Geometry h = Geometry::from_affine_ras(g.affine_ras());
  EXPECT_NEAR((h.spacing - g.spacing).norm(), 0, 1e-12);
  EXPECT_NEAR((h.origin - g.origin).norm(), 0, 1e-12);
  EXPECT_NEAR((h.direction - g.direction).norm(), 0, 1e-12);
  g.validate("oblique");
}

TEST(Geometry, OrientationCodes) {
  for (const char* code : {"RAS", "LPS", "LIA", "PIR", "ASL", "RPI"}) {
    Geometry g;
    g.direction = direction_from_code(code);
    EXPECT_EQ(g.orientation_code(), code);
  }
  EXPECT_THROW(direction_from_code("LLS"), Error);
  EXPECT_THROW(direction_from_code("XYZ"), Error);
  // NIfTI identity RAS affine is RAS.
  EXPECT_EQ(Geometry::from_affine_ras(Eigen::Matrix4d::Identity()).orientation_code(), "RAS");
}

TEST(Geometry, ValidateRejectsBadSpacingAndDirection) {
  Geometry g;
  g.spacing = {1, 0, 1};
  EXPECT_THROW(g.validate("x"), Error);
  g.spacing = {1, std::nan(""), 1};
  EXPECT_THROW(g.validate("x"), Error);
  g.spacing = {1, 1, 1};
  g.direction(0, 0) = 3;
  EXPECT_THROW(g.validate("x"), Error);
}

TEST(Volume, LayoutIsCZYX) {
  Volume v(2, 3, 4, 5);
  v.at(1, 2, 3, 4) = 9.f;
  EXPECT_EQ(v.data.data<float>()[2 * 3 * 4 * 5 - 1], 9.f);
  EXPECT_EQ(v.voxels(), 60);
}

}  // namespace
}  // namespace voxinfer
