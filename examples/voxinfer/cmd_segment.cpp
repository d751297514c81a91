// `voxinfer segment`: a study in, a label map (and statistics, preview) out, on the
// input's exact grid.
#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include "commands.h"
#include "dicom_seg_output.h"
#include "segment_nnunet.h"
#include "voxinfer/pipeline/nnunet.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/output_file.h"
#include "voxinfer/io/png.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/pipeline/preview.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer::cli {
namespace {

namespace fs = std::filesystem;

std::int64_t peak_rss() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;
}

// A one-line progress bar with tiles done and ETA, drawn only on a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(const char* what) : what_(what), enabled_(::isatty(STDERR_FILENO) != 0), t0_(std::chrono::steady_clock::now()) {}
  void update(std::int64_t done, std::int64_t total) {
    if (!enabled_ || total <= 0) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double eta = done > 0 ? s / static_cast<double>(done) * static_cast<double>(total - done) : 0;
    const int width = 30, fill = static_cast<int>(width * done / total);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld tiles, %.0f s, ETA %.0f s ", what_, fill, "##############################", width - fill, "",
                 static_cast<long long>(done), static_cast<long long>(total), s, eta);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  const char* what_;
  bool enabled_;
  std::chrono::steady_clock::time_point t0_;
};


// One 0/1 channel per spec label: the overlapping masks the post-processing kept, else the
// label map split by value.
Volume label_masks(const SegmentationResult& r, const Volume& labels, const PipelineSpec& spec) {
  if (r.masks.data.defined() && r.masks.channels() == static_cast<std::int64_t>(spec.labels.size())) return r.masks;
  Volume m(static_cast<std::int64_t>(spec.labels.size()), labels.nz(), labels.ny(), labels.nx(), labels.geometry);
  for (std::size_t k = 0; k < spec.labels.size(); ++k) {
    const auto value = static_cast<float>(spec.labels[k].value);
    float* dst = m.channel(static_cast<std::int64_t>(k));
    const float* src = labels.channel(0);
    for (std::int64_t i = 0; i < labels.voxels(); ++i) dst[i] = src[i] == value ? 1.f : 0.f;
  }
  return m;
}

// A label name as a file name: letters, digits, '-' and '_' kept, anything else '_'.
std::string file_safe(const std::string& name) {
  std::string out;
  for (const char c : name) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out.empty() ? "label" : out;
}

// The bundle's channel count (metadata.json's network_data_format) against the inputs given.
void check_bundle_channels(const monai::Bundle& b, const std::vector<Volume>& inputs) {
  std::int64_t channels = 0;
  for (const auto& v : inputs) channels += v.channels();
  const std::int64_t want = b.spec.input.channels;
  if (channels == want) return;
  const auto& names = b.channel_keys.empty() ? b.channel_names : b.channel_keys;
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  throw Error(ErrorCode::invalid_input,
              "the MONAI bundle '" + (b.name.empty() ? b.dir.filename().string() : b.name) + "' takes " + std::to_string(want) +
                  " input channel(s) (metadata.json network_data_format" + (list.empty() ? "" : ": " + list) + "), " +
                  std::to_string(inputs.size()) + " input(s) give " + std::to_string(channels) +
                  (want > 1 ? "; give one -i per channel, in that order" : ""));
}

}  // namespace

