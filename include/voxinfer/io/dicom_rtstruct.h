// DICOM RT Structure Set (RTSTRUCT) output for radiotherapy systems: a label map on a DICOM
// series' grid as one ROI per label, with closed planar contours per slice that follow the
// voxel borders exactly (filled with the even-odd rule they give back the label map voxel
// for voxel). See docs/dicom-seg.md ("RT Structure Sets").
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/volume.h"

namespace voxinfer {

struct RtStructRoi {
  int value = 0;                        // label value in the map
  std::string name;                     // ROIName
  std::optional<std::array<int, 3>> color;  // ROIDisplayColor
  std::string interpreted_type = "ORGAN";   // RTROIInterpretedType
};

struct RtStructWriteOptions {
  std::vector<RtStructRoi> rois;  // one ROI per entry, numbered 1..N; unlisted non-zero values are an error
  std::string label = "voxinfer";          // StructureSetLabel (cut to 16 characters)
  std::string series_description;          // default: "RTSTRUCT by <algorithm_name>"
  std::string series_number = "1001";
  std::string algorithm_name = "voxinfer";  // ROIGenerationAlgorithm AUTOMATIC, ROIGenerationDescription
  std::string algorithm_version;
};

// One closed contour: points (x, y, z) in patient coordinates (LPS, mm).
struct RtContour {
  std::int64_t slice = 0;
  std::vector<std::array<double, 3>> points;
};

// The contours of the voxels equal to `value` in each slice of `labels`, on the voxel borders
// (outer boundaries counter-clockwise in the image plane, holes clockwise), collinear points
// removed.
std::vector<RtContour> label_contours(const Volume& labels, int value);

// Writes `labels` (a one-channel label map on the grid of the DICOM series described by
// `source_metadata`, as read_dicom returns it) as an RTSTRUCT referencing that series image by
// image. Patient and study modules and the frame of reference are the source's; the series
// and instance are new. Atomic. Throws Error(invalid_input) when the source was not DICOM or
// the label map holds a value no ROI names.
void write_dicom_rtstruct(const std::string& path, const Volume& labels, const std::map<std::string, std::string>& source_metadata,
                          const RtStructWriteOptions& options);

}  // namespace voxinfer
