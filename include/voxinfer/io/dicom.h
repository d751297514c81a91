// DICOM input through DCMTK: finds the image series in a folder (recursively) or in
// files, and reads one of them into a float32 Volume with LPS geometry. See docs/io.md
// for the rules (slice order, spacing, rescale, multi-frame, tilt, uneven spacing, 4D).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "voxinfer/core/volume.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {

// One series found by a scan. A SeriesInstanceUID whose images differ in orientation,
// frame of reference or image size is split into several entries with the same UID.
struct DicomSeriesInfo {
  std::string series_uid;
  std::string modality;
  std::string description;
  std::string series_number;
  std::string sop_class_uid;
  std::int64_t files = 0;   // files holding its images
  std::int64_t images = 0;  // 2D images (frames) in all
  std::array<std::int64_t, 3> size{};  // columns, rows, distinct slice positions
  std::int64_t volumes = 1;             // images per slice position (time points, stacks)
  std::array<double, 3> spacing{};      // column and row spacing, distance between slice positions
  std::string orientation;              // orientation code of the voxel grid ("LPS", "RAS"...)
  std::string problem;                  // why it cannot be read as is (tilt, uneven gaps...); empty if fine
};

// True when the file starts with the DICOM Part 10 preamble and "DICM" magic.
bool is_dicom_file(const std::string& path);

// Lists the series under a folder (recursively; files that are not DICOM are skipped)
// or in one file, largest first. Throws voxinfer::Error (invalid_input) when none is found.
std::vector<DicomSeriesInfo> list_dicom_series(const std::string& path);

// Reads one series: options.series_uid, or else the largest series voxinfer can read (not
// gantry-tilted, for example) with more than one slice position (else the largest readable
// series, else the largest series, whose problem is then the error). Multiple images per position (time points,
// echoes, stacks) become channels, in acquisition order. The Volume's metadata keeps the
// study, series, patient and per-slice SOP identifiers (never logged or put into errors).
Volume read_dicom(const std::string& path, const ReadOptions& options = {});

}  // namespace voxinfer
