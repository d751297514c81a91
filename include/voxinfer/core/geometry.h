// Geometry of a voxel grid in patient space, exactly as ITK and DICOM define it (LPS):
//   physical = origin + direction * diag(spacing) * index,  index = (i, j, k) = (x, y, z).
// Column c of `direction` is the unit vector of index axis c in LPS.
#pragma once

#include <Eigen/Dense>
#include <cmath>
#include <string>

#include "voxinfer/core/error.h"

namespace voxinfer {

struct Geometry {
  Eigen::Vector3d spacing = Eigen::Vector3d::Ones();
  Eigen::Vector3d origin = Eigen::Vector3d::Zero();
  Eigen::Matrix3d direction = Eigen::Matrix3d::Identity();

  // Voxel index (continuous) -> LPS millimetres.
  Eigen::Vector3d index_to_physical(const Eigen::Vector3d& index) const {
    return origin + direction * spacing.asDiagonal() * index;
  }
  // LPS millimetres -> continuous voxel index.
  Eigen::Vector3d physical_to_index(const Eigen::Vector3d& point) const {
    return (direction * spacing.asDiagonal()).inverse() * (point - origin);
  }

  // 4x4 voxel -> LPS affine.
  Eigen::Matrix4d affine_lps() const {
    Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
    a.topLeftCorner<3, 3>() = direction * spacing.asDiagonal();
    a.topRightCorner<3, 1>() = origin;
    return a;
  }
  // 4x4 voxel -> RAS affine, as NIfTI and nibabel write it.
  Eigen::Matrix4d affine_ras() const {
    Eigen::Matrix4d flip = Eigen::Matrix4d::Identity();
    flip(0, 0) = -1;
    flip(1, 1) = -1;
    return flip * affine_lps();
  }
  // Builds a geometry from a voxel -> RAS affine (no shear: columns are split into spacing x direction).
  static Geometry from_affine_ras(const Eigen::Matrix4d& ras) {
    Eigen::Matrix4d flip = Eigen::Matrix4d::Identity();
    flip(0, 0) = -1;
    flip(1, 1) = -1;
    const Eigen::Matrix4d lps = flip * ras;
    Geometry g;
    for (int c = 0; c < 3; ++c) {
      const Eigen::Vector3d col = lps.block<3, 1>(0, c);
      g.spacing[c] = col.norm();
      VOXINFER_CHECK(g.spacing[c] > 0 && std::isfinite(g.spacing[c]), invalid_input,
                     "affine column " + std::to_string(c) + " has zero or non-finite length");
      g.direction.col(c) = col / g.spacing[c];
    }
    g.origin = lps.block<3, 1>(0, 3);
    return g;
  }

  // Throws unless spacing is positive and finite and the direction is a rotation/reflection.
  void validate(const std::string& what) const {
    for (int c = 0; c < 3; ++c) {
      VOXINFER_CHECK(std::isfinite(spacing[c]) && spacing[c] > 0, invalid_input,
                     what + ": spacing[" + std::to_string(c) + "] = " + std::to_string(spacing[c]) + " is not positive and finite");
      VOXINFER_CHECK(std::isfinite(origin[c]), invalid_input, what + ": origin is not finite");
    }
    const double det = direction.determinant();
    VOXINFER_CHECK(std::isfinite(det) && std::abs(std::abs(det) - 1.0) < 1e-3, invalid_input,
                   what + ": direction matrix is not orthonormal (|det| = " + std::to_string(std::abs(det)) + ")");
  }

  // Orientation code: for each index axis, the patient direction it increases towards
  // (nibabel's convention): identity LPS direction -> "LPS"; a NIfTI with a
  // diagonal positive RAS affine -> "RAS".
  std::string orientation_code() const {
    static constexpr char kPos[3] = {'L', 'P', 'S'};
    static constexpr char kNeg[3] = {'R', 'A', 'I'};
    std::string code;
    for (int c = 0; c < 3; ++c) {
      int best = 0;
      for (int r = 1; r < 3; ++r)
        if (std::abs(direction(r, c)) > std::abs(direction(best, c))) best = r;
      code += direction(best, c) >= 0 ? kPos[best] : kNeg[best];
    }
    return code;
  }

  // True when some axis is not aligned with a patient axis (beyond `tolerance` in cosine).
  bool is_oblique(double tolerance = 1e-4) const {
    for (int c = 0; c < 3; ++c)
      if (1.0 - direction.col(c).cwiseAbs().maxCoeff() > tolerance) return true;
    return false;
  }
};

// Direction matrix for a three-letter code (each letter: L/R, P/A, S/I, all three axes used).
inline Eigen::Matrix3d direction_from_code(const std::string& code) {
  VOXINFER_CHECK(code.size() == 3, invalid_input, "orientation code '" + code + "' must have three letters");
  Eigen::Matrix3d d = Eigen::Matrix3d::Zero();
  bool used[3] = {false, false, false};
  for (int c = 0; c < 3; ++c) {
    int row = -1;
    double sign = 1;
    switch (code[static_cast<std::size_t>(c)]) {
      case 'L': row = 0; break;
      case 'R': row = 0; sign = -1; break;
      case 'P': row = 1; break;
      case 'A': row = 1; sign = -1; break;
      case 'S': row = 2; break;
      case 'I': row = 2; sign = -1; break;
      default: break;
    }
    VOXINFER_CHECK(row >= 0 && !used[row], invalid_input, "orientation code '" + code + "' is not a valid axis code");
    used[row] = true;
    d(row, c) = sign;
  }
  return d;
}

}  // namespace voxinfer
