// DICOM Segmentation (SEG) objects through DCMTK's dcmseg: a label map on a DICOM
// series' grid out as a SEG that references the series frame by frame, and SEGs (voxinfer's
// and other writers') back into a label map. See docs/dicom-seg.md for what is written,
// how geometry and references map, and what was validated.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/volume.h"

namespace voxinfer {

// A coded concept (Code Sequence Macro): scheme designator, code value and meaning.
struct DicomSegCode {
  std::string scheme, value, meaning;
};

// One segment of a SEG. Writing: `value` is the label value in the label map; reading:
// the segment number.
struct DicomSegSegment {
  int value = 0;
  std::string name;                          // SegmentLabel
  std::optional<std::array<int, 3>> color;   // sRGB 0..255, written as CIELab
  std::optional<DicomSegCode> category;      // SegmentedPropertyCategoryCodeSequence (default: Tissue)
  std::optional<DicomSegCode> type;          // SegmentedPropertyTypeCodeSequence (default: Tissue)
  std::string algorithm_type;                // reading only: AUTOMATIC, SEMIAUTOMATIC, MANUAL
  std::string algorithm_name;                // reading only
  int label_value = 0;                       // reading only: the label value the SEG records (0: none)
};

// The generic code written when a segment has no category or type: SCT 85756007 "Tissue".
DicomSegCode dicom_seg_tissue_code();

struct DicomSegWriteOptions {
  // The segments to write, numbered 1..N in this order. Label values of the map that are
  // not listed are an error (a label map must not lose a structure silently).
  std::vector<DicomSegSegment> segments;
  std::string algorithm_name = "voxinfer";  // SegmentAlgorithmName and AlgorithmName (model name)
  std::string algorithm_version;            // AlgorithmVersion (model version)
  std::string series_description;          // default: "Segmentation by <algorithm_name>"
  std::string series_number = "1000";
  bool keep_empty_frames = false;           // write a frame for every slice and segment
  // FRACTIONAL (PROBABILITY): `labels` holds one channel per segment with values in
  // [0, 1], stored as 0..255. BINARY otherwise: `labels` is a one-channel label map.
  bool fractional = false;
};

// Writes a SEG for `labels` (a label map, or probabilities when options.fractional), which
// must lie on the grid of the DICOM series described by `source_metadata` (the metadata of
// the Volume read_dicom returned for it: one slice per source image, same rows and columns).
// Frames lie in the source images' planes, at their exact ImagePositionPatient, and
// reference them (SOP Class and Instance UIDs). Patient and study modules and the frame of
// reference are the source's; series and instance UIDs are new. The file appears
// atomically. Throws Error(invalid_input) when the source was not DICOM or the grids differ.
void write_dicom_seg(const std::string& path, const Volume& labels, const std::map<std::string, std::string>& source_metadata,
                     const DicomSegWriteOptions& options);

struct DicomSegReadOptions {
  // Grid to place the frames on (e.g. the referenced series' Volume). Without it the
  // grid spans the frames' positions along the slice normal at the slice spacing the SEG
  // declares (SpacingBetweenSlices, else SliceThickness, else the smallest gap).
  const Geometry* grid = nullptr;
  std::int64_t grid_slices = 0;  // nz of `grid`
  // Label value per segment number (default: the value voxinfer records in the segment's
  // description, "label value N", else the segment number).
  std::map<int, int> segment_values;
};

// One stored frame: its segment, the grid slice it was placed on and the source image it
// references (first Source Image of its Derivation Image Sequence; empty if none).
struct DicomSegFrame {
  int segment = 0;
  std::int64_t slice = 0;
  std::string referenced_sop_instance_uid;
  int referenced_frame_number = 0;  // multi-frame sources (0: none)
};

struct DicomSegInfo {
  std::string type;                 // BINARY or FRACTIONAL
  std::int64_t frames = 0;
  std::vector<DicomSegSegment> segments;  // value = segment number
  std::vector<DicomSegFrame> frame_list;  // in stored order
  std::int64_t overlapping_voxels = 0;    // voxels claimed by more than one segment
  std::string series_description;
  std::string referenced_series_uid;
};

// Reads a SEG into a one-channel label map (segment number, or options.segment_values, per
// voxel; 0 outside every segment). Where segments overlap the higher segment number wins
// and the count is reported in info and metadata["warning"]. FRACTIONAL frames count as
// inside at >= 50%. Throws Error(invalid_input) for files that are not SEGs or frames that
// do not lie in the grid's planes.
Volume read_dicom_seg(const std::string& path, const DicomSegReadOptions& options = {}, DicomSegInfo* info = nullptr);

// True when the file is a DICOM Segmentation Storage object.
bool is_dicom_seg_file(const std::string& path);

}  // namespace voxinfer
