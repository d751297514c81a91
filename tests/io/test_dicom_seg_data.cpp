// DICOM SEG on shared data: dcmqi's SEGs read against their label maps, SEGs written for
// real CT series read back onto identical voxels and validated with dciodvfy.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "io/dicom_seg_test_util.h"
#include "test_util.h"
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

TEST(DicomSegData, DcmqiLiverMatchesItsLabelMap) {
  VOXINFER_REQUIRE_SHARED("data/dcmqi_seg/data/segmentations/liver.dcm");
  const fs::path d = test::shared_dir() / "data/dcmqi_seg/data/segmentations";
  const Volume truth = read_image((d / "liver_seg.nrrd").string());
  const Volume ct = read_volume((d / "ct-3slice").string());
  ASSERT_EQ(truth.nz(), 3);
  DicomSegInfo info;
  const Volume on_ct = read_dicom_seg((d / "liver.dcm").string(), DicomSegReadOptions{&ct.geometry, ct.nz(), {}}, &info);
  EXPECT_EQ(info.type, "BINARY");
  EXPECT_EQ(info.frames, 3);
  ASSERT_EQ(info.segments.size(), 1u);
  expect_same_geometry(truth.geometry, ct.geometry);
  EXPECT_EQ(differing_voxels(on_ct, truth), 0);
  std::int64_t liver = 0;
  for (std::int64_t i = 0; i < truth.voxels(); ++i) liver += truth.channel(0)[i] == 1.f;
  EXPECT_GT(liver, 1000);  // the comparison is not between two empty maps
  // Without the CT, the frames' own positions give the same grid.
  const Volume own = read_dicom_seg((d / "liver.dcm").string());
  expect_same_geometry(own.geometry, truth.geometry);
  EXPECT_EQ(differing_voxels(own, truth), 0);
}

TEST(DicomSegData, LiverWrittenFromTheCtMatchesDcmqisFrames) {
  VOXINFER_REQUIRE_SHARED("data/dcmqi_seg/data/segmentations/liver.dcm");
  const fs::path d = test::shared_dir() / "data/dcmqi_seg/data/segmentations";
  const Volume ct = read_volume((d / "ct-3slice").string());
  Volume labels = read_image((d / "liver_seg.nrrd").string());
  labels.geometry = ct.geometry;  // same grid (checked in the test above)
  const fs::path out = fresh_dir("liver") / "liver.dcm";
  DicomSegWriteOptions o;
  o.segments.resize(1);
  o.segments[0].value = 1;
  o.segments[0].name = "Liver";
  o.segments[0].type = DicomSegCode{"SCT", "10200004", "Liver"};
  write_dicom_seg(out.string(), labels, ct.metadata, o);
  const DicomSegReadOptions ro{&ct.geometry, ct.nz(), {}};
  const Volume mine = read_dicom_seg(out.string(), ro);
  const Volume theirs = read_dicom_seg((d / "liver.dcm").string(), ro);
  EXPECT_EQ(differing_voxels(mine, theirs), 0);
  EXPECT_EQ(differing_voxels(mine, labels), 0);
  expect_valid_dicom(out);
  expect_pydicom_agrees(out, labels, {{1, 1}});
}

TEST(DicomSegData, DcmqiPartialOverlapsReportsOverlap) {
  VOXINFER_REQUIRE_SHARED("data/dcmqi_seg/data/segmentations/partial_overlaps.dcm");
  const fs::path d = test::shared_dir() / "data/dcmqi_seg/data/segmentations";
  DicomSegInfo info;
  const Volume v = read_dicom_seg((d / "partial_overlaps.dcm").string(), {}, &info);
  EXPECT_EQ(info.segments.size(), 5u);
  EXPECT_GT(info.overlapping_voxels, 0);
  EXPECT_TRUE(v.metadata.count("warning"));
}

