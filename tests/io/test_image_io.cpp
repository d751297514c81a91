// ITK adapter on self-made files: write-then-read round trips (NIfTI, NRRD, MetaImage)
// keep the geometry and values; pixel types; bad files give clear errors.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <zlib.h>

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

// ------------------------------------------------------------------ hostile NIfTI-1 files

// A NIfTI-1 header (n+1, little-endian, float32 voxels 4 x 3 x 2, spacing 1) whose fields the
// caller then spoils, followed by the voxels.
struct Nifti1File {
  std::string h = std::string(352, '\0');
  Nifti1File() {
    put<std::int32_t>(0, 348);
    const std::int16_t dim[8] = {3, 4, 3, 2, 1, 1, 1, 1};
    std::memcpy(&h[40], dim, sizeof dim);
    put<std::int16_t>(70, 16);  // float32
    put<std::int16_t>(72, 32);
    for (int i = 0; i < 4; ++i) put<float>(76 + 4 * static_cast<std::size_t>(i), 1.f);
    put<float>(108, 352.f);
    put<float>(112, 1.f);  // scl_slope
    std::memcpy(&h[344], "n+1", 4);
  }
  template <typename T>
  void put(std::size_t offset, T v) {
    std::memcpy(&h[offset], &v, sizeof v);
  }
  void sform() {  // an identity sform, code 1
    put<std::int16_t>(254, 1);
    for (int r = 0; r < 3; ++r)
      put<float>(280 + 16 * static_cast<std::size_t>(r) + 4 * static_cast<std::size_t>(r), 1.f);
  }
  std::string bytes(const std::vector<float>& voxels = std::vector<float>(24, 1.f)) const {
    return h + std::string(reinterpret_cast<const char*>(voxels.data()), voxels.size() * sizeof(float));
  }
};

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

void expect_bad_header(const std::string& path, const std::string& field) {
  ErrorCode code{};
  const std::string msg = error_of(path, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find(field), std::string::npos) << "'" << field << "' not in: " << msg;
}

// nifti_clib (inside ITK) aborts the process on a NaN sform; these must be errors naming the
// file and the field, before ITK sees the header.
TEST(ImageIo, NiftiNonFiniteSformQformOrPixdimIsAnErrorNotAnAbort) {
  TempDir dir("imgio_nonfinite");
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  {
    Nifti1File f;
    f.sform();
    std::ofstream(dir / "ok.nii", std::ios::binary) << f.bytes();
    EXPECT_EQ(read_image(dir / "ok.nii").data.numel(), 24);
    f.put<float>(280, nan);
    std::ofstream(dir / "sform_nan.nii", std::ios::binary) << f.bytes();
    expect_bad_header(dir / "sform_nan.nii", "srow_x[0]");
    write_gz(dir / "sform_nan.nii.gz", f.bytes());
    expect_bad_header(dir / "sform_nan.nii.gz", "srow_x[0]");
    f.put<float>(280, 1.f);
    f.put<float>(324, inf);  // srow_z[3]
    std::ofstream(dir / "sform_inf.nii", std::ios::binary) << f.bytes();
    expect_bad_header(dir / "sform_inf.nii", "srow_z[3]");
    f.put<float>(324, 0.f);
    f.put<float>(312, 0.f);  // srow_z[0..2] all zero: a degenerate sform
    f.put<float>(320, 0.f);
    std::ofstream(dir / "sform_flat.nii", std::ios::binary) << f.bytes();
    expect_bad_header(dir / "sform_flat.nii", "degenerate");
  }
  {
    Nifti1File f;
    f.put<std::int16_t>(252, 1);  // qform_code
    f.put<float>(272, inf);       // qoffset_y
    std::ofstream(dir / "qform.nii", std::ios::binary) << f.bytes();
    expect_bad_header(dir / "qform.nii", "qoffset_y");
    f.put<float>(272, 0.f);
    f.put<float>(260, nan);  // quatern_c
    std::ofstream(dir / "quatern.nii", std::ios::binary) << f.bytes();
    expect_bad_header(dir / "quatern.nii", "quatern_c");
  }
  for (const float spacing : {nan, inf, 0.f, -1.5f}) {
    Nifti1File f;
    f.put<float>(84, spacing);  // pixdim[2]
    std::ofstream(dir / "pixdim.nii", std::ios::binary) << f.bytes();
    SCOPED_TRACE(spacing);
    expect_bad_header(dir / "pixdim.nii", "pixdim[2]");
  }
}

TEST(ImageIo, NiftiVoxOffsetInsideTheHeaderIsRefused) {
  TempDir dir("imgio_voxoffset");
  Nifti1File f;
  f.put<float>(108, 100.f);
  std::ofstream(dir / "shifted.nii", std::ios::binary) << f.bytes();
  expect_bad_header(dir / "shifted.nii", "vox_offset");
  f.put<float>(108, std::numeric_limits<float>::quiet_NaN());
  std::ofstream(dir / "nan_offset.nii", std::ios::binary) << f.bytes();
  expect_bad_header(dir / "nan_offset.nii", "vox_offset");
}

