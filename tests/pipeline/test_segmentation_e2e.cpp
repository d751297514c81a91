// The segmentation pipeline end to end with real models: the MeshNet demo package
// reproduces brainchop's labels (one full-volume tile, and 128^3 tiles at overlap 0.5),
// label maps land exactly on the input's grid for NIfTI and DICOM inputs, and bad
// packages or inputs give clear errors.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

const fs::path kPackage = fs::path(VOXINFER_TEST_DATA_DIR) / "../../examples/models/meshnet_gwm";
const fs::path kSample = fs::path(VOXINFER_TEST_DATA_DIR) / "../../examples/data/t1_crop.nii.gz";

double agreement(const Volume& a, const Volume& b) {
  EXPECT_EQ(a.voxels(), b.voxels());
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < a.voxels(); ++i) same += a.channel(0)[i] == b.channel(0)[i];
  return static_cast<double>(same) / static_cast<double>(a.voxels());
}

// tol: 1e-6 mm in memory; NIfTI stores the affine in float32, so a DICOM geometry (double)
// written to NIfTI comes back within float32 rounding (about 2e-5 mm at 200 mm from the origin).
void expect_same_grid(const Volume& a, const Volume& b, double tol = 1e-6) {
  ASSERT_EQ(a.nx(), b.nx());
  ASSERT_EQ(a.ny(), b.ny());
  ASSERT_EQ(a.nz(), b.nz());
  EXPECT_LE((a.geometry.affine_lps() - b.geometry.affine_lps()).cwiseAbs().maxCoeff(), tol);
}

// A copy of a package with a different roi_size (the tile size).
fs::path package_with_roi(const fs::path& src, int roi, const fs::path& dst) {
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dst / e.path().filename(), fs::copy_options::overwrite_existing);
  std::ifstream in(src / "pipeline.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "\"roi_size\": [256, 256, 256]";
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos);
  const std::string r = std::to_string(roi);
  text.replace(pos, from.size(), "\"roi_size\": [" + r + ", " + r + ", " + r + "]");
  std::ofstream(dst / "pipeline.json") << text;
  return dst;
}

class SegmentationE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("voxinfer_seg_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(SegmentationE2E, MeshNetDemoReproducesReferenceLabelsFullVolumeAndTiles) {
  VOXINFER_REQUIRE_SHARED("data/brainchop_meshnet/expected/t1_crop_model5_gw_ae_labels.nii.gz");
  const Volume input = read_image(kSample.string());
  const Volume ref = read_image((test::shared_dir() / "data/brainchop_meshnet/expected/t1_crop_model5_gw_ae_labels.nii.gz").string());
  SegmentationPipeline full(kPackage);
  const auto r = full.run(input);
  expect_same_grid(r.labels, input);
  const double a_full = agreement(r.labels, ref);
  SegmentationPipeline tiled(package_with_roi(kPackage, 128, dir_ / "tiled"));
  const auto t = tiled.run(input);
  const double a_tiled = agreement(t.labels, ref);
  std::printf("[segment] meshnet full volume: %.5f%% agree, %lld tiles; 128^3 tiles overlap 0.5: %.5f%% agree, %lld tiles\n",
              100 * a_full, static_cast<long long>(r.window.tiles), 100 * a_tiled, static_cast<long long>(t.window.tiles));
  EXPECT_GE(a_full, 0.999);
  // Measured 99.905% with the package's blending (probabilities, sigma_scale 0.09); MeshNet's
  // 93-voxel receptive field is wider than the fully-informed centre of 128^3 tiles at a
  // 64-voxel stride, and nnU-Net's defaults (logits, 0.125) give 99.87% (see the package README).
  EXPECT_GE(a_tiled, 0.999);
  EXPECT_EQ(r.window.tiles, 1);
  EXPECT_EQ(t.window.tiles, 27);
}

// Minimal NIfTI-1 header reader (a second, independent reader of the written affine).
struct NiftiHeader {
  short qform_code = 0, sform_code = 0;
  float srow[3][4] = {};
  float pixdim[8] = {};
  short dim[8] = {};
};

NiftiHeader read_nifti_header(const fs::path& p) {
  gzFile f = gzopen(p.string().c_str(), "rb");
  EXPECT_NE(f, nullptr);
  unsigned char h[348] = {};
  EXPECT_EQ(gzread(f, h, 348), 348);
  gzclose(f);
  NiftiHeader n;
  std::memcpy(n.dim, h + 40, 16);
  std::memcpy(n.pixdim, h + 76, 32);
  std::memcpy(&n.qform_code, h + 252, 2);
  std::memcpy(&n.sform_code, h + 254, 2);
  std::memcpy(n.srow, h + 280, 48);
  return n;
}

