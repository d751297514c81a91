// RT Structure Sets: contours on the voxel borders give the label map back voxel for voxel
// (even-odd fill), the written file references the series image by image, is valid for
// dciodvfy (when installed), and its ROIs rasterise back with Dice >= 0.98 (here: 1).
#include <gtest/gtest.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmrt/drtstrct.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "io/dicom_seg_test_util.h"
#include "io/dicom_writer.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/dicom_rtstruct.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

// Even-odd fill of closed polygons (patient coordinates) on slice `k` of the grid `g`.
std::vector<std::uint8_t> rasterise(const std::vector<std::vector<std::array<double, 3>>>& polygons, const Geometry& g,
                                    std::int64_t nx, std::int64_t ny, std::int64_t k) {
  // Polygon vertices in continuous voxel coordinates of the slice plane.
  std::vector<std::vector<std::array<double, 2>>> polys;
  for (const auto& poly : polygons) {
    std::vector<std::array<double, 2>> q;
    for (const auto& p : poly) {
      Eigen::Vector3d d(p[0] - g.origin[0], p[1] - g.origin[1], p[2] - g.origin[2]);
      const double x = d.dot(g.direction.col(0)) / g.spacing[0];
      const double y = d.dot(g.direction.col(1)) / g.spacing[1];
      const double z = d.dot(g.direction.col(2)) / g.spacing[2];
      EXPECT_NEAR(z, static_cast<double>(k), 1e-3) << "a contour point off its slice's plane";
      q.push_back({x, y});
    }
    polys.push_back(q);
  }
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(nx * ny), 0);
  for (std::int64_t j = 0; j < ny; ++j)
    for (std::int64_t i = 0; i < nx; ++i) {
      const double px = static_cast<double>(i), py = static_cast<double>(j);
      bool inside = false;
      for (const auto& q : polys)
        for (std::size_t a = 0, b = q.size() - 1; a < q.size(); b = a++) {
          if ((q[a][1] > py) != (q[b][1] > py) &&
              px < (q[b][0] - q[a][0]) * (py - q[a][1]) / (q[b][1] - q[a][1]) + q[a][0])
            inside = !inside;
        }
      mask[static_cast<std::size_t>(i + nx * j)] = inside;
    }
  return mask;
}

Volume oblique_volume(std::int64_t nz, std::int64_t ny, std::int64_t nx) {
  Geometry g;
  g.spacing = Eigen::Vector3d(0.75, 0.5, 2.0);
  g.origin = Eigen::Vector3d(10.5, -20.25, 30);
  const double c = std::cos(0.3), s = std::sin(0.3);
  g.direction << c, 0, -s, s, 0, c, 0, -1, 0;
  return Volume(1, nz, ny, nx, g);
}

TEST(RtStructContours, FollowVoxelBordersSoTheFillGivesTheMaskBack) {
  Volume v = oblique_volume(3, 23, 29);
  std::mt19937 rng(7);
  for (std::int64_t k = 0; k < v.nz(); ++k)
    for (std::int64_t j = 0; j < v.ny(); ++j)
      for (std::int64_t i = 0; i < v.nx(); ++i) {
        float x = 0;
        if (k == 0) x = (i - 14) * (i - 14) + (j - 11) * (j - 11) < 64 && (i - 14) * (i - 14) + (j - 11) * (j - 11) > 9;  // ring
        if (k == 1) x = ((i + j) % 2 == 0) && i < 8 && j < 8;  // checkerboard: diagonal neighbours only
        if (k == 2) x = rng() % 3 == 0;                       // noise touching every border
        v.at(0, k, j, i) = x ? 5.f : 0.f;
      }
  const auto contours = label_contours(v, 5);
  for (std::int64_t k = 0; k < v.nz(); ++k) {
    std::vector<std::vector<std::array<double, 3>>> polys;
    for (const auto& c : contours)
      if (c.slice == k) polys.push_back(c.points);
    const auto mask = rasterise(polys, v.geometry, v.nx(), v.ny(), k);
    std::int64_t wrong = 0;
    for (std::int64_t j = 0; j < v.ny(); ++j)
      for (std::int64_t i = 0; i < v.nx(); ++i) wrong += mask[static_cast<std::size_t>(i + v.nx() * j)] != (v.at(0, k, j, i) == 5.f);
    EXPECT_EQ(wrong, 0) << "slice " << k;
  }
  // The ring is two loops (outer and hole) with corners only.
  int ring = 0;
  for (const auto& c : contours)
    if (c.slice == 0) {
      ++ring;
      EXPECT_GE(c.points.size(), 4u);
    }
  EXPECT_EQ(ring, 2);
}

// A synthetic CT series on disk and its Volume.
Volume write_series(const fs::path& dir, int nz, int rows, int columns) {
  fs::create_directories(dir);
  for (int k = 0; k < nz; ++k) {
    test::SliceSpec spec;
    spec.rows = rows;
    spec.columns = columns;
    spec.position[2] = 2.5 * k;
    spec.instance = k + 1;
    spec.sop_instance = "1.2.826.0.1.3680043.9.9999.4." + std::to_string(k + 1);
    test::write_slice((dir / ("IM" + std::to_string(k))).string(), spec);
  }
  return read_volume(dir.string());
}

