// Result files of a segmentation (see results.h).
#include "voxinfer/app/results.h"

#include <algorithm>
#include <set>

#include "voxinfer/core/error.h"
#include "voxinfer/io/dicom_rtstruct.h"
#include "voxinfer/io/dicom_seg.h"
#include "voxinfer/pipeline/preview.h"

namespace voxinfer::app {

namespace {

// The label values a result file names: the listed ones and any other value in the map.
std::set<int> label_values(const Volume& labels, const std::vector<LabelSpec>& label_specs) {
  std::set<int> values;
  for (const LabelSpec& l : label_specs) values.insert(l.value);
  const float* p = labels.channel(0);
  float last = 0;
  for (std::int64_t i = 0; i < labels.voxels(); ++i)
    if (p[i] != 0.f && p[i] != last) values.insert(static_cast<int>(last = p[i]));
  values.erase(values.begin(), values.upper_bound(0));
  return values;
}

const LabelSpec* find(const std::vector<LabelSpec>& specs, int v) {
  const auto l = std::find_if(specs.begin(), specs.end(), [v](const LabelSpec& x) { return x.value == v; });
  return l == specs.end() ? nullptr : &*l;
}

}  // namespace

void write_segmentation_dicom_seg(const std::string& path, const Volume& labels_in,
                                  const std::map<std::string, std::string>& source_metadata,
                                  const Geometry& source_geometry, const std::vector<LabelSpec>& label_specs,
                                  const SegAlgorithm& algorithm, bool keep_empty_frames) {
  Volume labels = labels_in;  // shares the voxels; takes the series' exact geometry
  labels.geometry = source_geometry;
  DicomSegWriteOptions o;
  for (int v : label_values(labels, label_specs)) {
    DicomSegSegment s;
    s.value = v;
    const LabelSpec* l = find(label_specs, v);
    s.name = l && !l->name.empty() ? l->name : "label " + std::to_string(v);
    s.color = label_color(v, label_specs);
    if (l && l->code) s.type = DicomSegCode{l->code->scheme, l->code->value, l->code->meaning};
    o.segments.push_back(s);
  }
  if (o.segments.empty()) throw Error(ErrorCode::invalid_input, path + ": the model lists no labels and the label map is empty");
  o.algorithm_name = algorithm.name;
  o.algorithm_version = algorithm.version;
  o.series_description = ("voxinfer " + o.algorithm_name + (algorithm.version.empty() ? "" : " " + algorithm.version)).substr(0, 64);
  o.keep_empty_frames = keep_empty_frames;
  write_dicom_seg(path, labels, source_metadata, o);
}

void write_segmentation_rtstruct(const std::string& path, const Volume& labels_in,
                                 const std::map<std::string, std::string>& source_metadata,
                                 const Geometry& source_geometry, const std::vector<LabelSpec>& label_specs,
                                 const SegAlgorithm& algorithm) {
  Volume labels = labels_in;  // shares the voxels; takes the series' exact geometry
  labels.geometry = source_geometry;
  RtStructWriteOptions o;
  for (int v : label_values(labels, label_specs)) {
    const LabelSpec* l = find(label_specs, v);
    o.rois.push_back({v, l && !l->name.empty() ? l->name : "label " + std::to_string(v), label_color(v, label_specs), "ORGAN"});
  }
  if (o.rois.empty()) throw Error(ErrorCode::invalid_input, path + ": the model lists no labels and the label map is empty");
  o.algorithm_name = algorithm.name;
  o.algorithm_version = algorithm.version;
  o.label = algorithm.name.substr(0, 16);
  o.series_description = ("voxinfer " + algorithm.name + (algorithm.version.empty() ? "" : " " + algorithm.version)).substr(0, 64);
  write_dicom_rtstruct(path, labels, source_metadata, o);
}

}  // namespace voxinfer::app
