// Result files of a segmentation that C++ callers, the command line and the DICOM node share.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer::app {

// What a DICOM SEG says about the model that made it.
struct SegAlgorithm {
  std::string name;     // e.g. the package's name
  std::string version;  // may be empty
};

// Writes `labels` (on the source series' grid) as a DICOM SEG referencing the series described
// by `source_metadata` (as read_dicom() returns it) with its exact `source_geometry`: one
// segment per listed label and per value found in the map but not listed ("label N"), named
// and coloured from `label_specs`. Throws Error(invalid_input) when there is no segment at all.
void write_segmentation_dicom_seg(const std::string& path, const Volume& labels,
                                  const std::map<std::string, std::string>& source_metadata,
                                  const Geometry& source_geometry, const std::vector<LabelSpec>& label_specs,
                                  const SegAlgorithm& algorithm, bool keep_empty_frames);

// The same label map as an RT Structure Set (one ROI per listed label and per value found but
// not listed, contours on the voxel borders), for radiotherapy systems.
void write_segmentation_rtstruct(const std::string& path, const Volume& labels,
                                 const std::map<std::string, std::string>& source_metadata,
                                 const Geometry& source_geometry, const std::vector<LabelSpec>& label_specs,
                                 const SegAlgorithm& algorithm);

}  // namespace voxinfer::app