TEST(RtStruct, WrittenFileReferencesTheSeriesAndRasterisesBackExactly) {
  const fs::path dir = test::fresh_dir("rtstruct");
  const Volume src = write_series(dir / "series", 6, 20, 24);
  Volume labels(1, src.nz(), src.ny(), src.nx(), src.geometry);
  for (std::int64_t k = 1; k < 5; ++k)
    for (std::int64_t j = 0; j < src.ny(); ++j)
      for (std::int64_t i = 0; i < src.nx(); ++i) {
        if ((i - 8) * (i - 8) + (j - 9) * (j - 9) < 20 + 4 * k) labels.at(0, k, j, i) = 1;
        if (i > 15 && j > 3 && j < 12 + k) labels.at(0, k, j, i) = 2;
      }
  RtStructWriteOptions o;
  o.rois = {{1, "liver", std::array<int, 3>{220, 180, 140}, "ORGAN"}, {2, "spleen", std::array<int, 3>{157, 108, 162}, "ORGAN"}};
  o.algorithm_name = "test model";
  const fs::path out = dir / "rt.dcm";
  write_dicom_rtstruct(out.string(), labels, src.metadata, o);
  test::expect_valid_dicom(out);

  // Read back through DCMTK's RT module.
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile(out.c_str()).good());
  DRTStructureSetIOD rt;
  ASSERT_TRUE(rt.read(*ff.getDataset()).good());
  OFString modality, frame;
  rt.getModality(modality);
  EXPECT_EQ(std::string(modality.c_str()), "RTSTRUCT");
  auto& rois = rt.getStructureSetROISequence();
  ASSERT_EQ(rois.getNumberOfItems(), 2u);
  rois.getItem(0).getReferencedFrameOfReferenceUID(frame);
  EXPECT_EQ(std::string(frame.c_str()), src.metadata.at("FrameOfReferenceUID"));
  OFString name;
  rois.getItem(1).getROIName(name);
  EXPECT_EQ(std::string(name.c_str()), "spleen");
  // Every contour references the image of its slice; fill per ROI and compare.
  std::map<std::string, std::int64_t> slice_of_sop;
  {
    std::string sops = src.metadata.at("SOPInstanceUIDs"), cur;
    std::int64_t k = 0;
    for (char c : sops + "\\")
      if (c == '\\') {
        slice_of_sop[cur] = k++;
        cur.clear();
      } else {
        cur += c;
      }
  }
  auto& roi_contours = rt.getROIContourSequence();
  ASSERT_EQ(roi_contours.getNumberOfItems(), 2u);
  for (std::size_t r = 0; r < 2; ++r) {
    std::map<std::int64_t, std::vector<std::vector<std::array<double, 3>>>> per_slice;
    auto& contours = roi_contours.getItem(r).getContourSequence();
    ASSERT_GT(contours.getNumberOfItems(), 0u);
    for (std::size_t c = 0; c < contours.getNumberOfItems(); ++c) {
      auto& item = contours.getItem(c);
      OFString type, sop;
      item.getContourGeometricType(type);
      EXPECT_EQ(std::string(type.c_str()), "CLOSED_PLANAR");
      item.getContourImageSequence().getItem(0).getReferencedSOPInstanceUID(sop);
      ASSERT_TRUE(slice_of_sop.count(sop.c_str())) << sop;
      OFVector<Float64> data;
      ASSERT_TRUE(item.getContourData(data).good());
      Sint32 n = 0;
      item.getNumberOfContourPoints(n);
      ASSERT_EQ(data.size(), static_cast<std::size_t>(3 * n));
      std::vector<std::array<double, 3>> poly;
      for (std::size_t p = 0; p < data.size(); p += 3) poly.push_back({data[p], data[p + 1], data[p + 2]});
      per_slice[slice_of_sop[sop.c_str()]].push_back(poly);
    }
    std::int64_t both = 0, a = 0, b = 0;
    const float value = static_cast<float>(r + 1);
    for (std::int64_t k = 0; k < src.nz(); ++k) {
      const auto mask = rasterise(per_slice[k], src.geometry, src.nx(), src.ny(), k);
      for (std::int64_t j = 0; j < src.ny(); ++j)
        for (std::int64_t i = 0; i < src.nx(); ++i) {
          const bool m = mask[static_cast<std::size_t>(i + src.nx() * j)], l = labels.at(0, k, j, i) == value;
          both += m && l, a += m, b += l;
        }
    }
    const double dice = 2.0 * static_cast<double>(both) / static_cast<double>(a + b);
    EXPECT_GE(dice, 0.98) << "ROI " << r + 1;
    EXPECT_EQ(dice, 1.0) << "ROI " << r + 1 << ": contours on the voxel borders should give the voxels back exactly";
  }
}

TEST(RtStruct, RefusesNonDicomSourcesAndUnnamedLabels) {
  const fs::path dir = test::fresh_dir("rtstruct_bad");
  const Volume src = write_series(dir / "series", 3, 8, 8);
  Volume labels(1, src.nz(), src.ny(), src.nx(), src.geometry);
  labels.at(0, 1, 2, 2) = 4;
  RtStructWriteOptions o;
  o.rois = {{1, "liver", std::nullopt, "ORGAN"}};
  EXPECT_THROW(write_dicom_rtstruct((dir / "a.dcm").string(), labels, src.metadata, o), Error);  // value 4 has no ROI
  o.rois.push_back({4, "kidney", std::nullopt, "ORGAN"});
  EXPECT_THROW(write_dicom_rtstruct((dir / "b.dcm").string(), labels, {}, o), Error);  // not DICOM
  EXPECT_FALSE(fs::exists(dir / "a.dcm"));
  EXPECT_FALSE(fs::exists(dir / "b.dcm"));
  write_dicom_rtstruct((dir / "c.dcm").string(), labels, src.metadata, o);
  EXPECT_TRUE(fs::exists(dir / "c.dcm"));
}

}  // namespace
}  // namespace voxinfer
