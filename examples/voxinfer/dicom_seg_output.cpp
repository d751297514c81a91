// DICOM SEG output of `voxinfer segment` (see dicom_seg_output.h).
#include "dicom_seg_output.h"

#include <set>
#include <sstream>

#include "voxinfer/app/results.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/dicom_seg.h"
#include "voxinfer/pipeline/preview.h"

namespace voxinfer::cli {

DicomSegSource dicom_seg_source(const Volume& input, const std::string& reference_folder, const std::string& series_uid) {
  if (reference_folder.empty()) {
    const auto it = input.metadata.find("source_format");
    if (it == input.metadata.end() || it->second != "DICOM" || !input.metadata.count("SOPInstanceUIDs"))
      throw Error(ErrorCode::invalid_input,
                  "--dicom-seg: a DICOM SEG references the DICOM images it was made from, and the input is not a DICOM "
                  "series (or was resampled); give the series it lies on with --dicom-reference FOLDER");
    return {input.metadata, input.geometry};
  }
  ReadOptions ro;
  ro.series_uid = series_uid;
  const Volume ref = read_dicom(reference_folder, ro);
  const Geometry& a = ref.geometry;
  const Geometry& b = input.geometry;
  const bool same = ref.nx() == input.nx() && ref.ny() == input.ny() && ref.nz() == input.nz() &&
                    (a.origin - b.origin).norm() < 0.01 && (a.spacing - b.spacing).cwiseAbs().maxCoeff() < 1e-4 &&
                    (a.direction - b.direction).cwiseAbs().maxCoeff() < 1e-4;
  if (!same)
    throw Error(ErrorCode::invalid_input, "--dicom-reference " + reference_folder +
                                              ": the series does not have the input's grid (size, origin, spacing and "
                                              "direction must match); a SEG's frames must lie on its images");
  return {ref.metadata, ref.geometry};
}

void write_segment_dicom_seg(const std::string& path, const Volume& labels, const DicomSegSource& source,
                             const PipelineSpec& spec, const std::string& package_name, bool keep_empty) {
  app::write_segmentation_dicom_seg(path, labels, source.metadata, source.geometry, spec.labels,
                                    {spec.name.empty() ? package_name : spec.name, spec.version}, keep_empty);
}

void write_segment_rtstruct(const std::string& path, const Volume& labels, const DicomSegSource& source,
                            const PipelineSpec& spec, const std::string& package_name) {
  app::write_segmentation_rtstruct(path, labels, source.metadata, source.geometry, spec.labels,
                                   {spec.name.empty() ? package_name : spec.name, spec.version});
}

Volume read_dicom_seg_labels(const std::string& path, const std::string& reference, const std::string& series_uid) {
  if (reference.empty()) return read_dicom_seg(path);
  ReadOptions ro;
  ro.series_uid = series_uid;
  const Volume ref = read_dicom(reference, ro);
  DicomSegReadOptions o;
  o.grid = &ref.geometry;
  o.grid_slices = ref.nz();
  Volume v = read_dicom_seg(path, o);
  if (v.nx() != ref.nx() || v.ny() != ref.ny())
    throw Error(ErrorCode::invalid_input, path + ": the SEG's frames are not the size of the reference series' images");
  return v;
}

nlohmann::json dicom_seg_summary(const std::string& path) {
  DicomSegInfo info;
  read_dicom_seg(path, {}, &info);
  auto code = [](const std::optional<DicomSegCode>& c) {
    return c ? nlohmann::json{{"scheme", c->scheme}, {"value", c->value}, {"meaning", c->meaning}} : nlohmann::json();
  };
  nlohmann::json j = {{"type", info.type},
                      {"frames", info.frames},
                      {"referenced_series", info.referenced_series_uid},
                      {"overlapping_voxels", info.overlapping_voxels},
                      {"segments", nlohmann::json::array()}};
  for (const DicomSegSegment& s : info.segments) {
    nlohmann::json e = {{"number", s.value},          {"label", s.name},       {"category", code(s.category)},
                        {"type", code(s.type)},        {"algorithm_type", s.algorithm_type},
                        {"algorithm_name", s.algorithm_name}};
    if (s.label_value) e["label_value"] = s.label_value;
    if (s.color) e["color"] = *s.color;
    j["segments"].push_back(e);
  }
  return j;
}

std::string dicom_seg_summary_text(const nlohmann::json& j) {
  std::ostringstream o;
  o << "DICOM SEG:    " << j["type"].get<std::string>() << ", " << j["frames"].get<std::int64_t>() << " frames, "
    << j["segments"].size() << " segments, referencing series " << j["referenced_series"].get<std::string>() << "\n";
  for (const auto& s : j["segments"]) {
    o << "  " << s["number"].get<int>() << "  \"" << s["label"].get<std::string>() << "\"";
    if (s.contains("label_value")) o << "  label value " << s["label_value"].get<int>();
    if (s["type"].is_object()) o << "  " << s["type"]["scheme"].get<std::string>() << " " << s["type"]["value"].get<std::string>() << " \""
                                 << s["type"]["meaning"].get<std::string>() << "\"";
    o << "  " << s["algorithm_type"].get<std::string>() << "\n";
  }
  return o.str();
}

}  // namespace voxinfer::cli
