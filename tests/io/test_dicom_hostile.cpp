// DICOM files built to break the reader: sequences nested thousands deep, non-finite
// rescale and geometry, damaged slices inside a series, compressed frames whose size
// disagrees with Rows/Columns, control characters in strings. Each must give an error
// that names the file (or, where asked, a warning), never a crash or a wrong volume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "dicom_writer.h"
#include "io_test_util.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/dicom_seg.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using test::SliceSpec;
using test::TempDir;

std::string error_of(const std::function<void()>& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

// Five slices 2 mm apart, named s0..s4 in position order; slice k stores k+1.
void write_series(const fs::path& dir, SliceSpec base = {}) {
  fs::create_directories(dir);
  for (int k = 0; k < 5; ++k) {
    SliceSpec s = base;
    s.instance = k + 1;
    s.position[2] = 2.0 * k;
    s.sop_instance = base.sop_instance + "." + std::to_string(k);
    if (s.fragments.empty())
      s.pixels.assign(static_cast<std::size_t>(s.rows * s.columns), static_cast<std::uint16_t>(k + 1));
    test::write_slice((dir / ("s" + std::to_string(k))).string(), s);
  }
}

// `depth` sequences, each the only element of the single item of the one above
// (undefined lengths, so that the file is linear in the depth).
std::string nested_sequences(int depth) {
  const std::string open =
      std::string("SQ\0\0", 4) + test::le32(0xFFFFFFFFu) + std::string("\xFE\xFF\x00\xE0", 4) + test::le32(0xFFFFFFFFu);
  const std::string tag("\x08\x00\x15\x11", 4);  // (0008,1115) ReferencedSeriesSequence
  const std::string close =
      std::string("\xFE\xFF\x0D\xE0", 4) + test::le32(0) + std::string("\xFE\xFF\xDD\xE0", 4) + test::le32(0);
  std::string v = open;
  for (int i = 1; i < depth; ++i) v += tag + open;
  for (int i = 0; i < depth; ++i) v += close;
  return v;
}

TEST(DicomHostile, DeeplyNestedSequencesAreRefusedBeforeParsing) {
  TempDir dir("dcm_nest");
  SliceSpec s;
  s.extra.emplace_back(0x0008, 0x1115, "", nested_sequences(20000));
  test::write_slice(dir / "deep.dcm", s);
  ErrorCode code{};
  std::string msg = error_of([&] { read_volume(dir / "deep.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("deep.dcm"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nest"), std::string::npos) << msg;
  // In a folder with good slices it names the file too; info and the SEG reader refuse it.
  write_series(dir.path() / "series");
  test::write_slice((dir.path() / "series" / "deep.dcm").string(), s);
  msg = error_of([&] { read_volume(dir / "series"); }, &code);
  EXPECT_NE(msg.find("deep.dcm"), std::string::npos) << msg;
  msg = error_of([&] { list_dicom_series(dir / "series"); }, &code);
  EXPECT_NE(msg.find("deep.dcm"), std::string::npos) << msg;
  msg = error_of([&] { read_dicom_seg(dir / "deep.dcm"); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_input);
  EXPECT_NE(msg.find("nest"), std::string::npos) << msg;

  // Real objects nest a few levels: still read.
  SliceSpec shallow;
  shallow.extra.emplace_back(0x0008, 0x1115, "", nested_sequences(8));
  test::write_slice(dir / "shallow.dcm", shallow);
  EXPECT_EQ(read_volume(dir / "shallow.dcm").nx(), 5);
}

TEST(DicomHostile, NonFiniteRescaleIsAnErrorNamingTheFile) {
  for (const char* field : {"slope", "intercept"})
    for (const char* value : {"nan", "inf", "-inf", "1e999"}) {
      TempDir dir("dcm_rescale");
      SliceSpec s;
      (std::string(field) == "slope" ? s.slope : s.intercept) = value;
      write_series(dir.path() / "series");
      // Only the middle slice is bad.
      s.instance = 3;
      s.position[2] = 4.0;
      test::write_slice((dir.path() / "series" / "s2").string(), s);
      ErrorCode code{};
      const std::string msg = error_of([&] { read_volume((dir.path() / "series").string()); }, &code);
      EXPECT_EQ(code, ErrorCode::invalid_input) << field << "=" << value << ": " << msg;
      EXPECT_NE(msg.find("s2"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string("Rescale") + (field[0] == 's' ? "Slope" : "Intercept")), std::string::npos) << msg;
    }
}

TEST(DicomHostile, DamagedSliceInASeriesIsNeverDroppedSilently) {
  for (int bad : {0, 2, 4})
    for (std::uintmax_t keep : {std::uintmax_t{300}, std::uintmax_t{0}}) {
      TempDir dir("dcm_trunc");
      SliceSpec s;
      s.rows = s.columns = 32;
      write_series(dir.path(), s);
      const fs::path victim = dir.path() / ("s" + std::to_string(bad));
      // Cut inside the pixel data, or inside the header.
      fs::resize_file(victim, keep ? keep : fs::file_size(victim) - 100);
      ErrorCode code{};
      const std::string msg = error_of([&] { read_volume(dir.path().string()); }, &code);
      EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
      EXPECT_NE(msg.find(victim.filename().string()), std::string::npos) << "slice " << bad << ": " << msg;

      ReadOptions skip;
      skip.skip_unreadable = true;
      skip.allow_uneven = true;  // without the middle slice the gaps are uneven
      const Volume v = read_volume(dir.path().string(), skip);
      EXPECT_EQ(v.nz(), bad == 2 ? 5 : 4);
      ASSERT_TRUE(v.metadata.count("warning"));
      EXPECT_NE(v.metadata.at("warning").find("skipped 1 unreadable file"), std::string::npos)
          << v.metadata.at("warning");
      EXPECT_NE(v.metadata.at("warning").find(victim.filename().string()), std::string::npos);
    }
}

TEST(DicomHostile, ReportsWithoutPixelsBesideASeriesAreStillSkipped) {
  TempDir dir("dcm_report");
  write_series(dir.path());
  SliceSpec s;
  s.with_pixels = false;
  s.series_uid = "1.2.3.4.5";
  test::write_slice((dir.path() / "report").string(), s);
  EXPECT_EQ(read_volume(dir.path().string()).nz(), 5);
}

TEST(DicomHostile, NegativeOrNonFinitePixelSpacingIsNamed) {
  for (const char* spacing : {"-0.5\\-0.75", "0.5\\-0.75", "inf\\1"}) {
    TempDir dir("dcm_spacing");
    SliceSpec s;
    s.pixel_spacing = spacing;
    write_series(dir.path(), s);
    ErrorCode code{};
    const std::string msg = error_of([&] { read_volume(dir.path().string()); }, &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
    EXPECT_NE(msg.find("PixelSpacing"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("gantry tilt"), std::string::npos) << msg;
  }
}

// PackBits runs of literals.
std::string packbits(const std::string& bytes) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 128) {
    const std::size_t n = std::min<std::size_t>(128, bytes.size() - i);
    out += static_cast<char>(n - 1);
    out += bytes.substr(i, n);
  }
  return out;
}

// One RLE Lossless frame of 16-bit pixels (PS3.5 G): high bytes, then low bytes.
std::string rle_frame(const std::vector<std::uint16_t>& px) {
  std::string hi, lo;
  for (std::uint16_t v : px) {
    hi += static_cast<char>(v >> 8);
    lo += static_cast<char>(v & 0xFF);
  }
  const std::string a = packbits(hi), b = packbits(lo);
  std::string header = test::le32(2) + test::le32(64) + test::le32(static_cast<std::uint32_t>(64 + a.size()));
  header.resize(64, '\0');
  return header + a + b;
}

TEST(DicomHostile, RleFrameOfTheWrongSizeIsRefused) {
  TempDir dir("dcm_rle");
  SliceSpec s;  // 4 rows x 5 columns
  s.transfer_syntax = "1.2.840.10008.1.2.5";
  std::vector<std::uint16_t> px(20);
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<std::uint16_t>(300 + i);
  s.fragments = {rle_frame(px)};
  test::write_slice(dir / "good.dcm", s);
  const Volume v = read_volume(dir / "good.dcm");
  EXPECT_EQ(v.at(0, 0, 0, 0), 300.0f);
  EXPECT_EQ(v.at(0, 0, 3, 4), 319.0f);

  for (std::size_t n : {std::size_t{64}, std::size_t{12}}) {
    s.fragments = {rle_frame(std::vector<std::uint16_t>(n, 7))};
    test::write_slice(dir / "wrong.dcm", s);
    ErrorCode code{};
    const std::string msg = error_of([&] { read_volume(dir / "wrong.dcm"); }, &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << msg;
    EXPECT_NE(msg.find("wrong.dcm"), std::string::npos) << msg;
    EXPECT_NE(msg.find("decodes to " + std::to_string(n) + " pixels"), std::string::npos) << msg;
  }
}

TEST(DicomHostile, JpegFrameOfTheWrongSizeIsRefused) {
  TempDir dir("dcm_jpeg");
  for (const char* syntax : {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.80"}) {
    SliceSpec s;  // 4 rows x 5 columns; the frame header says 8 x 8
    s.transfer_syntax = syntax;
    const bool ls = std::string(syntax).substr(std::string(syntax).size() - 3) == ".80";
    std::string jpeg("\xFF\xD8", 2);
    jpeg += ls ? std::string("\xFF\xF7", 2) : std::string("\xFF\xC3", 2);
    jpeg += std::string("\x00\x0B\x10\x00\x08\x00\x08\x01\x01\x11\x00", 11);
    jpeg += std::string("\xFF\xD9", 2);
    s.fragments = {jpeg};
    test::write_slice(dir / "wrong.dcm", s);
    ErrorCode code{};
    const std::string msg = error_of([&] { read_volume(dir / "wrong.dcm"); }, &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << syntax << ": " << msg;
    EXPECT_NE(msg.find("compressed frame 1 is 8x8 but Columns/Rows say 5x4"), std::string::npos) << msg;
  }
}

TEST(DicomHostile, ControlCharactersAreNeverEchoed) {
  TempDir dir("dcm_ctrl");
  SliceSpec s;
  s.series_uid = "1.2.3\nfake: line\x1b[31m";
  s.extra.emplace_back(0x0008, 0x103E, "LO", "desc\r\nsecond line");
  s.extra.emplace_back(0x0018, 0x1120, "DS", "1\n2");
  // Sheared slices: the tilt error quotes the series and GantryDetectorTilt.
  fs::create_directories(dir.path());
  for (int k = 0; k < 3; ++k) {
    SliceSpec t = s;
    t.instance = k + 1;
    t.position[1] = 3.0 * k;
    t.position[2] = 2.0 * k;
    t.sop_instance = s.sop_instance + "." + std::to_string(k);
    test::write_slice((dir.path() / ("t" + std::to_string(k))).string(), t);
  }
  const std::string msg = error_of([&] { read_volume(dir.path().string()); });
  ASSERT_FALSE(msg.empty());
  for (char c : msg) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << msg;
  const std::string missing = error_of([&] {
    ReadOptions o;
    o.series_uid = "9.9";
    read_volume(dir.path().string(), o);
  });
  ASSERT_FALSE(missing.empty());
  for (char c : missing) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << missing;
  const auto series = list_dicom_series(dir.path().string());
  ASSERT_EQ(series.size(), 1u);
  for (const std::string& v : {series[0].series_uid, series[0].description, series[0].problem})
    for (char c : v) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << v;
}

}  // namespace
}  // namespace voxinfer