TEST(DicomSegData, PhilipsCtSeriesRoundTrip) {
  VOXINFER_REQUIRE_SHARED("data/dcm_qa_ct/In/Philips_S21570_S2010");
  const Volume ct = read_volume((test::shared_dir() / "data/dcm_qa_ct/In/Philips_S21570_S2010").string());
  ASSERT_GT(ct.nz(), 1);
  // Bone (HU > 300) as 1, soft tissue (0..80 HU) as 2 in the front half of every other slice.
  Volume labels(1, ct.nz(), ct.ny(), ct.nx(), ct.geometry);
  for (std::int64_t z = 0; z < ct.nz(); ++z)
    for (std::int64_t y = 0; y < ct.ny(); ++y)
      for (std::int64_t x = 0; x < ct.nx(); ++x) {
        const float hu = ct.at(0, z, y, x);
        labels.at(0, z, y, x) = hu > 300 ? 1.f : (hu >= 0 && hu <= 80 && y < ct.ny() / 2 && z % 2 == 0 ? 2.f : 0.f);
      }
  DicomSegWriteOptions o;
  o.segments.resize(2);
  o.segments[0].value = 1;
  o.segments[0].name = "bone";
  o.segments[0].type = DicomSegCode{"SCT", "272673000", "Bone"};
  o.segments[1].value = 2;
  o.segments[1].name = "soft tissue";
  const fs::path out = fresh_dir("philips") / "seg.dcm";
  write_dicom_seg(out.string(), labels, ct.metadata, o);
  DicomSegInfo info;
  const Volume back = read_dicom_seg(out.string(), DicomSegReadOptions{&ct.geometry, ct.nz(), {}}, &info);
  EXPECT_EQ(differing_voxels(back, labels), 0);
  EXPECT_EQ(info.frames, expected_frames(labels));
  EXPECT_LT(info.frames, 2 * ct.nz());  // empty frames were dropped
  expect_valid_dicom(out);
  expect_pydicom_agrees(out, labels, {{1, 1}, {2, 2}});
}

// Other writers' SEGs on the small 23x38x3 and 24x38x3 grids (23 x 38 = 874 pixels: 1-bit
// frames that do not fill whole bytes), against their label maps.
TEST(DicomSegData, VendorSegsMatchTheirLabelMaps) {
  VOXINFER_REQUIRE_SHARED("data/dcmqi_seg/data/segmentations/23x38x3/seg/label.seg");
  const fs::path d = test::shared_dir() / "data/dcmqi_seg/data/segmentations";
  const std::pair<const char*, const char*> cases[] = {
      {"23x38x3/seg/label.seg", "23x38x3/nrrd/label.nrrd"},
      {"24x38x3/seg/label.seg", "24x38x3/nrrd/label.nrrd"},
  };
  for (const auto& [seg, nrrd] : cases) {
    SCOPED_TRACE(seg);
    const Volume truth = read_image((d / nrrd).string());
    DicomSegInfo info;
    const Volume v = read_dicom_seg((d / seg).string(), DicomSegReadOptions{&truth.geometry, truth.nz(), {}}, &info);
    std::int64_t labelled = 0;
    for (std::int64_t i = 0; i < truth.voxels(); ++i) labelled += truth.channel(0)[i] != 0;
    EXPECT_GT(labelled, 0);
    EXPECT_EQ(differing_voxels(v, truth), 0) << info.segments.size() << " segments, " << info.frames << " frames";
  }
}

// An Enhanced multi-frame source: each SEG frame references its frame of the one source file.
TEST(DicomSegData, MultiFrameSourceIsReferencedByFrameNumber) {
  VOXINFER_REQUIRE_SHARED("data/dcmqi_seg/data/segmentations/24x38x3/multiframe/mf.dcm");
  const fs::path d = test::shared_dir() / "data/dcmqi_seg/data/segmentations/24x38x3";
  const Volume src = read_volume((d / "multiframe/mf.dcm").string());
  ASSERT_EQ(src.metadata.count("ReferencedFrameNumbers"), 1u);
  Volume labels = read_image((d / "nrrd/label.nrrd").string());
  expect_same_geometry(labels.geometry, src.geometry);
  labels.geometry = src.geometry;
  DicomSegWriteOptions o;
  o.segments.resize(1);
  o.segments[0].value = 1;
  o.segments[0].name = "label";
  const fs::path out = fresh_dir("multiframe") / "seg.dcm";
  write_dicom_seg(out.string(), labels, src.metadata, o);
  DicomSegInfo info;
  const Volume back = read_dicom_seg(out.string(), DicomSegReadOptions{&src.geometry, src.nz(), {}}, &info);
  EXPECT_EQ(differing_voxels(back, labels), 0);
  // The source's frames of slices 0, 1, 2 (read_dicom orders them by position).
  std::vector<int> frame_of_slice;
  std::istringstream numbers(src.metadata.at("ReferencedFrameNumbers"));
  for (std::string n; std::getline(numbers, n, '\\');) frame_of_slice.push_back(std::stoi(n));
  ASSERT_EQ(frame_of_slice.size(), 3u);
  ASSERT_FALSE(info.frame_list.empty());
  for (const DicomSegFrame& f : info.frame_list) {
    EXPECT_EQ(src.metadata.at("SOPInstanceUIDs").rfind(f.referenced_sop_instance_uid + "\\", 0), 0u);  // the one file
    EXPECT_EQ(f.referenced_frame_number, frame_of_slice[static_cast<std::size_t>(f.slice)]);
  }
  expect_valid_dicom(out);
  expect_pydicom_agrees(out, labels, {{1, 1}});
}

}  // namespace
}  // namespace voxinfer
