// ITK adapter on self-made files: write-then-read round trips (NIfTI, NRRD, MetaImage)
// keep the geometry and values; pixel types; bad files give clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io_test_util.h"
#include "voxinfer/io/image_io.h"

// ITK 5.2's NrrdImageIO leaks its nrrd object and error text when reading a truncated
// file fails (itk_nrrdNew / itk_biffGet on the error path). That is ITK's, not ours; the
// hook below tells LeakSanitizer (in sanitizer builds) to ignore exactly those.
extern "C" const char* __lsan_default_suppressions();
extern "C" const char* __lsan_default_suppressions() {
  return "leak:itk_nrrdNew\nleak:itk_biffGet\nleak:itk_airArrayNew\n";
}

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// An oblique, odd-sized grid (23 x 38 x 3, as in dcmqi's tests) with a mirrored axis.
Geometry oblique_geometry() {
  Geometry g;
  g.spacing = Eigen::Vector3d(0.7, 1.3, 2.5);
  g.origin = Eigen::Vector3d(-120.25, 33.5, 17.125);
  const double a = 0.3, b = -0.2;
  Eigen::Matrix3d rx, rz;
  rx << 1, 0, 0, 0, std::cos(a), -std::sin(a), 0, std::sin(a), std::cos(a);
  rz << std::cos(b), -std::sin(b), 0, std::sin(b), std::cos(b), 0, 0, 0, 1;
  g.direction = rz * rx;
  g.direction.col(1) *= -1;  // a left-handed grid (determinant -1) must survive too
  return g;
}

Volume make_volume(std::int64_t c, std::int64_t z, std::int64_t y, std::int64_t x, bool integers) {
  Volume v(c, z, y, x, oblique_geometry());
  float* p = v.data.data<float>();
  for (std::int64_t i = 0; i < v.data.numel(); ++i)
    p[i] = integers ? static_cast<float>((i * 37) % 251) : static_cast<float>(i) * 0.37f - 100.5f;
  return v;
}

void expect_same(const Volume& a, const Volume& b, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(a.data.shape(), b.data.shape());
  EXPECT_EQ(std::memcmp(a.data.raw(), b.data.raw(), a.data.nbytes()), 0) << "voxel values differ";
  // NIfTI stores the affine in float32: 1e-4 mm and 1e-5 in direction cosines.
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(a.geometry.spacing[c], b.geometry.spacing[c], 1e-5);
    EXPECT_NEAR(a.geometry.origin[c], b.geometry.origin[c], 1e-4);
    for (int r = 0; r < 3; ++r) EXPECT_NEAR(a.geometry.direction(r, c), b.geometry.direction(r, c), 1e-5);
  }
}

TEST(ImageIo, RoundTripsKeepGeometryAndValues) {
  TempDir dir("imgio_rt");
  for (const char* ext : {".nii", ".nii.gz", ".nrrd", ".mha"}) {
    const Volume f = make_volume(1, 3, 38, 23, false);
    write_image(dir / (std::string("f") + ext), f, {PixelType::float32});
    expect_same(f, read_image(dir / (std::string("f") + ext)), std::string("float32 ") + ext);

    const Volume labels = make_volume(1, 3, 38, 23, true);
    for (PixelType t : {PixelType::uint8, PixelType::uint16, PixelType::int16, PixelType::automatic}) {
      const std::string path = dir / (std::string("l_") + pixel_type_name(t) + ext);
      write_image(path, labels, {t});
      expect_same(labels, read_image(path), std::string(pixel_type_name(t)) + " " + ext);
    }
    const Volume four = make_volume(3, 4, 5, 6, false);
    write_image(dir / (std::string("c") + ext), four, {PixelType::float32});
    expect_same(four, read_image(dir / (std::string("c") + ext)), std::string("4D ") + ext);
  }
}

TEST(ImageIo, NiftiRoundTripKeepsTheRasAffine) {
  TempDir dir("imgio_affine");
  const Volume v = make_volume(1, 3, 38, 23, false);
  write_image(dir / "a.nii.gz", v);
  const Eigen::Matrix4d a = v.geometry.affine_ras(), b = read_image(dir / "a.nii.gz").geometry.affine_ras();
  EXPECT_LT((a - b).cwiseAbs().maxCoeff(), 1e-4);
}

TEST(ImageIo, AutomaticTypeIsSmallAndExact) {
  TempDir dir("imgio_auto");
  Volume v = make_volume(1, 2, 8, 8, true);
  write_image(dir / "u8.nrrd", v, {PixelType::automatic, false});
  v.at(0, 0, 0, 0) = -1000;
  write_image(dir / "i16.nrrd", v, {PixelType::automatic, false});
  v.at(0, 0, 0, 0) = 0.5f;
  write_image(dir / "f32.nrrd", v, {PixelType::automatic, false});
  EXPECT_LT(fs::file_size(dir / "u8.nrrd"), fs::file_size(dir / "i16.nrrd"));
  EXPECT_LT(fs::file_size(dir / "i16.nrrd"), fs::file_size(dir / "f32.nrrd"));
  EXPECT_EQ(read_image(dir / "i16.nrrd").at(0, 0, 0, 0), -1000.f);
  EXPECT_EQ(read_image(dir / "f32.nrrd").at(0, 0, 0, 0), 0.5f);
}