// nifti_clib replaces NaN and Inf voxels by 0 while reading: a study would silently change.
TEST(ImageIo, NiftiNanAndInfVoxelsArePreserved) {
  TempDir dir("imgio_nanvox");
  std::vector<float> voxels(24);
  for (std::size_t i = 0; i < voxels.size(); ++i) voxels[i] = static_cast<float>(i) - 3.5f;
  voxels[5] = std::numeric_limits<float>::quiet_NaN();
  voxels[6] = std::numeric_limits<float>::infinity();
  voxels[23] = -std::numeric_limits<float>::infinity();
  Nifti1File f;
  std::ofstream(dir / "nan.nii", std::ios::binary) << f.bytes(voxels);
  write_gz(dir / "nan.nii.gz", f.bytes(voxels));
  for (const char* name : {"nan.nii", "nan.nii.gz"}) {
    SCOPED_TRACE(name);
    const Volume v = read_image(dir / name);
    const float* p = v.data.data<float>();
    EXPECT_TRUE(std::isnan(p[5]));
    EXPECT_EQ(p[6], std::numeric_limits<float>::infinity());
    EXPECT_EQ(p[23], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(p[7], 3.5f);
    EXPECT_EQ(p[0], -3.5f);
  }
  // Scaling still applies to finite values; big-endian files are swapped.
  f.put<float>(112, 2.f);
  f.put<float>(116, 1.f);
  std::ofstream(dir / "scaled.nii", std::ios::binary) << f.bytes(voxels);
  const Volume scaled = read_image(dir / "scaled.nii");
  EXPECT_EQ(scaled.data.data<float>()[7], 8.f);
  EXPECT_TRUE(std::isnan(scaled.data.data<float>()[5]));
  // And write -> read keeps them (what convert does).
  write_image(dir / "copy.nii.gz", read_image(dir / "nan.nii"), {PixelType::float32});
  const Volume copy = read_image(dir / "copy.nii.gz");
  EXPECT_TRUE(std::isnan(copy.data.data<float>()[5]));
  EXPECT_EQ(copy.data.data<float>()[6], std::numeric_limits<float>::infinity());
}

// A small .nii.gz claiming 2048 x 1024 x 1024 float32 voxels (8 GiB, which is 0 modulo 2^32)
// must be refused at once, before anything is allocated.
TEST(ImageIo, NiftiGzipBombIsRefusedBeforeAllocating) {
  TempDir dir("imgio_gzbomb");
  Nifti1File f;
  const std::int16_t dim[8] = {3, 2048, 1024, 1024, 1, 1, 1, 1};
  std::memcpy(&f.h[40], dim, sizeof dim);
  write_gz(dir / "bomb.nii.gz", f.bytes(std::vector<float>(1024, 0.f)));
  const auto t0 = std::chrono::steady_clock::now();
  ErrorCode code{};
  const std::string msg = error_of(dir / "bomb.nii.gz", &code);
  EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
  EXPECT_NE(msg.find("8589934944 bytes"), std::string::npos) << msg;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

// A FIFO as the image would block the reader forever.
TEST(ImageIo, FifoAsInputIsRefused) {
  TempDir dir("imgio_fifo");
  for (const char* name : {"pipe.nii", "pipe.nii.gz", "pipe.mha", "pipe.nrrd"}) {
    ASSERT_EQ(::mkfifo((dir / name).c_str(), 0600), 0);
    ErrorCode code{};
    const std::string msg = error_of(dir / name, &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
    EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
  }
}

// Detached NRRD/MetaImage data files stay in the header's folder and must be regular files.
TEST(ImageIo, DetachedDataFilesAreConfinedToTheHeaderFolder) {
  TempDir dir("imgio_detached");
  fs::create_directories(dir.path() / "study");
  std::ofstream(dir / "outside.raw", std::ios::binary) << std::string(16, '\1');
  std::ofstream(dir / "study/inside.raw", std::ios::binary) << std::string(16, '\1');
  fs::create_symlink(dir.path() / "outside.raw", dir.path() / "study/link.raw");
  ASSERT_EQ(::mkfifo((dir / "study/pipe.raw").c_str(), 0600), 0);
  const auto mhd = [&](const std::string& data) {
    std::ofstream(dir / "study/a.mhd") << "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = 1 1 1\n"
                                       << "ElementType = MET_SHORT\nElementDataFile = " << data << "\n";
    return dir / "study/a.mhd";
  };
  const auto nhdr = [&](const std::string& data) {
    std::ofstream(dir / "study/a.nhdr") << "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nspacings: 1 1 1\n"
                                        << "encoding: raw\nendian: little\ndata file: " << data << "\n\n";
    return dir / "study/a.nhdr";
  };
  EXPECT_EQ(read_image(mhd("inside.raw")).data.numel(), 8);
  EXPECT_EQ(read_image(nhdr("inside.raw")).data.numel(), 8);
  const std::string abs = (dir.path() / "outside.raw").string();
  for (const auto& [data, why] :
       std::vector<std::pair<std::string, std::string>>{{"../outside.raw", "outside the header's folder"},
                                                        {abs, "relative path"},
                                                        {"link.raw", "outside the header's folder"},
                                                        {"pipe.raw", "not a regular file"}}) {
    for (const std::string& header : {mhd(data), nhdr(data)}) {
      SCOPED_TRACE(header + " -> " + data);
      ErrorCode code{};
      const std::string msg = error_of(header, &code);
      EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
      EXPECT_NE(msg.find(why), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace voxinfer
