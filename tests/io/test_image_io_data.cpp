// Every NIfTI file with ground truth in ../shared/data (expected_nifti.json, made with
// nibabel) read through the ITK adapter: size, affine and voxel statistics.
#include <gtest/gtest.h>

#include <set>

#include "io_test_util.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

const char* const kNiftiSets[] = {"brainchop_meshnet", "dcm_qa_12bit", "dcm_qa_ct", "dcm_qa_decubitus",
                                  "dcm_qa_enh",        "dcm_qa_nih",   "dcm_qa_ts", "dcm_qa_xa30",
                                  "dcmqi_seg",         "nibabel_testdata", "niivue_images"};

// True when the affine's voxel axes are not perpendicular (a Volume cannot hold that).
bool is_sheared(const nlohmann::json& a) {
  Eigen::Matrix3d m;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) m(r, c) = a[r][c].get<double>();
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j)
      if (std::abs(m.col(i).normalized().dot(m.col(j).normalized())) > 1e-4) return true;
  return false;
}

class NiftiGroundTruth : public ::testing::TestWithParam<const char*> {};

TEST_P(NiftiGroundTruth, MatchesNibabel) {
  const std::string set = GetParam();
  VOXINFER_REQUIRE_SHARED("data/" + set + "/expected_nifti.json");
  const fs::path root = test::shared_dir() / "data" / set;
  const nlohmann::json expected = test::load_json(root / "expected_nifti.json");
  int checked = 0;
  for (const auto& [rel, e] : expected["files"].items()) {
    SCOPED_TRACE(set + "/" + rel);
    const std::string path = (root / rel).string();
    if (e["on_disk_dtype"] == "complex64" || is_sheared(e["nibabel_best_affine"])) {
      try {
        read_image(path);
        ADD_FAILURE() << "complex data or a sheared affine was accepted";
      } catch (const Error& err) {
        EXPECT_EQ(err.code(), ErrorCode::invalid_input);  // bad input (exit status 2), not a bad model
        EXPECT_NE(std::string(err.what()).find(path), std::string::npos) << err.what();
      }
      continue;
    }
    const Volume v = read_image(path);
    const auto& shape = e["shape"];
    EXPECT_EQ(v.nx(), shape[0].get<std::int64_t>());
    EXPECT_EQ(v.ny(), shape[1].get<std::int64_t>());
    EXPECT_EQ(v.nz(), shape.size() > 2 ? shape[2].get<std::int64_t>() : 1);
    EXPECT_EQ(v.channels(), shape.size() > 3 ? shape[3].get<std::int64_t>() : 1);

    const int qcode = e["qform_code"], scode = e["sform_code"];
    if (qcode == 0 && scode == 0) {
      // No valid affine: nibabel centres a pixdim-scaled grid, ITK puts the origin at 0 with
      // an identity LPS direction. Only the spacing is common ground.
      for (int c = 0; c < 3; ++c) EXPECT_NEAR(v.geometry.spacing[c], e["pixdim"][c + 1].get<double>(), 1e-6);
      EXPECT_EQ(v.geometry.orientation_code(), "LPS");
    } else {
      test::expect_affine_ras(v.geometry, e["nibabel_best_affine"], 1e-4, 1e-5, rel);
    }

    const auto& d = e["data"];
    const test::Stats s = test::stats_of(v);
    const bool scaled = e["scl_slope_inter_applied_by_nibabel"][0] != 1.0 || e["scl_slope_inter_applied_by_nibabel"][1] != 0.0;
    const bool integer = !scaled && e["on_disk_dtype"] != "float32" && e["on_disk_dtype"] != "float64";
    // Integer data is exact; scaled or float data is compared at float32 precision.
    const double tol_abs = integer ? 0.0 : 1e-6 * std::max(1.0, std::abs(d["max"].get<double>()) + std::abs(d["min"].get<double>()));
    EXPECT_NEAR(s.min, d["min"].get<double>(), tol_abs);
    EXPECT_NEAR(s.max, d["max"].get<double>(), tol_abs);
    EXPECT_NEAR(s.mean, d["mean"].get<double>(), integer ? 1e-9 * std::abs(d["mean"].get<double>()) : tol_abs);
    EXPECT_EQ(s.nonzero, d["nonzero"].get<std::int64_t>());
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(SharedData, NiftiGroundTruth, ::testing::ValuesIn(kNiftiSets),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace voxinfer