TEST(ImageIo, ValuesAnIntegerTypeCannotHoldAreRefusedWithoutAPartialFile) {
  TempDir dir("imgio_range");
  Volume v = make_volume(1, 2, 3, 4, true);
  v.at(0, 1, 2, 3) = 2.5f;
  EXPECT_THROW(write_image(dir / "x.nii.gz", v, {PixelType::uint8}), Error);
  v.at(0, 1, 2, 3) = 300;
  EXPECT_THROW(write_image(dir / "x.nii.gz", v, {PixelType::uint8}), Error);
  v.at(0, 1, 2, 3) = -3;
  EXPECT_THROW(write_image(dir / "x.nii.gz", v, {PixelType::uint16}), Error);
  EXPECT_THROW(write_image(dir / "x.png", v), Error);
  EXPECT_THROW(write_image(dir / "missing_folder/x.nii", v), Error);
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a partial or temporary file was left behind";
}

std::string error_of(const std::string& path, ErrorCode* code) {
  try {
    read_image(path);
  } catch (const Error& e) {
    *code = e.code();
    return e.what();
  }
  return "";
}

void write_mha(const std::string& path, const std::string& dims, const std::string& spacing, std::size_t data_bytes) {
  std::ofstream f(path, std::ios::binary);
  f << "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
    << "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nElementSpacing = " << spacing << "\nDimSize = " << dims
    << "\nElementType = MET_SHORT\nElementDataFile = LOCAL\n";
  f << std::string(data_bytes, '\0');
}

