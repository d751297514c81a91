// `voxinfer segment --model <nnU-Net results folder>`: nnU-Net's own predictor semantics.
#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "commands.h"
#include "dicom_seg_output.h"
#include "segment_nnunet.h"
#include "voxinfer/app/nnunet.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/png.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/preview.h"
#include "voxinfer/version.h"

namespace voxinfer::cli {
namespace {

namespace fs = std::filesystem;

std::int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;
}

std::vector<int> parse_folds(const std::string& s) {
  std::vector<int> folds;
  if (s.empty()) return folds;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      folds.push_back(-1);
      continue;
    }
    try {
      std::size_t used = 0;
      const int f = std::stoi(item, &used);
      if (used != item.size() || f < 0 || f > 999) throw std::invalid_argument(item);
      folds.push_back(f);
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_input, "--folds: '" + item + "' is not a fold number (give e.g. 0,1,2 or all)");
    }
  }
  return folds;
}

// One file per channel: given CASE_0000.ext alone for a multi-channel model, CASE_0001.ext ...
// are taken from the same folder, as nnU-Net names them.
std::vector<std::string> channel_files(const std::vector<std::string>& inputs, std::size_t channels) {
  if (inputs.size() != 1 || channels <= 1) return inputs;
  const std::string name = fs::path(inputs[0]).filename().string();
  // CASE_0000.ext: the other channels are CASE_0001.ext ... beside it.
  const auto at = name.find("_0000.");
  if (at == std::string::npos || at == 0) return inputs;
  const std::string stem = name.substr(0, at), ext = name.substr(at + 5);
  std::vector<std::string> out{inputs[0]};
  for (std::size_t c = 1; c < channels; ++c) {
    char idx[32];
    std::snprintf(idx, sizeof idx, "_%04zu", c);
    const fs::path p = fs::path(inputs[0]).parent_path() / (stem + idx + ext);
    std::error_code ec;
    if (!fs::exists(p, ec))
      throw Error(ErrorCode::invalid_input,
                  p.string() + ": missing (the model takes " + std::to_string(channels) + " channels, one file each)");
    out.push_back(p.string());
  }
  return out;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(a, ec) && fs::exists(b, ec) && fs::equivalent(a, b, ec);
}

}  // namespace

