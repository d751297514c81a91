// `voxinfer convert` and `voxinfer info VOLUME|FOLDER`.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "dicom_seg_output.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/dicom_seg.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/output_file.h"
#include "voxinfer/pipeline/conform.h"

namespace voxinfer::cli {
namespace {

void print_warning(const Volume& v) {
  const auto it = v.metadata.find("warning");
  if (it != v.metadata.end()) std::fprintf(stderr, "voxinfer: warning: %s\n", it->second.c_str());
}

bool is_dicom_input(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return true;
  return !is_image_file_name(path);
}

struct Intensity {
  double min = 0, max = 0, mean = 0;
};

Intensity intensity_of(const Volume& v) {
  Intensity r;
  const float* p = v.data.data<float>();
  const std::int64_t n = v.data.numel();
  if (n == 0) return r;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, static_cast<double>(p[i]));
    hi = std::max(hi, static_cast<double>(p[i]));
    sum += p[i];
  }
  return {lo, hi, sum / static_cast<double>(n)};
}

// Adding 0.0 turns -0 (from flipped axes) into 0 for display.
nlohmann::json vec3(const Eigen::Vector3d& v) { return {v[0] + 0.0, v[1] + 0.0, v[2] + 0.0}; }

std::string fmt3(const Eigen::Vector3d& v) {
  std::ostringstream s;
  s << v[0] + 0.0 << " " << v[1] + 0.0 << " " << v[2] + 0.0;
  return s.str();
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert a DICOM series or image file to NIfTI/NRRD/MHA");
  auto input = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto series = std::make_shared<std::string>();
  auto type = std::make_shared<std::string>("auto");
  auto allow_uneven = std::make_shared<bool>(false);
  auto reference = std::make_shared<std::string>();
  auto conform = std::make_shared<bool>(false);
  cmd->add_option("--dicom-reference", *reference, "for a DICOM SEG input: the DICOM series whose grid the label map takes");
  cmd->add_option("INPUT", *input, "DICOM folder or file, or a NIfTI/NRRD/MHA file")->required();
  cmd->add_option("OUTPUT", *output, "output .nii, .nii.gz, .nrrd or .mha")->required();
  cmd->add_option("--series", *series, "DICOM SeriesInstanceUID to convert (default: the largest 3D series)");
  cmd->add_flag("--allow-uneven", *allow_uneven,
                "resample a DICOM series with uneven slice spacing or a missing slice instead of refusing it");
  cmd->add_option("--type", *type,
                  "voxel type written: auto (smallest integer type that holds integer data, else float32), "
                  "float32, int16, uint8 or uint16");
  cmd->add_flag("--conform", *conform,
                "reslice as NiiVue's conform() does (brainchop's input): 256^3 voxels of 1 mm in LIA orientation, "
                "intensities scaled to uint8 (NiiVue's robust maximum for non-uint8 data), trilinear");
  cmd->callback([=] {
    WriteOptions wo;
    wo.pixel_type = parse_pixel_type(*type);
    ReadOptions ro;
    ro.series_uid = *series;
    ro.allow_uneven = *allow_uneven;
    check_outputs({*input}, {*output});
    // A DICOM SEG becomes a label map placed by its frames' positions.
    const Volume v =
        is_dicom_seg_file(*input) ? read_dicom_seg_labels(*input, *reference, *series) : read_volume(*input, ro);
    print_warning(v);
    if (*conform) {
      if (wo.pixel_type == PixelType::automatic) wo.pixel_type = PixelType::uint8;
      write_volume(*output, niivue_conform(v), wo);
      return;
    }
    write_volume(*output, v, wo);
  });
}

