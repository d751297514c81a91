// Helpers shared by the nnU-Net tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>

#include "voxinfer/core/volume.h"

namespace voxinfer::test {

// Fraction of voxels with the same label, after checking that both maps lie on one grid.
inline double label_agreement(const Volume& ours, const Volume& ref) {
  EXPECT_EQ(ours.nx(), ref.nx());
  EXPECT_EQ(ours.ny(), ref.ny());
  EXPECT_EQ(ours.nz(), ref.nz());
  EXPECT_LT((ours.geometry.origin - ref.geometry.origin).norm(), 1e-3);
  EXPECT_LT((ours.geometry.spacing - ref.geometry.spacing).norm(), 1e-5);
  EXPECT_LT((ours.geometry.direction - ref.geometry.direction).norm(), 1e-6);
  if (ours.voxels() != ref.voxels()) return 0;
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < ours.voxels(); ++i) same += ours.channel(0)[i] == ref.channel(0)[i];
  return static_cast<double>(same) / static_cast<double>(ours.voxels());
}

}  // namespace voxinfer::test