void run_nnunet_segment(const NnunetSegmentArgs& a, const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  nnunet::LoadOptions lo;
  lo.folds = parse_folds(a.folds);
  if (a.checkpoint == "final")
    lo.checkpoint = "checkpoint_final.pth";
  else if (a.checkpoint == "best")
    lo.checkpoint = "checkpoint_best.pth";
  else
    throw Error(ErrorCode::invalid_input, "--checkpoint must be 'final' or 'best'");
  lo.threads = a.threads;
  if (!(a.step_size > 0 && a.step_size <= 1)) throw Error(ErrorCode::invalid_input, "--step-size must be in (0, 1]");
  for (const auto& in : a.inputs)
    for (const auto& out : {a.output, a.save_probabilities, a.stats, a.dicom_seg, a.dicom_rtstruct})
      if (!out.empty() && same_file(in, out))
        throw Error(ErrorCode::invalid_input, out + ": is the input; refusing to overwrite it");
  nnunet::Model model = app::open_nnunet_model(a.model, lo);

  const auto files = channel_files(a.inputs, model.dataset().channel_names.size());
  std::vector<Volume> channels;
  ReadOptions ro;
  ro.series_uid = a.series;
  for (const auto& f : files) channels.push_back(read_volume(f, ro));
  // Checked before inference: a SEG needs the source series' identifiers.
  const auto seg_source =
      a.dicom_seg.empty() && a.dicom_rtstruct.empty() ? DicomSegSource{}
                                                      : dicom_seg_source(channels[0], a.dicom_reference, a.series);

  nnunet::PredictOptions po;
  po.step_size = a.step_size;
  po.mirroring = !a.disable_tta;
  po.probabilities = !a.save_probabilities.empty();
  po.postprocess = !a.no_postprocess;
  po.progress = progress;
  nnunet::Prediction r = nnunet::predict(model, channels, po);

  float max_label = 0;
  for (std::int64_t i = 0; i < r.labels.voxels(); ++i) max_label = std::max(max_label, r.labels.channel(0)[i]);
  WriteOptions wo;
  wo.pixel_type = max_label > 255 ? PixelType::uint16 : PixelType::uint8;
  write_image(a.output, r.labels, wo);
  std::fprintf(stderr, "label map  %s (%lldx%lldx%lld, %s)\n", a.output.c_str(), static_cast<long long>(r.labels.nx()),
               static_cast<long long>(r.labels.ny()), static_cast<long long>(r.labels.nz()),
               pixel_type_name(wo.pixel_type));
  if (!a.save_probabilities.empty()) {
    WriteOptions pw;
    pw.pixel_type = PixelType::float32;
    write_image(a.save_probabilities, r.probabilities, pw);
    std::fprintf(stderr, "probabilities %s (%lld channels, float32)\n", a.save_probabilities.c_str(),
                 static_cast<long long>(r.probabilities.channels()));
  }
  // Label names from dataset.json (region-based: one per head, in regions_class_order).
  std::vector<LabelSpec> names;
  if (model.dataset().has_regions) {
    for (std::size_t k = 0; k < model.dataset().regions_class_order.size(); ++k)
      names.push_back(LabelSpec{model.dataset().regions_class_order[k], model.dataset().head_names()[k], std::nullopt,
                                std::nullopt});
  } else {
    for (const auto& l : model.dataset().labels)
      if (l.values[0] != 0) names.push_back(LabelSpec{l.values[0], l.name, std::nullopt, std::nullopt});
  }
  if (!a.dicom_seg.empty() || !a.dicom_rtstruct.empty()) {
    fs::path folder(a.model);
    if (folder.filename().empty()) folder = folder.parent_path();
    PipelineSpec spec;
    spec.name = folder.filename().string();
    spec.labels = names;
    const std::string package = folder.parent_path().filename().string() + " " + model.configuration().name;
    if (!a.dicom_seg.empty()) {
      write_segment_dicom_seg(a.dicom_seg, r.labels, seg_source, spec, package, a.dicom_seg_keep_empty);
      std::fprintf(stderr, "DICOM SEG  %s\n", a.dicom_seg.c_str());
    }
    if (!a.dicom_rtstruct.empty()) {
      write_segment_rtstruct(a.dicom_rtstruct, r.labels, seg_source, spec, package);
      std::fprintf(stderr, "RTSTRUCT   %s\n", a.dicom_rtstruct.c_str());
    }
  }
  const auto stats = label_statistics(r.labels, channels[0], names);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.stats.empty()) {
    nlohmann::json j = nlohmann::json::parse(to_json(stats));
    std::vector<int> folds(model.folds().begin(), model.folds().end());
    j["model"] = {{"kind", "nnU-Net v2"},
                  {"folder", fs::path(a.model).filename().string()},
                  {"configuration", model.configuration().name},
                  {"trainer", model.trainer_name()},
                  {"folds", folds},
                  {"checkpoint", lo.checkpoint}};
    j["voxinfer"] = VOXINFER_VERSION_STRING;
    j["input"] = nlohmann::json::array();
    for (std::size_t c = 0; c < files.size(); ++c) j["input"].push_back(fs::path(files[c]).filename().string());
    j["run"] = {{"tiles", r.tiles},
                {"step_size", a.step_size},
                {"mirroring", !a.disable_tta},
                {"network_grid", {r.network_grid[0], r.network_grid[1], r.network_grid[2]}},
                {"peak_rss_bytes", peak_rss_bytes()},
                {"seconds",
                 {{"preprocess", r.seconds_preprocess},
                  {"inference", r.seconds_inference},
                  {"export", r.seconds_export},
                  {"total", total}}},
                {"threads", num_threads()}};
    write_text_atomic(a.stats, j.dump(2) + "\n");
    std::fprintf(stderr, "statistics %s\n", a.stats.c_str());
  }
  if (!a.preview.empty()) {
    const RgbImage img = render_preview(channels[0], r.labels, names);
    write_png(a.preview, img.width, img.height, 3, img.rgb.data());
    std::fprintf(stderr, "preview    %s\n", a.preview.c_str());
  }
  for (const auto& s : stats)
    std::printf("%3d %-24s %10lld voxels %10.2f mL\n", s.value, s.name.c_str(), static_cast<long long>(s.voxels),
                s.volume_ml);
  std::fflush(stdout);
  std::fprintf(
      stderr,
      "done in %.2f s (preprocess %.2f s, inference %.2f s on %lld tiles, export %.2f s), peak memory %.0f MiB\n",
      total, r.seconds_preprocess, r.seconds_inference, static_cast<long long>(r.tiles), r.seconds_export,
      static_cast<double>(peak_rss_bytes()) / (1 << 20));
}

