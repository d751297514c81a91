// Helpers for the io tests: the ground-truth JSON files of ../shared/data, voxel
// statistics, and comparison of a Volume's geometry with a voxel->RAS affine.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>

#include "test_util.h"
#include "voxinfer/core/volume.h"

namespace voxinfer::test {

inline nlohmann::json load_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in.good()) << "cannot open " << p;
  return nlohmann::json::parse(in);
}

struct Stats {
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double mean = 0;
  std::int64_t nonzero = 0;
};

inline Stats stats_of(const Volume& v) {
  Stats s;
  const float* p = v.data.data<float>();
  const std::int64_t n = v.data.numel();
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double x = p[i];
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
    sum += x;
    s.nonzero += x != 0;
  }
  s.mean = n ? sum / static_cast<double>(n) : 0;
  return s;
}

// Geometry against a 4x4 voxel->RAS affine (rows of numbers, as nibabel writes them):
// translation and each column's length within `mm`, direction cosines within `cosine`.
inline void expect_affine_ras(const Geometry& g, const nlohmann::json& affine, double mm, double cosine,
                              const std::string& what) {
  const Eigen::Matrix4d ours = g.affine_ras();
  for (int c = 0; c < 3; ++c) {
    Eigen::Vector3d col;
    for (int r = 0; r < 3; ++r) col[r] = affine[r][c].get<double>();
    EXPECT_NEAR(g.spacing[c], col.norm(), mm) << what << ": spacing of axis " << c;
    const Eigen::Vector3d dir = col / col.norm();
    for (int r = 0; r < 3; ++r)
      EXPECT_NEAR(ours(r, c) / g.spacing[c], dir[r], cosine) << what << ": direction(" << r << "," << c << ")";
  }
  for (int r = 0; r < 3; ++r) EXPECT_NEAR(ours(r, 3), affine[r][3].get<double>(), mm) << what << ": translation " << r;
}

// A scratch folder removed at the end of a test.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("voxinfer_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

}  // namespace voxinfer::test
