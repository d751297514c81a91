// DICOM reader on synthetic series written by the tests themselves: slice order,
// spacing, bit masking, rescale, awkward series (tilt, uneven spacing, time points, a
// single image) and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "dicom_writer.h"
#include "io_test_util.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using test::SliceSpec;
using test::TempDir;

// Writes a series with one slice per z position; slice k stores value k+1 everywhere.
// Files are named in reverse (and instance numbers shuffled) so that only the positions
// give the right order.
void write_series(const TempDir& dir, const std::vector<double>& z, SliceSpec base = {}) {
  const int n = static_cast<int>(z.size());
  for (int k = 0; k < n; ++k) {
    SliceSpec s = base;
    s.instance = k + 1;
    s.position[2] = z[static_cast<std::size_t>(k)];
    s.sop_instance = base.sop_instance + "." + std::to_string(k);
    s.pixels.assign(static_cast<std::size_t>(s.rows * s.columns), static_cast<std::uint16_t>(k + 1));
    test::write_slice(dir / ("IM" + std::to_string((n - k) * 7 % 100)), s);
  }
}

std::string error_of(const std::function<void()>& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

TEST(Dicom, SortsByPositionAndTakesSpacingFromPositions) {
  TempDir dir("dcm_sort");
  write_series(dir, {10.0, 2.5, 7.5, 5.0, 12.5});  // shuffled positions, spacing 2.5
  const Volume v = read_volume(dir.path().string());
  ASSERT_EQ(v.nz(), 5);
  EXPECT_EQ(v.ny(), 4);
  EXPECT_EQ(v.nx(), 5);
  EXPECT_NEAR(v.geometry.origin[2], 2.5, 1e-9);
  EXPECT_NEAR(v.geometry.spacing[0], 0.75, 1e-9);  // column spacing
  EXPECT_NEAR(v.geometry.spacing[1], 0.5, 1e-9);   // row spacing
  EXPECT_NEAR(v.geometry.spacing[2], 2.5, 1e-9);
  // Slice k of the file list held value k+1; sorted by z the order is 2,4,3,1,5.
  const float expected[] = {2, 4, 3, 1, 5};
  for (int z = 0; z < 5; ++z) EXPECT_EQ(v.at(0, z, 3, 4), expected[z]) << z;
  EXPECT_EQ(v.metadata.at("Modality"), "CT");
  EXPECT_EQ(v.metadata.at("PatientName"), "Doe^Jane");
  // SOP instances in slice order, for a DICOM SEG that references them.
  EXPECT_EQ(v.metadata.at("SOPInstanceUIDs").substr(0, 32), "1.2.826.0.1.3680043.9.9999.4.1.1");
}

TEST(Dicom, SagittalSliceNormalIsRowCrossColumn) {
  TempDir dir("dcm_sag");
  SliceSpec s;
  s.orientation[0] = 0, s.orientation[1] = 1, s.orientation[2] = 0;  // rows along +y
  s.orientation[3] = 0, s.orientation[4] = 0, s.orientation[5] = -1; // columns along -z
  for (int k = 0; k < 3; ++k) {
    SliceSpec t = s;
    t.instance = k + 1;
    t.sop_instance = s.sop_instance + "." + std::to_string(k);
    t.position[0] = 4.0 - 2.0 * k;  // instance order runs along +x, the normal is -x
    test::write_slice(dir / ("s" + std::to_string(k)), t);
  }
  const Volume v = read_volume(dir.path().string());
  EXPECT_EQ(v.geometry.orientation_code(), "PIR");
  EXPECT_NEAR(v.geometry.direction(0, 2), -1.0, 1e-12);
  EXPECT_NEAR(v.geometry.origin[0], 4.0, 1e-9);
  EXPECT_NEAR(v.geometry.spacing[2], 2.0, 1e-9);
  EXPECT_EQ(v.at(0, 0, 0, 0), 1.f);
  EXPECT_EQ(v.at(0, 2, 0, 0), 3.f);
}

TEST(Dicom, MasksBitsStoredAndSignExtends) {
  TempDir dir("dcm_bits");
  SliceSpec s;
  s.rows = 1, s.columns = 4;
  s.bits_stored = 12, s.high_bit = 11;
  s.pixels = {0x0F0F, 0xFFFF, 0x0800, 0xF7FF};  // junk in the 4 high bits
  test::write_slice(dir / "unsigned.dcm", s);
  s.pixel_representation = 1;
  s.series_uid += ".2";
  test::write_slice(dir / "signed.dcm", s);
  const Volume u = read_volume(dir / "unsigned.dcm");
  EXPECT_EQ(u.at(0, 0, 0, 0), 3855.f);
  EXPECT_EQ(u.at(0, 0, 0, 1), 4095.f);
  EXPECT_EQ(u.at(0, 0, 0, 2), 2048.f);
  EXPECT_EQ(u.at(0, 0, 0, 3), 2047.f);
  const Volume v = read_volume(dir / "signed.dcm");
  EXPECT_EQ(v.at(0, 0, 0, 0), -241.f);
  EXPECT_EQ(v.at(0, 0, 0, 1), -1.f);
  EXPECT_EQ(v.at(0, 0, 0, 2), -2048.f);
  EXPECT_EQ(v.at(0, 0, 0, 3), 2047.f);
}

TEST(Dicom, AppliesDecimalRescale) {
  TempDir dir("dcm_rescale");
  SliceSpec s;
  s.slope = "2.5";
  s.intercept = "-1024.25";
  s.pixels.assign(20, 100);
  test::write_slice(dir / "a.dcm", s);
  EXPECT_EQ(read_volume(dir / "a.dcm").at(0, 0, 1, 1), 100 * 2.5f - 1024.25f);
}

TEST(Dicom, SingleImageIsOneSliceWithSliceThicknessSpacing) {
  TempDir dir("dcm_single");
  SliceSpec s;
  s.position[2] = -7;
  test::write_slice(dir / "one.dcm", s);
  const Volume v = read_volume(dir / "one.dcm");
  EXPECT_EQ(v.nz(), 1);
  EXPECT_EQ(v.channels(), 1);
  EXPECT_NEAR(v.geometry.spacing[2], 2.5, 1e-12);
  EXPECT_NEAR(v.geometry.origin[2], -7, 1e-12);
}

TEST(Dicom, MissingSliceIsRefusedNamingTheGapOrResampled) {
  TempDir dir("dcm_gap");
  write_series(dir, {0, 2, 4, 8, 10});  // the slice at 6 mm is missing
  ErrorCode code{};
  const std::string msg = error_of([&] { read_volume(dir.path().string()); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("4.000 mm"), std::string::npos) << msg;
  EXPECT_NE(msg.find("slices 2 and 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing slice"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("Doe"), std::string::npos) << "patient name in an error: " << msg;

  ReadOptions o;
  o.allow_uneven = true;
  const Volume v = read_volume(dir.path().string(), o);
  ASSERT_EQ(v.nz(), 6);
  EXPECT_NEAR(v.geometry.spacing[2], 2.0, 1e-9);
  // Sorted by z the stored values are 1,2,3,4,5 at 0,2,4,8,10: the new slice at 6 mm is
  // halfway between the slices at 4 (value 3) and 8 (value 4).
  const float expected[] = {1, 2, 3, 3.5f, 4, 5};
  for (int z = 0; z < 6; ++z) EXPECT_FLOAT_EQ(v.at(0, z, 1, 1), expected[z]) << z;
  EXPECT_EQ(v.metadata.count("SOPInstanceUIDs"), 0u);
  EXPECT_NE(v.metadata.at("warning").find("resampled"), std::string::npos);
}

TEST(Dicom, GantryTiltIsRefusedNamingTheAngle) {
  TempDir dir("dcm_tilt");
  const double angle = 15.0 * 3.14159265358979323846 / 180.0;
  // Columns tilted about x; slices stacked along z: the step leaves the normal by 15 degrees.
  SliceSpec s;
  s.orientation[4] = std::cos(angle);
  s.orientation[5] = -std::sin(angle);
  for (int k = 0; k < 4; ++k) {
    SliceSpec t = s;
    t.instance = k + 1;
    t.sop_instance = s.sop_instance + "." + std::to_string(k);
    t.position[2] = 5.0 * k;
    test::write_slice(dir / ("t" + std::to_string(k)), t);
  }
  ErrorCode code{};
  const std::string msg = error_of([&] { read_volume(dir.path().string()); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("15.00 degrees"), std::string::npos) << msg;
}

TEST(Dicom, TimePointsBecomeChannelsInAcquisitionOrder) {
  TempDir dir("dcm_4d");
  for (int t = 0; t < 2; ++t)
    for (int k = 0; k < 3; ++k) {
      SliceSpec s;
      s.instance = 1 + t * 3 + k;
      s.sop_instance = "1.2.3." + std::to_string(s.instance);
      s.position[2] = 3.0 * k;
      s.pixels.assign(20, static_cast<std::uint16_t>(100 * t + k));
      test::write_slice(dir / ("f" + std::to_string(s.instance)), s);
    }
  const Volume v = read_volume(dir.path().string());
  ASSERT_EQ(v.channels(), 2);
  ASSERT_EQ(v.nz(), 3);
  for (int t = 0; t < 2; ++t)
    for (int k = 0; k < 3; ++k) EXPECT_EQ(v.at(t, k, 0, 0), float(100 * t + k));
}

TEST(Dicom, PicksTheLargest3DSeriesOrTheOneAsked) {
  TempDir dir("dcm_pick");
  SliceSpec small;
  small.series_uid = "1.2.3.4.100";
  write_series(dir, {0, 1}, small);
  fs::create_directories(dir.path() / "sub" / "deeper");
  SliceSpec big;
  big.series_uid = "1.2.3.4.200";
  big.sop_instance = "1.2.3.4.200.9";
  for (int k = 0; k < 4; ++k) {
    SliceSpec s = big;
    s.instance = k + 1;
    s.position[2] = k;
    s.sop_instance = big.sop_instance + "." + std::to_string(k);
    test::write_slice((dir.path() / "sub" / "deeper" / ("b" + std::to_string(k))).string(), s);
  }
  std::ofstream(dir.path() / "README.txt") << "not DICOM";
  const auto list = list_dicom_series(dir.path().string());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].series_uid, "1.2.3.4.200");
  EXPECT_EQ(list[0].size[2], 4);
  EXPECT_EQ(list[0].modality, "CT");
  EXPECT_EQ(read_volume(dir.path().string()).nz(), 4);
  ReadOptions o;
  o.series_uid = "1.2.3.4.100";
  EXPECT_EQ(read_volume(dir.path().string(), o).nz(), 2);
  o.series_uid = "9.9.9";
  ErrorCode code{};
  const std::string msg = error_of([&] { read_volume(dir.path().string(), o); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("1.2.3.4.200"), std::string::npos) << msg;
}

TEST(Dicom, DecodingIsTheSameForAnyThreadCount) {
  TempDir dir("dcm_threads");
  SliceSpec s;
  s.rows = 16, s.columns = 9;
  std::vector<double> z;
  for (int k = 0; k < 24; ++k) z.push_back(k * 1.5);
  write_series(dir, z, s);
  set_num_threads(1);
  const Volume one = read_volume(dir.path().string());
  set_num_threads(0);
  const Volume many = read_volume(dir.path().string());
  ASSERT_EQ(one.data.shape(), many.data.shape());
  EXPECT_EQ(std::memcmp(one.data.raw(), many.data.raw(), one.data.nbytes()), 0);
}

TEST(Dicom, BadInputsGiveClearErrors) {
  TempDir dir("dcm_bad");
  ErrorCode code{};
  std::string msg;

  msg = error_of([&] { read_volume(dir / "nowhere"); }, &code);
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;

  fs::create_directories(dir.path() / "empty");
  std::ofstream(dir.path() / "empty" / "notes.txt") << "hello";
  msg = error_of([&] { read_volume(dir / "empty"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("no DICOM files"), std::string::npos) << msg;

  SliceSpec s;
  s.with_pixels = false;
  test::write_slice(dir / "nopixels.dcm", s);
  msg = error_of([&] { read_volume(dir / "nopixels.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("no pixel data"), std::string::npos) << msg;

  s = SliceSpec{};
  s.rows = s.columns = 64;
  test::write_slice(dir / "full.dcm", s);
  const auto size = fs::file_size(dir / "full.dcm");
  fs::copy_file(dir / "full.dcm", dir / "truncated.dcm");
  fs::resize_file(dir / "truncated.dcm", size - 1000);
  msg = error_of([&] { read_volume(dir / "truncated.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
  EXPECT_NE(msg.find("truncated.dcm"), std::string::npos) << msg;

  for (const char* spacing : {"0\\0", "nan\\nan"}) {
    s = SliceSpec{};
    s.pixel_spacing = spacing;
    test::write_slice(dir / "spacing.dcm", s);
    msg = error_of([&] { read_volume(dir / "spacing.dcm"); }, &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << spacing;
    EXPECT_NE(msg.find("spacing"), std::string::npos) << msg;
  }

  // A header claiming 2^40 voxels (65536 x 65536 x 256 frames) over a few bytes of pixels:
  // refused from the header, without allocating anything of that size.
  s = SliceSpec{};
  s.rows = s.columns = 65535;
  s.number_of_frames = "256";
  s.pixels.assign(64, 0);
  test::write_slice(dir / "huge.dcm", s);
  msg = error_of([&] { read_volume(dir / "huge.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("NumberOfFrames 256"), std::string::npos) << msg;
  s.number_of_frames = "2000000000";
  test::write_slice(dir / "frames.dcm", s);
  msg = error_of([&] { read_volume(dir / "frames.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("implausible"), std::string::npos) << msg;

  std::ofstream(dir / "garbage.dcm") << std::string(300, 'x');
  msg = error_of([&] { read_volume(dir / "garbage.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("garbage.dcm"), std::string::npos) << msg;
}

}  // namespace
}  // namespace voxinfer