void add_segment_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("segment", "Segment a study with a model package; write the label map in the input's geometry");
  struct Args {
    std::string model, output, series, stats, preview;
    std::vector<std::string> inputs;
    std::string folds, checkpoint = "final", save_probabilities;
    double step_size = 0.5;
    bool disable_tta = false, no_postprocess = false;
    int threads = 0;
    double overlap = -1;
    bool tta = false, no_tta = false, allow_uneven = false;
    std::string dicom_seg, dicom_reference, dicom_rtstruct;
    bool dicom_seg_keep_empty = false;
    std::string network;
    std::string label_masks, label_masks_dir;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model,-m", a->model,
                  "the model: a package folder with pipeline.json, an nnU-Net v2 results folder (<trainer>__<plans>__<configuration> "
                  "with plans.json, dataset.json, fold_N/), a composite of nnU-Net folders (nnunet_composite.json) or a MONAI "
                  "bundle (configs/inference.json)")
      ->required();
  cmd->add_option("--input,-i", a->inputs, "DICOM folder or file, or a NIfTI/NRRD/MHA image; nnU-Net models with several channels: "
                                           "one -i per channel in order, or CASE_0000.nii.gz alone to take CASE_0001... beside it; MONAI bundles: "
                                           "one -i per channel, in the order of the bundle's datalist (voxinfer info BUNDLE lists them)")->required();
  cmd->add_option("--output,-o", a->output, "label map to write (.nii.gz, .nii, .nrrd, .mha)")->required();
  cmd->add_option("--series", a->series, "DICOM SeriesInstanceUID to segment (default: the largest 3D series)");
  cmd->add_option("--stats", a->stats, "write per-label statistics (voxels, mL, intensity) as JSON");
  cmd->add_option("--preview", a->preview, "write a PNG with axial, coronal and sagittal slices and a legend");
  cmd->add_option("--threads", a->threads, "threads (default: VOXINFER_NUM_THREADS or all cores)");
  cmd->add_option("--overlap", a->overlap, "sliding-window overlap in [0, 1) (default: the package's)");
  cmd->add_flag("--tta", a->tta, "mirror test-time augmentation (the package's mirror axes, or all three)");
  cmd->add_flag("--no-tta", a->no_tta, "no test-time augmentation");
  cmd->add_option("--dicom-seg", a->dicom_seg, "also write the labels as a DICOM SEG referencing the input series");
  cmd->add_option("--dicom-reference", a->dicom_reference, "DICOM series folder the SEG references when the input is not DICOM");
  cmd->add_option("--dicom-rtstruct", a->dicom_rtstruct,
                  "also write the labels as a DICOM RT Structure Set (closed contours per slice on the voxel borders) "
                  "referencing the input series, for radiotherapy systems");
  cmd->add_flag("--dicom-seg-keep-empty", a->dicom_seg_keep_empty, "write empty SEG frames too (default: only frames with a segment)");
  cmd->add_option("--network", a->network, "MONAI bundles: the ONNX network to run (default: the bundle's models/model.onnx)");
  cmd->add_option("--label-masks", a->label_masks,
                  "also write one 0/1 volume per label as a 4D NIfTI (uint8, labels in `voxinfer info` order); "
                  "overlapping labels (sigmoid outputs, e.g. BraTS's TC/WT/ET) stay overlapping");
  cmd->add_option("--label-masks-dir", a->label_masks_dir,
                  "also write one 0/1 file per label into this folder: <value>_<name>.nii.gz (overlaps kept)");
  cmd->add_flag("--allow-uneven", a->allow_uneven, "resample DICOM series with uneven slice spacing instead of refusing them");
  auto* nn = "nnU-Net folders";
  cmd->add_option("--folds,-f", a->folds, "folds to ensemble, e.g. 0,1 or all (default: every fold_N present)")->group(nn);
  cmd->add_option("--step-size", a->step_size, "sliding-window step as a fraction of the patch, in (0, 1] (default 0.5)")->group(nn);
  cmd->add_flag("--disable-tta", a->disable_tta, "no mirroring (default: the trainer's mirror axes, as nnU-Net)")->group(nn);
  cmd->add_option("--checkpoint", a->checkpoint, "final (checkpoint_final.pth, default) or best (checkpoint_best.pth)")->group(nn);
  cmd->add_option("--save-probabilities", a->save_probabilities,
                  "also write the class probabilities as a 4D float32 NIfTI (one volume per class) on the input grid "
                  "(nnU-Net folders and MONAI bundles: the activated network outputs, as MONAI's Invertd gives them)");
  cmd->add_flag("--no-postprocess", a->no_postprocess, "skip the folder's postprocessing.json")->group(nn);
  cmd->footer("Example: voxinfer segment --model examples/models/meshnet_gwm --input examples/data/t1_crop.nii.gz \\\n"
              "           --output labels.nii.gz --stats stats.json --preview preview.png\n"
              "nnU-Net: voxinfer segment --model nnUNet_results/Dataset311_VoxAbdCT/nnUNetTrainer__nnUNetPlans__3d_fullres \\\n"
              "           -i case_0000.nii.gz -o case.nii.gz --folds 0,1 --step-size 0.5 [--disable-tta]");
  cmd->callback([a] {
    const bool composite = nnunet::is_composite_folder(a->model);
    if (composite || nnunet::is_model_folder(a->model)) {
      if (a->tta || a->no_tta || a->overlap != -1)
        throw Error(ErrorCode::invalid_input, "nnU-Net folders take --disable-tta and --step-size (nnU-Net's options), not --tta/--no-tta/--overlap");
      if (!is_image_file_name(a->output)) throw Error(ErrorCode::invalid_input, a->output + ": the label map must end in .nii.gz, .nii, .nrrd or .mha");
      if (!a->save_probabilities.empty() && !is_image_file_name(a->save_probabilities))
        throw Error(ErrorCode::invalid_input, a->save_probabilities + ": probabilities are written as .nii.gz, .nii, .nrrd or .mha");
      if (a->threads < 0) throw Error(ErrorCode::invalid_input, "--threads must be >= 0");
      if (a->threads) set_num_threads(a->threads);
      NnunetSegmentArgs n;
      n.model = a->model;
      n.inputs = a->inputs;
      n.output = a->output;
      n.series = a->series;
      n.stats = a->stats;
      n.preview = a->preview;
      n.save_probabilities = a->save_probabilities;
      n.folds = a->folds;
      n.checkpoint = a->checkpoint;
      n.step_size = a->step_size;
      n.disable_tta = a->disable_tta;
      n.no_postprocess = a->no_postprocess;
      n.threads = a->threads;
      n.dicom_seg = a->dicom_seg;
      n.dicom_reference = a->dicom_reference;
      n.dicom_seg_keep_empty = a->dicom_seg_keep_empty;
      n.dicom_rtstruct = a->dicom_rtstruct;
      if (composite) {
        if (!a->save_probabilities.empty() || !a->folds.empty())
          throw Error(ErrorCode::invalid_input, "a composite package sets folds per model and writes no probabilities");
        run_nnunet_composite(n);
        return;
      }
      auto bar = std::make_shared<ProgressBar>("segment");
      run_nnunet_segment(n, [bar](std::int64_t done, std::int64_t total) { bar->update(done, total); });
      return;
    }
    const bool bundle = monai::is_bundle(a->model);  // a MONAI bundle, translated into a pipeline spec
    if (a->inputs.size() != 1 && !bundle) throw Error(ErrorCode::invalid_input, "this model package takes one --input");
    if (!a->folds.empty() || a->disable_tta || a->step_size != 0.5 || a->checkpoint != "final" || a->no_postprocess)
      throw Error(ErrorCode::invalid_input, "--folds, --step-size, --disable-tta, --checkpoint and --no-postprocess are for nnU-Net folders");
    if (!a->save_probabilities.empty() && !bundle)
      throw Error(ErrorCode::invalid_input, "--save-probabilities is for nnU-Net folders and MONAI bundles");
    for (const auto* f : {&a->save_probabilities, &a->label_masks})
      if (!f->empty() && !is_image_file_name(*f))
        throw Error(ErrorCode::invalid_input, *f + ": must end in .nii.gz, .nii, .nrrd or .mha");
    const std::string input_path = a->inputs[0];
    for (const auto& in : a->inputs)
      check_outputs({in}, {a->output, a->stats, a->preview, a->dicom_seg, a->dicom_rtstruct, a->save_probabilities, a->label_masks});
    if (a->tta && a->no_tta) throw Error(ErrorCode::invalid_input, "give --tta or --no-tta, not both");
    if (a->threads < 0) throw Error(ErrorCode::invalid_input, "--threads must be >= 0");
    if (!is_image_file_name(a->output)) throw Error(ErrorCode::invalid_input, a->output + ": the label map must end in .nii.gz, .nii, .nrrd or .mha");
    if (a->threads) set_num_threads(a->threads);
    const auto t0 = std::chrono::steady_clock::now();
    SegmentationOptions opt;
    opt.threads = a->threads;
    opt.probabilities = !a->save_probabilities.empty();
    if (a->overlap != -1) opt.overlap = a->overlap;  // the pipeline checks the range
    if (a->tta) opt.tta = true;
    if (a->no_tta) opt.tta = false;
    auto bar = std::make_shared<ProgressBar>("segment");
    opt.progress = [bar](std::int64_t done, std::int64_t total) { bar->update(done, total); };
    if (!bundle && !a->network.empty()) throw Error(ErrorCode::invalid_input, "--network is for MONAI bundles");
    monai::BundleOptions bo;
    if (!a->network.empty()) bo.network = a->network;
    std::optional<monai::Bundle> mb;
    if (bundle) mb = monai::load_bundle(a->model, bo);
    SegmentationPipeline pipeline = bundle ? SegmentationPipeline(a->model, mb->spec, mb->network, opt) : SegmentationPipeline(a->model, opt);
    ReadOptions ro;
    ro.series_uid = a->series;
    ro.allow_uneven = a->allow_uneven;
    std::vector<Volume> inputs;
    for (const auto& in : a->inputs) inputs.push_back(read_volume(in, ro));
    if (bundle) check_bundle_channels(*mb, inputs);
    const Volume& input = inputs[0];
    // Checked before inference: a SEG needs the source series' identifiers.
    const auto seg_source = a->dicom_seg.empty() && a->dicom_rtstruct.empty()
                                ? DicomSegSource{}
                                : dicom_seg_source(input, a->dicom_reference, a->series);
    SegmentationResult r = pipeline.run(inputs);

    float max_label = 0;
    bool blended = false;  // MONAI's trilinear Invertd of a label map leaves blended values at the edges
    for (std::int64_t i = 0; i < r.labels.voxels(); ++i) {
      const float v = r.labels.channel(0)[i];
      max_label = std::max(max_label, v);
      blended = blended || v != std::floor(v);
    }
    const PipelineSpec& spec = pipeline.spec();
    WriteOptions wo;
    wo.pixel_type = blended ? PixelType::float32 : max_label > 255 ? PixelType::uint16 : PixelType::uint8;
    write_image(a->output, r.labels, wo);
    // A rounded copy for the DICOM SEG and the preview, which need whole label values.
    Volume whole_labels = r.labels;
    if (blended) {
      whole_labels.data = r.labels.data.clone();
      float* p = whole_labels.channel(0);
      for (std::int64_t i = 0; i < whole_labels.voxels(); ++i) p[i] = std::floor(p[i] + 0.5f);
    }
    std::fprintf(stderr, "label map  %s (%lldx%lldx%lld, %s)\n", a->output.c_str(), static_cast<long long>(r.labels.nx()),
                 static_cast<long long>(r.labels.ny()), static_cast<long long>(r.labels.nz()), pixel_type_name(wo.pixel_type));
    if (r.conformed_labels.data.defined()) {
      // preprocess.conform on an input that was not conformed: the labels on NiiVue's conformed
      // grid (brainchop's own result) go beside the output, as OUT_conformed.nii.gz.
      const std::string& o = a->output;
      const std::size_t dot = o.size() >= 7 && o.compare(o.size() - 7, 7, ".nii.gz") == 0 ? o.size() - 7 : o.rfind('.');
      const std::string conformed = o.substr(0, dot) + "_conformed" + o.substr(dot);
      write_image(conformed, r.conformed_labels, wo);
      std::fprintf(stderr, "conformed  %s (labels on the %lldx%lldx%lld conformed grid)\n", conformed.c_str(),
                   static_cast<long long>(r.conformed_labels.nx()), static_cast<long long>(r.conformed_labels.ny()),
                   static_cast<long long>(r.conformed_labels.nz()));
    }
    // postprocess.extract: the input inside the labels (brainchop's Brain_Extraction image), as
    // OUT_extracted.nii.gz, and OUT_conformed_extracted.nii.gz on the conformed grid.
    for (const auto& [image, suffix] : {std::pair<const Volume*, const char*>{&r.extracted, "_extracted"},
                                        std::pair<const Volume*, const char*>{&r.conformed_extracted, "_conformed_extracted"}}) {
      if (!image->data.defined()) continue;
      const std::string& o = a->output;
      const std::size_t dot = o.size() >= 7 && o.compare(o.size() - 7, 7, ".nii.gz") == 0 ? o.size() - 7 : o.rfind('.');
      const std::string path = o.substr(0, dot) + suffix + o.substr(dot);
      write_image(path, *image, WriteOptions{});
      std::fprintf(stderr, "extracted  %s\n", path.c_str());
    }
    if (!a->save_probabilities.empty()) {
      WriteOptions pw;
      pw.pixel_type = PixelType::float32;
      write_image(a->save_probabilities, r.probabilities, pw);
      std::fprintf(stderr, "probabilities %s (%lld channels, float32)\n", a->save_probabilities.c_str(),
                   static_cast<long long>(r.probabilities.channels()));
    }
    if (!a->label_masks.empty() || !a->label_masks_dir.empty()) {
      const Volume masks = label_masks(r, whole_labels, spec);
      WriteOptions mw;
      mw.pixel_type = PixelType::uint8;
      if (!a->label_masks.empty()) {
        write_image(a->label_masks, masks, mw);
        std::fprintf(stderr, "masks      %s (%lld labels)\n", a->label_masks.c_str(), static_cast<long long>(masks.channels()));
      }
      if (!a->label_masks_dir.empty()) {
        std::error_code ec;
        fs::create_directories(a->label_masks_dir, ec);
        if (ec) throw Error(ErrorCode::io, a->label_masks_dir + ": cannot create the folder (" + ec.message() + ")");
        for (std::size_t k = 0; k < spec.labels.size(); ++k) {
          Volume one(1, masks.nz(), masks.ny(), masks.nx(), masks.geometry);
          std::copy_n(masks.channel(static_cast<std::int64_t>(k)), masks.voxels(), one.channel(0));
          write_image((fs::path(a->label_masks_dir) / (std::to_string(spec.labels[k].value) + "_" + file_safe(spec.labels[k].name) + ".nii.gz")).string(), one, mw);
        }
        std::fprintf(stderr, "masks      %s/ (%zu files)\n", a->label_masks_dir.c_str(), spec.labels.size());
      }
    }
    if (!a->dicom_seg.empty()) {
      write_segment_dicom_seg(a->dicom_seg, whole_labels, seg_source, pipeline.spec(), fs::path(a->model).filename().string(), a->dicom_seg_keep_empty);
      std::fprintf(stderr, "DICOM SEG  %s\n", a->dicom_seg.c_str());
    }
    if (!a->dicom_rtstruct.empty()) {
      write_segment_rtstruct(a->dicom_rtstruct, whole_labels, seg_source, pipeline.spec(), fs::path(a->model).filename().string());
      std::fprintf(stderr, "RTSTRUCT   %s\n", a->dicom_rtstruct.c_str());
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!a->stats.empty()) {
      nlohmann::json j = nlohmann::json::parse(to_json(r.stats));  // {"labels": [...]}
      j["model"] = {{"package", fs::path(a->model).filename().string()}, {"name", pipeline.spec().name}, {"version", pipeline.spec().version}};
      j["input"] = {{"file", fs::path(input_path).filename().string()},
                    {"size", {input.nx(), input.ny(), input.nz()}},
                    {"spacing", {input.geometry.spacing[0], input.geometry.spacing[1], input.geometry.spacing[2]}},
                    {"orientation", input.geometry.orientation_code()}};
      j["run"] = {{"tiles", r.window.tiles},
                  {"network_calls", r.window.network_calls},
                  {"model_grid", {r.model_grid[0], r.model_grid[1], r.model_grid[2]}},
                  {"accumulator_predicted_bytes", r.window.predicted_peak_bytes},
                  {"accumulator_measured_bytes", r.window.measured_peak_bytes},
                  {"peak_rss_bytes", peak_rss()},
                  {"seconds", {{"preprocess", r.seconds_preprocess}, {"inference", r.seconds_inference}, {"postprocess", r.seconds_postprocess}, {"total", total}}},
                  {"threads", num_threads()}};
      write_text_atomic(a->stats, j.dump(2) + "\n");
      std::fprintf(stderr, "statistics %s\n", a->stats.c_str());
    }
    if (!a->preview.empty()) {
      const RgbImage img = render_preview(input, whole_labels, pipeline.spec().labels);
      write_png(a->preview, img.width, img.height, 3, img.rgb.data());
      std::fprintf(stderr, "preview    %s\n", a->preview.c_str());
    }
    for (const auto& s : r.stats)
      std::printf("%3d %-24s %10lld voxels %10.2f mL\n", s.value, s.name.c_str(), static_cast<long long>(s.voxels), s.volume_ml);
    std::fflush(stdout);
    std::fprintf(stderr, "done in %.2f s (inference %.2f s, %lld tiles), peak memory %.0f MiB\n", total, r.seconds_inference,
                 static_cast<long long>(r.window.tiles), static_cast<double>(peak_rss()) / (1 << 20));
  });
}

}  // namespace voxinfer::cli
