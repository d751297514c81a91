// DICOM SEG writer and reader: label maps on synthetic and real CT series written as SEG,
// read back through the frames' own positions onto identical voxels and geometry, checked
// with dciodvfy (dicom3tools) when installed; dcmqi's liver.dcm read against its label map.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "io/dicom_seg_test_util.h"
#include "io/dicom_writer.h"
#include "test_util.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/dicom_seg.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using test::differing_voxels;
using test::expect_pydicom_agrees;
using test::expect_same_geometry;
using test::expect_valid_dicom;
using test::expected_frames;
using test::fresh_dir;

// Writes a synthetic CT series: `nz` slices of rows x columns, oblique, non-square pixels,
// file names in the opposite order of the slice positions.
Volume write_series(const fs::path& dir, int nz, int rows, int columns) {
  std::filesystem::create_directories(dir);
  const double c = std::cos(0.3), s = std::sin(0.3);
  for (int k = 0; k < nz; ++k) {
    test::SliceSpec spec;
    spec.rows = rows;
    spec.columns = columns;
    spec.pixel_spacing = "0.5\\0.75";  // rows 0.5 mm apart, columns 0.75 mm apart
    spec.slice_thickness = "2";
    spec.orientation[0] = c;
    spec.orientation[1] = s;
    spec.orientation[2] = 0;
    spec.orientation[3] = 0;
    spec.orientation[4] = 0;
    spec.orientation[5] = -1;  // coronal-ish, rows run head to foot
    // Normal = row x column = (-s, c, 0); step 2 mm along it from (10.5, -20.25, 30).
    spec.position[0] = 10.5 - 2.0 * k * s;
    spec.position[1] = -20.25 + 2.0 * k * c;
    spec.position[2] = 30;
    spec.instance = k + 1;
    spec.sop_instance = "1.2.826.0.1.3680043.9.9999.4." + std::to_string(k + 1);
    spec.pixels.assign(static_cast<std::size_t>(rows * columns), static_cast<std::uint16_t>(100 + k));
    test::write_slice((dir / ("IM" + std::to_string(100 - k))).string(), spec);
  }
  return read_volume(dir.string());
}

// Labels 1, 3 and 7 in shapes that differ per slice; slices 0 and 3 stay empty.
Volume synthetic_labels(const Volume& src) {
  Volume l(1, src.nz(), src.ny(), src.nx(), src.geometry);
  for (std::int64_t z = 0; z < l.nz(); ++z) {
    if (z == 0 || z == 3) continue;
    for (std::int64_t y = 0; y < l.ny(); ++y)
      for (std::int64_t x = 0; x < l.nx(); ++x) {
        float v = 0;
        if (x < 4 + z && y < 3) v = 1;
        if (x > l.nx() / 2 && y > 2 * z % l.ny()) v = 3;
        if (z == 4 && x == l.nx() - 1 && y == l.ny() - 1) v = 7;
        l.at(0, z, y, x) = v;
      }
  }
  return l;
}

std::vector<DicomSegSegment> segments_137() {
  DicomSegSegment a;
  a.value = 1;
  a.name = "liver";
  a.color = std::array<int, 3>{221, 130, 101};
  a.category = DicomSegCode{"SCT", "123037004", "Anatomical Structure"};
  a.type = DicomSegCode{"SCT", "10200004", "Liver"};
  DicomSegSegment b;
  b.value = 3;
  b.name = "spleen";
  b.color = std::array<int, 3>{157, 108, 162};
  DicomSegSegment c;
  c.value = 7;
  c.name = "lesion";  // no colour, no codes: the Tissue defaults
  return {a, b, c};
}

std::map<int, int> values_of(const std::vector<DicomSegSegment>& segments) {
  std::map<int, int> m;
  for (std::size_t i = 0; i < segments.size(); ++i) m[static_cast<int>(i + 1)] = segments[i].value;
  return m;
}