TEST(ImageIo, BadFilesGiveClearErrors) {
  TempDir dir("imgio_bad");
  ErrorCode code{};
  std::string msg;

  msg = error_of(dir / "nowhere.nii.gz", &code);
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(msg.find("nowhere.nii.gz"), std::string::npos);

  // Truncated: a valid file cut short.
  write_image(dir / "full.nii", make_volume(1, 4, 30, 30, false), {PixelType::float32});
  fs::copy_file(dir / "full.nii", dir / "cut.nii");
  fs::resize_file(dir / "cut.nii", fs::file_size(dir / "full.nii") / 2);
  msg = error_of(dir / "cut.nii", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // A cut .nii.gz: ITK alone would zero-fill the missing voxels.
  write_image(dir / "full.nii.gz", make_volume(1, 4, 30, 30, false), {PixelType::float32});
  fs::copy_file(dir / "full.nii.gz", dir / "cut.nii.gz");
  fs::resize_file(dir / "cut.nii.gz", fs::file_size(dir / "full.nii.gz") * 2 / 3);
  msg = error_of(dir / "cut.nii.gz", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  write_image(dir / "full.nrrd", make_volume(1, 4, 30, 30, false), {PixelType::float32, false});
  fs::copy_file(dir / "full.nrrd", dir / "cut.nrrd");
  fs::resize_file(dir / "cut.nrrd", fs::file_size(dir / "full.nrrd") / 2);
  msg = error_of(dir / "cut.nrrd", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input) << msg;

  // A header claiming 2^40 voxels must fail at once, without allocating them.
  write_mha(dir / "huge.mha", "1048576 1048576 1", "1 1 1", 16);
  const auto t0 = std::chrono::steady_clock::now();
  msg = error_of(dir / "huge.mha", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("voxels"), std::string::npos) << msg;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);

  for (const char* spacing : {"0 1 1", "1 nan 1"}) {
    write_mha(dir / "spacing.mha", "2 2 2", spacing, 16);
    msg = error_of(dir / "spacing.mha", &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << spacing;
    EXPECT_NE(msg.find("spacing"), std::string::npos) << msg;
  }

  std::ofstream(dir / "garbage.nii") << std::string(400, 'x');
  msg = error_of(dir / "garbage.nii", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("garbage.nii"), std::string::npos) << msg;

  std::ofstream(dir / "image.png") << "png";
  msg = error_of(dir / "image.png", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);

  fs::create_directories(dir.path() / "folder.nii");
  msg = error_of(dir / "folder.nii", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
}

TEST(ImageIo, UnreadableFileIsAnIoError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can read any file";
  TempDir dir("imgio_perm");
  write_image(dir / "a.nrrd", make_volume(1, 1, 2, 2, true));
  fs::permissions(dir / "a.nrrd", fs::perms::none);
  ErrorCode code{};
  error_of(dir / "a.nrrd", &code);
  EXPECT_EQ(code, ErrorCode::io);
}

// A NIfTI-2 file made by hand from the header layout (ITK 5.2 reads only NIfTI-1).
std::string nifti2(const std::int64_t dims[3], std::int16_t datatype, const std::string& data, bool big_endian) {
  std::string h(544, '\0');
  auto put = [&](std::size_t off, const void* v, std::size_t n) {
    std::memcpy(&h[off], v, n);
    if (big_endian) std::reverse(h.begin() + static_cast<std::ptrdiff_t>(off), h.begin() + static_cast<std::ptrdiff_t>(off + n));
  };
  const std::int32_t size = 540, qcode = 1, scode = 0;
  put(0, &size, 4);
  std::memcpy(&h[4], "n+2\0\r\n\032\n", 8);
  const std::int16_t bitpix = datatype == 4 ? 16 : 8;
  put(12, &datatype, 2);
  put(14, &bitpix, 2);
  const std::int64_t dim[8] = {3, dims[0], dims[1], dims[2], 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) put(16 + 8 * static_cast<std::size_t>(i), &dim[i], 8);
  const double pixdim[8] = {-1, 1, 2, 3, 0, 0, 0, 0};  // qfac -1
  for (int i = 0; i < 8; ++i) put(104 + 8 * static_cast<std::size_t>(i), &pixdim[i], 8);
  const std::int64_t vox_offset = 544;
  put(168, &vox_offset, 8);
  put(344, &qcode, 4);
  put(348, &scode, 4);
  const double quatern_d = 1, offsets[3] = {10, 20, 30};  // 180 degrees about z
  put(368, &quatern_d, 8);
  for (int i = 0; i < 3; ++i) put(376 + 8 * static_cast<std::size_t>(i), &offsets[i], 8);
  return h + data;
}

TEST(ImageIo, ReadsNifti2QformAndBigEndian) {
  TempDir dir("imgio_nifti2");
  const std::int64_t dims[3] = {2, 1, 1};
  std::ofstream(dir / "be.nii", std::ios::binary) << nifti2(dims, 4, std::string("\x01\x02\xff\xfe", 4), true);
  const Volume v = read_image(dir / "be.nii");
  EXPECT_EQ(v.at(0, 0, 0, 0), 258.f);
  EXPECT_EQ(v.at(0, 0, 0, 1), -2.f);
  // RAS affine R*diag(1, 2, -3) with R = diag(-1, -1, 1) is diag(-1, -2, -3): in LPS the
  // x and y axes point to +L/+P and z to -S, at origin (-10, -20, 30).
  EXPECT_EQ(v.geometry.orientation_code(), "LPI");
  EXPECT_NEAR(v.geometry.spacing[1], 2, 1e-12);
  EXPECT_NEAR(v.geometry.spacing[2], 3, 1e-12);
  EXPECT_NEAR(v.geometry.origin[0], -10, 1e-12);
  EXPECT_NEAR(v.geometry.origin[2], 30, 1e-12);

  const std::int64_t huge[3] = {1048576, 1048576, 1};  // 2^40 voxels, 4 bytes of data
  std::ofstream(dir / "huge.nii", std::ios::binary) << nifti2(huge, 2, "abcd", false);
  try {
    read_image(dir / "huge.nii");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_input);
    EXPECT_NE(std::string(e.what()).find("voxels"), std::string::npos) << e.what();
  }
  const std::int64_t small[3] = {4, 4, 4};
  std::ofstream(dir / "short.nii", std::ios::binary) << nifti2(small, 2, "abcd", false);
  EXPECT_THROW(read_image(dir / "short.nii"), Error);
}

TEST(ImageIo, Nifti1HeaderClaiming2To40VoxelsIsRefusedBeforeAllocating) {
  TempDir dir("imgio_huge1");
  std::string h(352, '\0');
  const std::int32_t size = 348;
  std::memcpy(&h[0], &size, 4);
  const std::int16_t dim[8] = {4, 1024, 1024, 1024, 1024, 1, 1, 1};  // 2^40 voxels
  std::memcpy(&h[40], dim, sizeof dim);
  const std::int16_t datatype = 2, bitpix = 8;
  std::memcpy(&h[70], &datatype, 2);
  std::memcpy(&h[72], &bitpix, 2);
  const float pixdim[8] = {1, 1, 1, 1, 1, 0, 0, 0}, vox_offset = 352;
  std::memcpy(&h[76], pixdim, sizeof pixdim);
  std::memcpy(&h[108], &vox_offset, 4);
  std::memcpy(&h[344], "n+1", 4);
  std::ofstream(dir / "huge.nii", std::ios::binary) << h << "data";
  const auto t0 = std::chrono::steady_clock::now();
  try {
    read_image(dir / "huge.nii");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_input);
    EXPECT_NE(std::string(e.what()).find("voxels"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
}

TEST(ImageIo, ReadVolumeDispatchesByKind) {
  TempDir dir("imgio_dispatch");
  const Volume v = make_volume(1, 2, 3, 4, true);
  write_volume(dir / "v.mha", v);
  expect_same(v, read_volume(dir / "v.mha"), "read_volume on .mha");
  EXPECT_TRUE(is_image_file_name("a/b.NII.GZ"));
  EXPECT_TRUE(is_image_file_name("x.nhdr"));
  EXPECT_FALSE(is_image_file_name("IM0001"));
  EXPECT_EQ(parse_pixel_type("uint16"), PixelType::uint16);
  EXPECT_THROW(parse_pixel_type("int8"), Error);
}

}  // namespace
}  // namespace voxinfer
