// DICOM SEG output of `voxinfer segment`: the package's labels as segments, the source
// series' identifiers from the input (or from --dicom-reference).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer::cli {

// The series a SEG references: its metadata (identifiers, modules, slice positions) and its
// exact DICOM geometry (an input read from NIfTI carries it rounded to float32).
struct DicomSegSource {
  std::map<std::string, std::string> metadata;
  Geometry geometry;
};

// The input itself when it is a DICOM series, else the reference series read from
// `reference_folder`. Throws Error(invalid_input) before any inference runs when neither is
// a DICOM series, or when the reference's grid differs from the input's.
DicomSegSource dicom_seg_source(const Volume& input, const std::string& reference_folder, const std::string& series_uid);

// Writes `labels` (on the input's grid) as a DICOM SEG: one segment per label of the package
// (values found in the map but not listed become "label N"), named after the model.
void write_segment_dicom_seg(const std::string& path, const Volume& labels, const DicomSegSource& source,
                             const PipelineSpec& spec, const std::string& package_name, bool keep_empty);

// The same labels as an RT Structure Set (contours per slice) on the source series.
void write_segment_rtstruct(const std::string& path, const Volume& labels, const DicomSegSource& source,
                            const PipelineSpec& spec, const std::string& package_name);

// Reads a DICOM SEG as a label map: on the grid of the series in `reference` (a DICOM folder
// or file) when given, else on the grid its frames span.
Volume read_dicom_seg_labels(const std::string& path, const std::string& reference, const std::string& series_uid);

// What `voxinfer info` shows of a DICOM SEG: type, frames, referenced series, overlap, and per
// segment its number, label, recorded label value, codes, algorithm and colour.
nlohmann::json dicom_seg_summary(const std::string& path);

// The summary as text lines (`info` without --json).
std::string dicom_seg_summary_text(const nlohmann::json& summary);

}  // namespace voxinfer::cli