TEST(DicomSeg, SyntheticSeriesRoundTripsThroughFramePositions) {
  const fs::path dir = fresh_dir("synthetic");
  const Volume src = write_series(dir / "ct", 6, 9, 13);
  ASSERT_EQ(src.nz(), 6);
  ASSERT_EQ(src.ny(), 9);
  ASSERT_EQ(src.nx(), 13);
  const Volume labels = synthetic_labels(src);
  DicomSegWriteOptions o;
  o.segments = segments_137();
  o.algorithm_name = "test-model";
  o.algorithm_version = "2.1";
  const fs::path out = dir / "seg.dcm";
  write_dicom_seg(out.string(), labels, src.metadata, o);
  ASSERT_TRUE(fs::exists(out));

  // On the source grid: identical voxels.
  DicomSegReadOptions ro;
  ro.grid = &src.geometry;
  ro.grid_slices = src.nz();
  ro.segment_values = values_of(o.segments);
  DicomSegInfo info;
  const Volume back = read_dicom_seg(out.string(), ro, &info);
  expect_same_geometry(back.geometry, src.geometry);
  EXPECT_EQ(differing_voxels(back, labels), 0);
  EXPECT_EQ(info.type, "BINARY");
  EXPECT_EQ(info.frames, expected_frames(labels));
  EXPECT_EQ(info.overlapping_voxels, 0);
  EXPECT_EQ(info.series_description, "Segmentation by test-model 2.1");
  EXPECT_EQ(info.referenced_series_uid, src.metadata.at("SeriesInstanceUID"));

  // The label values 1, 3, 7 come back from the SEG itself (segments are numbered 1, 2, 3).
  const Volume by_description = read_dicom_seg(out.string(), DicomSegReadOptions{&src.geometry, src.nz(), {}});
  EXPECT_EQ(differing_voxels(by_description, labels), 0);

  // Each frame references the source image of its own slice.
  const std::string sops = src.metadata.at("SOPInstanceUIDs");
  std::vector<std::string> uids;
  for (std::size_t b = 0, e; b <= sops.size(); b = e + 1) {
    e = sops.find('\\', b);
    if (e == std::string::npos) e = sops.size();
    uids.push_back(sops.substr(b, e - b));
  }
  ASSERT_EQ(uids.size(), 6u);
  ASSERT_EQ(info.frame_list.size(), static_cast<std::size_t>(info.frames));
  for (const DicomSegFrame& f : info.frame_list) EXPECT_EQ(f.referenced_sop_instance_uid, uids[static_cast<std::size_t>(f.slice)]);

  // Segments: names, codes (defaults where none), colours back from CIELab.
  ASSERT_EQ(info.segments.size(), 3u);
  EXPECT_EQ(info.segments[0].name, "liver");
  EXPECT_EQ(info.segments[0].type->value, "10200004");
  EXPECT_EQ(info.segments[0].category->meaning, "Anatomical Structure");
  EXPECT_EQ(info.segments[2].type->value, dicom_seg_tissue_code().value);
  EXPECT_EQ(info.segments[2].category->value, dicom_seg_tissue_code().value);
  EXPECT_EQ(info.segments[1].algorithm_type, "AUTOMATIC");
  EXPECT_EQ(info.segments[1].algorithm_name, "test-model 2.1");
  EXPECT_EQ(info.segments[1].label_value, 3);
  ASSERT_TRUE(info.segments[0].color.has_value());
  for (int c = 0; c < 3; ++c) EXPECT_NEAR((*info.segments[0].color)[c], (*o.segments[0].color)[c], 1);
  EXPECT_FALSE(info.segments[2].color.has_value());

  // Without a reference grid: the frames span slices 1..5 (slice 0 is empty).
  const Volume own = read_dicom_seg(out.string(), DicomSegReadOptions{nullptr, 0, ro.segment_values});
  ASSERT_EQ(own.nz(), 5);
  Geometry g = src.geometry;
  g.origin = src.geometry.index_to_physical(Eigen::Vector3d(0, 0, 1));
  expect_same_geometry(own.geometry, g);
  std::int64_t diff = 0;
  for (std::int64_t z = 0; z < own.nz(); ++z)
    for (std::int64_t y = 0; y < own.ny(); ++y)
      for (std::int64_t x = 0; x < own.nx(); ++x) diff += own.at(0, z, y, x) != labels.at(0, z + 1, y, x);
  EXPECT_EQ(diff, 0);

  expect_valid_dicom(out);
  expect_pydicom_agrees(out, labels, values_of(o.segments));  // 13 x 9 frames: not whole bytes
}

TEST(DicomSeg, KeepEmptyFramesWritesEverySliceOfEverySegment) {
  const fs::path dir = fresh_dir("keep_empty");
  const Volume src = write_series(dir / "ct", 5, 8, 8);
  const Volume labels = synthetic_labels(src);
  DicomSegWriteOptions o;
  o.segments = segments_137();
  o.keep_empty_frames = true;
  write_dicom_seg((dir / "seg.dcm").string(), labels, src.metadata, o);
  DicomSegInfo info;
  DicomSegReadOptions ro{&src.geometry, src.nz(), values_of(o.segments)};
  const Volume back = read_dicom_seg((dir / "seg.dcm").string(), ro, &info);
  EXPECT_EQ(info.frames, 5 * 3);
  EXPECT_EQ(differing_voxels(back, labels), 0);
  expect_valid_dicom(dir / "seg.dcm");
}