void run_nnunet_composite(const NnunetSegmentArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& in : a.inputs)
    for (const auto& out : {a.output, a.stats, a.dicom_seg, a.dicom_rtstruct})
      if (!out.empty() && same_file(in, out))
        throw Error(ErrorCode::invalid_input, out + ": is the input; refusing to overwrite it");
  const nnunet::CompositeSpec spec = nnunet::load_composite(a.model);
  std::vector<Volume> channels;
  ReadOptions ro;
  ro.series_uid = a.series;
  for (const auto& f : a.inputs) channels.push_back(read_volume(f, ro));
  const auto seg_source =
      a.dicom_seg.empty() && a.dicom_rtstruct.empty() ? DicomSegSource{}
                                                      : dicom_seg_source(channels[0], a.dicom_reference, a.series);
  const auto r = nnunet::run_composite(a.model, spec, channels, app::read_nnunet_checkpoint, a.threads,
                                       [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); });
  float max_label = 0;
  for (std::int64_t i = 0; i < r.labels.voxels(); ++i) max_label = std::max(max_label, r.labels.channel(0)[i]);
  WriteOptions wo;
  wo.pixel_type = max_label > 255 ? PixelType::uint16 : PixelType::uint8;
  write_image(a.output, r.labels, wo);
  std::vector<LabelSpec> names;
  for (const auto& [v, n] : spec.labels) names.push_back(LabelSpec{v, n, std::nullopt, std::nullopt});
  if (!a.dicom_seg.empty() || !a.dicom_rtstruct.empty()) {
    PipelineSpec ps;
    ps.name = spec.name;
    ps.version = spec.version;
    ps.labels = names;
    if (!a.dicom_seg.empty()) {
      write_segment_dicom_seg(a.dicom_seg, r.labels, seg_source, ps, fs::path(a.model).filename().string(),
                              a.dicom_seg_keep_empty);
      std::fprintf(stderr, "DICOM SEG  %s\n", a.dicom_seg.c_str());
    }
    if (!a.dicom_rtstruct.empty()) {
      write_segment_rtstruct(a.dicom_rtstruct, r.labels, seg_source, ps, fs::path(a.model).filename().string());
      std::fprintf(stderr, "RTSTRUCT   %s\n", a.dicom_rtstruct.c_str());
    }
  }
  const auto stats = label_statistics(r.labels, channels[0], names);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.stats.empty()) {
    nlohmann::json j = nlohmann::json::parse(to_json(stats));
    j["model"] = {{"kind", "nnU-Net composite"},
                  {"package", fs::path(a.model).filename().string()},
                  {"name", spec.name},
                  {"version", spec.version}};
    j["voxinfer"] = VOXINFER_VERSION_STRING;
    if (r.crop_box) j["run"]["crop_box_xyz"] = *r.crop_box;
    j["run"]["tiles"] = r.tiles;
    j["run"]["seconds"] = total;
    j["run"]["peak_rss_bytes"] = peak_rss_bytes();
    write_text_atomic(a.stats, j.dump(2) + "\n");
  }
  if (!a.preview.empty()) {
    const RgbImage img = render_preview(channels[0], r.labels, names);
    write_png(a.preview, img.width, img.height, 3, img.rgb.data());
  }
  for (const auto& s : stats)
    std::printf("%3d %-24s %10lld voxels %10.2f mL\n", s.value, s.name.c_str(), static_cast<long long>(s.voxels),
                s.volume_ml);
  std::fflush(stdout);
  std::fprintf(stderr, "done in %.2f s (%lld tiles), peak memory %.0f MiB\n", total, static_cast<long long>(r.tiles),
               static_cast<double>(peak_rss_bytes()) / (1 << 20));
}

}  // namespace voxinfer::cli