void print_volume_info(const std::string& input, const std::string& series_uid, bool json) {
  nlohmann::json out;
  out["input"] = input;
  std::vector<DicomSeriesInfo> series;
  const bool dicom = is_dicom_input(input);
  if (dicom) series = list_dicom_series(input);

  ReadOptions ro;
  ro.series_uid = series_uid;
  Volume v;
  std::string read_error;
  try {
    v = read_volume(input, ro);
  } catch (const Error& e) {
    // A DICOM folder can still be described when its chosen series cannot be read, but not
    // when the series asked for is not in it.
    const bool listed = series_uid.empty() || std::any_of(series.begin(), series.end(), [&](const DicomSeriesInfo& s) {
                          return s.series_uid == series_uid;
                        });
    if (!dicom || e.code() != ErrorCode::invalid_input || !listed) throw;
    read_error = e.what();
  }

  if (v.data.defined()) {
    const Geometry& g = v.geometry;
    const Intensity in = intensity_of(v);
    const auto fmt_it = v.metadata.find("source_format");
    out["format"] = fmt_it != v.metadata.end() ? fmt_it->second : "";
    out["size"] = {v.nx(), v.ny(), v.nz()};
    out["channels"] = v.channels();
    out["spacing"] = vec3(g.spacing);
    out["origin"] = vec3(g.origin);
    out["direction"] = nlohmann::json::array();
    for (int r = 0; r < 3; ++r)
      out["direction"].push_back({g.direction(r, 0) + 0.0, g.direction(r, 1) + 0.0, g.direction(r, 2) + 0.0});
    out["orientation"] = g.orientation_code();
    out["oblique"] = g.is_oblique();
    out["intensity"] = {{"min", in.min}, {"max", in.max}, {"mean", in.mean}};
    if (v.metadata.count("SeriesInstanceUID")) out["selected_series"] = v.metadata.at("SeriesInstanceUID");
    if (v.metadata.count("Modality")) out["modality"] = v.metadata.at("Modality");
    if (v.metadata.count("warning")) out["warning"] = v.metadata.at("warning");
  } else {
    out["error"] = read_error;
  }
  if (dicom) {
    out["series"] = nlohmann::json::array();
    for (const DicomSeriesInfo& s : series) {
      nlohmann::json j = {{"series_uid", s.series_uid},
                          {"modality", s.modality},
                          {"description", s.description},
                          {"series_number", s.series_number},
                          {"files", s.files},
                          {"images", s.images},
                          {"size", s.size},
                          {"volumes", s.volumes},
                          {"spacing", s.spacing},
                          {"orientation", s.orientation}};
      if (!s.problem.empty()) j["problem"] = s.problem;
      out["series"].push_back(j);
    }
  }

  if (is_dicom_seg_file(input)) out["dicom_seg"] = dicom_seg_summary(input);
  if (json) {
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << "input:        " << input << "\n";
  if (v.data.defined()) {
    const Geometry& g = v.geometry;
    std::cout << "format:       " << out["format"].get<std::string>() << "\n"
              << "size:         " << v.nx() << " x " << v.ny() << " x " << v.nz() << " (x, y, z)"
              << (v.channels() > 1 ? ", " + std::to_string(v.channels()) + " channels" : std::string()) << "\n"
              << "spacing:      " << fmt3(g.spacing) << " mm\n"
              << "origin:       " << fmt3(g.origin) << " mm (LPS)\n"
              << "direction:    " << fmt3(g.direction.col(0)) << " | " << fmt3(g.direction.col(1)) << " | "
              << fmt3(g.direction.col(2)) << " (columns, LPS)\n"
              << "orientation:  " << g.orientation_code() << (g.is_oblique() ? " (oblique)" : "") << "\n"
              << "intensity:    min " << out["intensity"]["min"].get<double>() << ", max "
              << out["intensity"]["max"].get<double>() << ", mean " << out["intensity"]["mean"].get<double>() << "\n";
    if (out.contains("selected_series"))
      std::cout << "series read:  " << out["selected_series"].get<std::string>() << "\n";
    if (out.contains("warning")) std::cout << "warning:      " << out["warning"].get<std::string>() << "\n";
  } else {
    std::cout << "cannot read:  " << read_error << "\n";
  }
  if (dicom) {
    std::cout << "series:       " << series.size() << "\n";
    for (const DicomSeriesInfo& s : series) {
      std::cout << "  " << s.series_uid << "  " << (s.modality.empty() ? "?" : s.modality) << "  #" << s.series_number
                << "  \"" << s.description << "\"  " << s.size[0] << "x" << s.size[1] << "x" << s.size[2];
      if (s.volumes > 1) std::cout << "x" << s.volumes;
      std::cout << "  spacing " << s.spacing[0] << " " << s.spacing[1] << " " << s.spacing[2] << "  " << s.orientation;
      if (!s.problem.empty()) std::cout << "  [" << s.problem << "]";
      std::cout << "\n";
    }
  }
  if (out.contains("dicom_seg")) std::cout << dicom_seg_summary_text(out["dicom_seg"]);
}

}  // namespace voxinfer::cli