TEST(DicomSeg, FractionalProbabilitiesRoundTripAtHalf) {
  const fs::path dir = fresh_dir("fractional");
  const Volume src = write_series(dir / "ct", 4, 6, 7);
  Volume prob(2, src.nz(), src.ny(), src.nx(), src.geometry);
  Volume expected(1, src.nz(), src.ny(), src.nx(), src.geometry);
  for (std::int64_t z = 0; z < src.nz(); ++z)
    for (std::int64_t y = 0; y < src.ny(); ++y)
      for (std::int64_t x = 0; x < src.nx(); ++x) {
        const float p0 = static_cast<float>((x + y + z) % 5) / 4.f;   // 0, .25, .5, .75, 1
        const float p1 = static_cast<float>((x * y + z) % 3) / 2.f;   // 0, .5, 1
        prob.at(0, z, y, x) = p0;
        prob.at(1, z, y, x) = p1;
        expected.at(0, z, y, x) = p1 >= 0.5f ? 2.f : (p0 >= 0.5f ? 1.f : 0.f);
      }
  DicomSegWriteOptions o;
  o.fractional = true;
  o.segments = {DicomSegSegment{}, DicomSegSegment{}};
  o.segments[0].value = 1;
  o.segments[1].value = 2;
  write_dicom_seg((dir / "seg.dcm").string(), prob, src.metadata, o);
  DicomSegInfo info;
  const Volume back = read_dicom_seg((dir / "seg.dcm").string(), DicomSegReadOptions{&src.geometry, src.nz(), {}}, &info);
  EXPECT_EQ(info.type, "FRACTIONAL");
  EXPECT_EQ(differing_voxels(back, expected), 0);
  EXPECT_GT(info.overlapping_voxels, 0);  // p0 and p1 are both >= .5 somewhere
  expect_valid_dicom(dir / "seg.dcm");
}

TEST(DicomSeg, RefusesSourcesThatAreNotDicomAndLabelsWithoutSegments) {
  const fs::path dir = fresh_dir("refuse");
  const Volume src = write_series(dir / "ct", 3, 4, 5);
  const Volume labels = synthetic_labels(src);
  DicomSegWriteOptions o;
  o.segments = segments_137();
  std::map<std::string, std::string> not_dicom = {{"source_format", "NIfTI"}};
  try {
    write_dicom_seg((dir / "a.dcm").string(), labels, not_dicom, o);
    FAIL() << "a source without DICOM identifiers was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_input);
    EXPECT_NE(std::string(e.what()).find("not a DICOM series"), std::string::npos) << e.what();
  }
  o.segments.pop_back();  // label 7 is in the map but no longer listed
  Volume with7 = labels;
  with7.at(0, 1, 0, 0) = 7;
  EXPECT_THROW(write_dicom_seg((dir / "b.dcm").string(), with7, src.metadata, o), Error);
  Volume with_nan = labels;
  with_nan.at(0, 1, 1, 1) = std::nanf("");
  EXPECT_THROW(write_dicom_seg((dir / "b.dcm").string(), with_nan, src.metadata, o), Error);
  with_nan.at(0, 1, 1, 1) = 1.5f;  // not an integer
  EXPECT_THROW(write_dicom_seg((dir / "b.dcm").string(), with_nan, src.metadata, o), Error);
  // A label map on another grid (shifted by half a slice) is refused.
  Volume shifted = labels;
  shifted.geometry.origin += 0.5 * shifted.geometry.spacing[2] * shifted.geometry.direction.col(2);
  o.segments = segments_137();
  EXPECT_THROW(write_dicom_seg((dir / "c.dcm").string(), shifted, src.metadata, o), Error);
  EXPECT_FALSE(fs::exists(dir / "a.dcm"));
  EXPECT_FALSE(fs::exists(dir / "b.dcm"));
  EXPECT_FALSE(fs::exists(dir / "c.dcm"));
}

TEST(DicomSeg, FailedWriteLeavesNoFileAndKeepsAnOldOne) {
  const fs::path dir = fresh_dir("atomic");
  const Volume src = write_series(dir / "ct", 3, 4, 5);
  const Volume labels = synthetic_labels(src);
  DicomSegWriteOptions o;
  o.segments = segments_137();
  // The last step (moving the finished file into place) fails: the target is a folder.
  fs::create_directories(dir / "out" / "seg.dcm" / "x");
  EXPECT_THROW(write_dicom_seg((dir / "out" / "seg.dcm").string(), labels, src.metadata, o), Error);
  std::int64_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir / "out")) entries += e.path().filename() != "seg.dcm";
  EXPECT_EQ(entries, 0) << "a temporary file was left behind";
  // A failing write does not touch an existing file of that name.
  const fs::path old = dir / "old.dcm";
  std::ofstream(old) << "previous";
  Volume bad = labels;
  bad.at(0, 2, 1, 1) = 99;
  EXPECT_THROW(write_dicom_seg(old.string(), bad, src.metadata, o), Error);
  std::ifstream in(old);
  std::string text;
  in >> text;
  EXPECT_EQ(text, "previous");
}

TEST(DicomSeg, EmptyLabelMapStillGivesAValidSeg) {
  const fs::path dir = fresh_dir("empty");
  const Volume src = write_series(dir / "ct", 3, 4, 5);
  const Volume labels(1, src.nz(), src.ny(), src.nx(), src.geometry);
  DicomSegWriteOptions o;
  o.segments = segments_137();
  write_dicom_seg((dir / "seg.dcm").string(), labels, src.metadata, o);
  DicomSegInfo info;
  const Volume back = read_dicom_seg((dir / "seg.dcm").string(), DicomSegReadOptions{&src.geometry, src.nz(), {}}, &info);
  EXPECT_EQ(info.frames, 3);  // one empty frame per segment keeps each segment referenced
  EXPECT_EQ(differing_voxels(back, labels), 0);
  expect_valid_dicom(dir / "seg.dcm");
}

}  // namespace
}  // namespace voxinfer
