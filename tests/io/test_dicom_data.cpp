// Every DICOM series and file with ground truth in ../shared/data (expected_dicom.json,
// made with pydicom) read through the DCMTK adapter: grid size, spacing, origin,
// direction and voxel statistics after rescale. Also the "same pixels" relations
// between transfer syntaxes and the dcm2niix references compared through the affine.
#include <gtest/gtest.h>

#include <cstring>

#include "io_test_util.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

const char* const kDicomSets[] = {"dcm_qa_12bit", "dcm_qa_ct",  "dcm_qa_decubitus", "dcm_qa_enh",       "dcm_qa_nih",
                                  "dcm_qa_ts",    "dcm_qa_xa30", "dcmqi_seg",        "nibabel_testdata", "pydicom_data"};

bool integral(double v) { return std::nearbyint(v) == v; }

class DicomGroundTruth : public ::testing::TestWithParam<const char*> {};

TEST_P(DicomGroundTruth, MatchesPydicom) {
  const std::string set = GetParam();
  VOXINFER_REQUIRE_SHARED("data/" + set + "/expected_dicom.json");
  const fs::path root = test::shared_dir() / "data" / set;
  const nlohmann::json expected = test::load_json(root / "expected_dicom.json");
  int checked = 0;
  for (const auto& [key, e] : expected["series"].items()) {
    SCOPED_TRACE(set + "/" + key);
    // Keys are "folder [SeriesInstanceUID]" for series and a file path for single files.
    ReadOptions options;
    std::string rel = key;
    const auto bracket = key.rfind(" [");
    if (bracket != std::string::npos && key.back() == ']') {
      rel = key.substr(0, bracket);
      options.series_uid = key.substr(bracket + 2, key.size() - bracket - 3);
    }
    const std::string path = (root / rel).string();
    const nlohmann::json& geometry = e["geometry"];
    const bool has_grid = geometry.is_object() && geometry.contains("itk_style");
    const auto rescaled = e.find("rescaled_values (stored*RescaleSlope+RescaleIntercept, per frame)");
    if (!has_grid && (rescaled == e.end() || rescaled->empty())) continue;  // no ground truth for this one

    if (has_grid) {
      const double tilt = geometry["angle_step_vs_normal_deg (gantry tilt shear)"];
      const bool uneven = !geometry["slice_gaps_uniform"].get<bool>() && geometry["n_unique_slice_positions"] > 1;
      if (tilt > 1.0 || uneven) {
        // Refused on purpose (docs/io.md): the message names the tilt angle or the gap.
        try {
          read_volume(path, options);
          ADD_FAILURE() << "a tilted or unevenly spaced series was accepted";
        } catch (const Error& err) {
          EXPECT_EQ(err.code(), ErrorCode::invalid_input);
          char angle[32];
          std::snprintf(angle, sizeof angle, "%.2f degrees", tilt);
          EXPECT_NE(std::string(err.what()).find(tilt > 1.0 ? angle : "gap"), std::string::npos) << err.what();
        }
        ++checked;
        continue;
      }
    }

    const Volume v = read_volume(path, options);
    if (has_grid) {
      const auto& itk = geometry["itk_style"];
      EXPECT_EQ(v.nx(), itk["size"][0].get<std::int64_t>());
      EXPECT_EQ(v.ny(), itk["size"][1].get<std::int64_t>());
      EXPECT_EQ(v.nz(), itk["size"][2].get<std::int64_t>());
      if (geometry["n_volumes"].is_number() && !v.metadata.count("SegmentNumbers")) {
        EXPECT_EQ(v.channels(), geometry["n_volumes"].get<std::int64_t>());
      }
      for (int c = 0; c < 3; ++c) {
        if (itk["spacing_xyz"][c].is_number()) {
          EXPECT_NEAR(v.geometry.spacing[c], itk["spacing_xyz"][c].get<double>(), 1e-4) << "spacing " << c;
        }
        EXPECT_NEAR(v.geometry.origin[c], itk["origin_lps"][c].get<double>(), 1e-4) << "origin " << c;
        for (int r = 0; r < 3; ++r)
          EXPECT_NEAR(v.geometry.direction(r, c), itk["direction_columns_lps"][c][r].get<double>(), 1e-5)
              << "direction(" << r << "," << c << ")";
      }
      if (!options.series_uid.empty()) {
        EXPECT_EQ(v.metadata.at("SeriesInstanceUID"), options.series_uid);
      }
    }
    if (rescaled != e.end() && !rescaled->empty()) {
      const test::Stats s = test::stats_of(v);
      const double lo = (*rescaled)["min"], hi = (*rescaled)["max"], mean = (*rescaled)["mean"];
      bool exact = true;
      for (const auto& si : e["rescale_slope_intercept_unique"]) exact = exact && integral(si[0]) && integral(si[1]);
      const double tol = exact ? 0.0 : 1e-6 * std::max(std::abs(lo), std::abs(hi));
      const bool seg_with_gaps = v.metadata.count("SegmentNumbers") && has_grid &&
                                 v.data.numel() != geometry["n_frames_or_files"].get<std::int64_t>() * v.nx() * v.ny();
      if (seg_with_gaps) {
        // A SEG stores only the frames where a segment is present; pydicom's statistics are
        // over those frames, ours over the full grid with zeros elsewhere: the sums agree.
        const double frames = geometry["n_frames_or_files"].get<double>();
        EXPECT_NEAR(s.mean * static_cast<double>(v.data.numel()), mean * frames * double(v.nx() * v.ny()), 1e-6);
        EXPECT_EQ(s.max, hi);
      } else {
        EXPECT_NEAR(s.min, lo, tol);
        EXPECT_NEAR(s.max, hi, tol);
        EXPECT_NEAR(s.mean, mean, exact ? 1e-9 * std::max(1.0, std::abs(mean)) : tol);
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(SharedData, DicomGroundTruth, ::testing::ValuesIn(kDicomSets),
                         [](const auto& info) { return std::string(info.param); });

void expect_same_voxels(const std::string& a, const std::string& b) {
  SCOPED_TRACE(a + " vs " + b);
  const Volume va = read_volume(a), vb = read_volume(b);
  ASSERT_EQ(va.data.shape(), vb.data.shape());
  EXPECT_EQ(std::memcmp(va.data.raw(), vb.data.raw(), va.data.nbytes()), 0);
}

// All nine transfer syntaxes hold the same pixels: each decodes to exactly what the
// uncompressed explicit little-endian file gives.
TEST(DicomTransferSyntaxes, AllNineDecodeIdentically) {
  VOXINFER_REQUIRE_SHARED("data/dcm_qa_ts/In/1.dcm");
  const fs::path in = test::shared_dir() / "data/dcm_qa_ts/In";
  for (int i = 2; i <= 9; ++i) expect_same_voxels((in / "1.dcm").string(), (in / (std::to_string(i) + ".dcm")).string());
}

TEST(DicomTransferSyntaxes, MultiFrameAndSegEncodingsDecodeIdentically) {
  VOXINFER_REQUIRE_SHARED("data/pydicom_data/files/emri_small.dcm");
  const fs::path f = test::shared_dir() / "data/pydicom_data/files";
  for (const char* v : {"emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_2k_lossless.dcm",
                        "emri_small_jpeg_ls_lossless.dcm"})
    expect_same_voxels((f / "emri_small.dcm").string(), (f / v).string());
  expect_same_voxels((f / "693_UNCR.dcm").string(), (f / "693_J2KR.dcm").string());
  for (const char* v : {"liver_expb.dcm", "liver_j2k.dcm", "liver_rle.dcm"})
    expect_same_voxels((f / "liver.dcm").string(), (f / v).string());
}

// Our volume against a dcm2niix reference NIfTI, voxel by voxel through the two affines
// (dcm2niix stores the rows flipped, so array indices do not line up).
void expect_matches_reference(const Volume& v, const Volume& ref, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(v.channels(), ref.channels());
  ASSERT_EQ(v.voxels(), ref.voxels());
  std::int64_t mismatches = 0, checked = 0;
  const Eigen::Matrix4d to_ref = ref.geometry.affine_lps().inverse() * v.geometry.affine_lps();
  for (std::int64_t z = 0; z < v.nz(); ++z)
    for (std::int64_t y = 0; y < v.ny(); ++y)
      for (std::int64_t x = 0; x < v.nx(); ++x) {
        const Eigen::Vector4d r = to_ref * Eigen::Vector4d(double(x), double(y), double(z), 1.0);
        const std::int64_t rx = std::llround(r[0]), ry = std::llround(r[1]), rz = std::llround(r[2]);
        ASSERT_NEAR(r[0], double(rx), 1e-3);
        ASSERT_NEAR(r[1], double(ry), 1e-3);
        ASSERT_NEAR(r[2], double(rz), 1e-3);
        for (std::int64_t c = 0; c < v.channels(); ++c) {
          ++checked;
          mismatches += v.at(c, z, y, x) != ref.at(c, rz, ry, rx);
        }
      }
  EXPECT_EQ(mismatches, 0) << "of " << checked;
}

TEST(DicomReferences, MatchDcm2niixThroughTheAffine) {
  VOXINFER_REQUIRE_SHARED("data/dcm_qa_nih/In");
  const fs::path d = test::shared_dir() / "data";
  struct Case {
    const char* dicom;
    const char* reference;
  };
  const Case cases[] = {
      {"dcm_qa_nih/In/20180918GE/mr_0004", "dcm_qa_nih/Ref/DCM2NIIX_regression_test_4.nii.gz"},
      {"dcm_qa_ct/In/Philips_S21570_S2010", "dcm_qa_ct/Ref_dcm2niix_v1.0.20220720/1A_TRAUMA_PLAIN_HEAD_DM_Head_201.nii.gz"},
      {"dcm_qa_decubitus/In/HFDR/2_t1_fl2d_sag", "dcm_qa_decubitus/Ref_dcm2niix_v1.0.20220720/HFDR_t1_fl2d_sag_20220407151157.nii.gz"},
      {"dcm_qa_xa30/In/5_anat-T1w_acq-tfl", "dcm_qa_xa30/Ref/5_anat-T1w_acq-tfl.nii.gz"},
      {"dcm_qa_enh/In/Siemens/XA10", "dcm_qa_enh/Ref/Siemens_REST1_w_SMS_PF7-8_6.nii"},
  };
  for (const Case& c : cases) {
    const Volume v = read_volume((d / c.dicom).string());
    const Volume ref = read_image((d / c.reference).string());
    expect_matches_reference(v, ref, c.dicom);
  }
}

// Two Enhanced files of one series (two echoes) become two channels in echo order;
// dcm2niix writes each echo to its own file.
TEST(DicomReferences, TwoEchoesBecomeTwoChannels) {
  VOXINFER_REQUIRE_SHARED("data/dcm_qa_xa30/In/8_gre_field_mapping");
  const fs::path d = test::shared_dir() / "data/dcm_qa_xa30";
  const Volume v = read_volume((d / "In/8_gre_field_mapping").string());
  ASSERT_EQ(v.channels(), 2);
  for (int echo = 0; echo < 2; ++echo) {
    Volume one(1, v.nz(), v.ny(), v.nx(), v.geometry);
    std::memcpy(one.channel(0), v.channel(echo), static_cast<std::size_t>(v.voxels()) * sizeof(float));
    const Volume ref = read_image((d / ("Ref/8_gre_field_mapping_e" + std::to_string(echo + 1) + ".nii.gz")).string());
    expect_matches_reference(one, ref, "echo " + std::to_string(echo + 1));
  }
}

// A folder with a gantry-tilted series (28 slices, refused) and a plain one (12 slices):
// without --series the readable one is chosen; asking for the tilted one still names the tilt.
TEST(DicomSeriesChoice, DefaultSkipsASeriesThatCannotBeRead) {
  VOXINFER_REQUIRE_SHARED("data/dcm_qa_ct/In");
  const fs::path in = test::shared_dir() / "data/dcm_qa_ct/In";
  const auto series = list_dicom_series(in.string());
  ASSERT_EQ(series.size(), 2u);
  const Volume v = read_dicom(in.string());
  EXPECT_EQ(v.nz(), 12);
  const Volume philips = read_dicom((in / "Philips_S21570_S2010").string());
  EXPECT_EQ(v.metadata.at("SeriesInstanceUID"), philips.metadata.at("SeriesInstanceUID"));
  std::string tilted;
  for (const auto& s : series)
    if (s.series_uid != philips.metadata.at("SeriesInstanceUID")) tilted = s.series_uid;
  ReadOptions o;
  o.series_uid = tilted;
  try {
    (void)read_dicom(in.string(), o);
    ADD_FAILURE() << "the tilted series was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gantry tilt"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace voxinfer