TEST_F(SegmentationE2E, NiftiLabelMapKeepsTheInputAffineExactly) {
  // The 32^3 crop is LIA with a shifted affine; a 32^3 tile package keeps the test fast.
  VOXINFER_REQUIRE_SHARED("data/brainchop_meshnet/input/t1_crop_crop32.nii.gz");
  const fs::path in = test::shared_dir() / "data/brainchop_meshnet/input/t1_crop_crop32.nii.gz";
  SegmentationPipeline p(package_with_roi(kPackage, 32, dir_ / "p32"));
  const Volume input = read_image(in.string());
  const auto r = p.run(input);
  const fs::path out = dir_ / "labels.nii.gz";
  WriteOptions wo;
  wo.pixel_type = PixelType::uint8;
  write_image(out.string(), r.labels, wo);
  const Volume back = read_image(out.string());
  expect_same_grid(back, input);
  const NiftiHeader a = read_nifti_header(in), b = read_nifti_header(out);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.dim[i], b.dim[i]);
  // The written sform equals the input's to float precision.
  ASSERT_GT(b.sform_code, 0);
  if (a.sform_code > 0) {
    for (int r0 = 0; r0 < 3; ++r0)
      for (int c = 0; c < 4; ++c) EXPECT_NEAR(a.srow[r0][c], b.srow[r0][c], 1e-4) << r0 << "," << c;
  }
}

TEST_F(SegmentationE2E, DicomSeriesLabelMapLiesOnTheSeriesGrid) {
  VOXINFER_REQUIRE_SHARED("models/tiny/model.onnx");
  VOXINFER_REQUIRE_SHARED("data/dcm_qa_ct/In/Philips_S21570_S2010");
  // A CT package around the small test network (zyx like nnU-Net), resampling to 2 mm.
  const fs::path pkg = dir_ / "ct";
  fs::create_directories(pkg);
  fs::copy_file(test::shared_dir() / "models/tiny/model.onnx", pkg / "model.onnx");
  std::ofstream(pkg / "pipeline.json") << R"({
    "task": "segmentation", "model": "model.onnx", "axes": "zyx",
    "input": {"channels": 1, "modality": "CT"},
    "preprocess": {"orientation": "RAS", "spacing": [2.0, 2.0, 2.0],
                   "intensity": [{"op": "clip", "min": -200, "max": 300}, {"op": "scale", "from": [-200, 300], "to": [-1, 1]}]},
    "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "blend": "gaussian", "batch": 2},
    "postprocess": {"activation": "softmax"},
    "labels": [{"value": 1, "name": "a"}, {"value": 2, "name": "b"}]})";
  const Volume input = read_volume((test::shared_dir() / "data/dcm_qa_ct/In/Philips_S21570_S2010").string());
  SegmentationPipeline p(pkg);
  const auto r = p.run(input);
  expect_same_grid(r.labels, input);
  const fs::path out = dir_ / "ct_labels.nii.gz";
  write_image(out.string(), r.labels);
  const Volume back = read_image(out.string());
  expect_same_grid(back, input, 1e-4);
  EXPECT_EQ(agreement(back, r.labels), 1.0);
  std::int64_t labelled = 0;
  for (std::int64_t i = 0; i < r.labels.voxels(); ++i) labelled += r.labels.channel(0)[i] != 0;
  std::printf("[segment] DICOM CT %lldx%lldx%lld: %lld tiles, %lld labelled voxels\n", static_cast<long long>(input.nx()),
              static_cast<long long>(input.ny()), static_cast<long long>(input.nz()), static_cast<long long>(r.window.tiles),
              static_cast<long long>(labelled));
}

TEST_F(SegmentationE2E, BadPackagesAndInputs) {
  auto expect_code = [](const std::function<void()>& f, ErrorCode code, const std::string& fragment) {
    try {
      f();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_code([&] { SegmentationPipeline p(dir_ / "nope"); }, ErrorCode::invalid_input, "not found");
  fs::create_directories(dir_ / "empty");
  expect_code([&] { SegmentationPipeline p(dir_ / "empty"); }, ErrorCode::invalid_model, "pipeline.json");
  const fs::path bad = dir_ / "bad";
  fs::create_directories(bad);
  std::ofstream(bad / "pipeline.json") << R"({"task": "segmentation", "model": "model.onnx", "axes": "xyz", "input": {"channels": 1},
    "inference": {"roi_size": [32, 32, 32], "overlap": 1.5}, "labels": [{"value": 1, "name": "x"}]})";
  expect_code([&] { SegmentationPipeline p(bad); }, ErrorCode::invalid_model, "overlap");
  std::ofstream(bad / "pipeline.json") << R"({"task": "segmentation", "model": "missing.onnx", "axes": "xyz", "input": {"channels": 1},
    "inference": {"roi_size": [32, 32, 32]}, "labels": [{"value": 1, "name": "x"}]})";
  expect_code([&] { SegmentationPipeline p(bad); }, ErrorCode::invalid_model, "missing.onnx");
  SegmentationPipeline p(package_with_roi(kPackage, 32, dir_ / "p"));
  Volume two(2, 8, 8, 8);
  expect_code([&] { p.run(two); }, ErrorCode::invalid_input, "channel");
}

}  // namespace
}  // namespace voxinfer
