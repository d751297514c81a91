// `voxinfer classify`: class probabilities for a study, with provenance, optional
// occlusion-sensitivity map and flip-TTA uncertainty.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "voxinfer/app/segmenter.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/output_file.h"
#include "voxinfer/io/png.h"
#include "voxinfer/pipeline/classification.h"
#include "voxinfer/pipeline/preview.h"

namespace voxinfer::cli {
namespace {

namespace fs = std::filesystem;


float parse_number(const std::string& text, const std::string& what) {
  try {
    std::size_t used = 0;
    const float v = std::stof(text, &used);
    if (used != text.size() || !std::isfinite(v)) throw std::invalid_argument("x");
    return v;
  } catch (const std::exception&) {
    throw Error(ErrorCode::invalid_input, what + ": '" + text + "' is not a number");
  }
}

std::vector<float> parse_tabular(const std::string& list, const std::string& json_file, const PipelineSpec& spec) {
  std::vector<float> v;
  if (!list.empty()) {
    std::stringstream ss(list);
    std::string tok;
    while (std::getline(ss, tok, ',')) v.push_back(parse_number(tok, "--tabular"));
  }
  if (!json_file.empty()) {
    std::ifstream in(json_file);
    if (!in) throw Error(ErrorCode::invalid_input, json_file + ": cannot open the tabular values file");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::invalid_input, json_file + ": not valid JSON: " + e.what());
    }
    if (j.is_array()) {
      for (const auto& x : j) {
        if (!x.is_number()) throw Error(ErrorCode::invalid_input, json_file + ": value " + x.dump() + " is not a number");
        v.push_back(x.get<float>());
      }
    } else if (j.is_object()) {
      if (spec.input.tabular_names.empty()) throw Error(ErrorCode::invalid_input, json_file + ": the package names no tabular values; give an array");
      for (const auto& name : spec.input.tabular_names) {
        if (!j.contains(name)) throw Error(ErrorCode::invalid_input, json_file + ": missing tabular value '" + name + "'");
        if (!j[name].is_number()) throw Error(ErrorCode::invalid_input, json_file + ": '" + name + "' is not a number");
        v.push_back(j[name].get<float>());
      }
      for (const auto& [key, val] : j.items())
        if (std::find(spec.input.tabular_names.begin(), spec.input.tabular_names.end(), key) == spec.input.tabular_names.end())
          throw Error(ErrorCode::invalid_input, json_file + ": unknown tabular value '" + key + "'");
    } else {
      throw Error(ErrorCode::invalid_input, json_file + ": expected an array of numbers or an object of named values");
    }
  }
  return v;
}


}  // namespace

void add_classify_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("classify", "Classify a study with a model package; optional explanation map and uncertainty");
  struct Args {
    std::string model, json, explain, explain_preview, explain_class, tabular, tabular_json, series, mode = "mean_img";
    std::vector<std::string> inputs;
    int threads = 0, mask = 16, n_batch = 8;
    double overlap = 0.25;
    bool uncertainty = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model,-m", a->model, "model package folder (pipeline.json + model)")->required();
  cmd->add_option("--input,-i", a->inputs, "DICOM folder/file or image; repeat to stack several as channels")->required();
  cmd->add_option("--series", a->series, "DICOM SeriesInstanceUID (first input)");
  cmd->add_option("--tabular", a->tabular, "comma-separated clinical values for image + tabular models, e.g. 63,1");
  cmd->add_option("--tabular-json", a->tabular_json, "JSON file with the tabular values (array, or object keyed by the package's names)");
  cmd->add_option("--json", a->json, "write all probabilities with model and input identity as JSON");
  cmd->add_option("--explain", a->explain, "write an occlusion-sensitivity map (float NIfTI on the input's grid)");
  cmd->add_option("--explain-preview", a->explain_preview, "write the map over the image as a PNG");
  cmd->add_option("--explain-class", a->explain_class, "class (name or index) to explain; default: the most probable");
  cmd->add_option("--mask-size", a->mask, "occlusion cube edge in voxels of the model grid (default 16)")->check(CLI::PositiveNumber);
  cmd->add_option("--occlusion-overlap", a->overlap, "overlap of neighbouring occlusions in [0, 1) (default 0.25)");
  cmd->add_option("--occlusion-mode", a->mode, "gaussian, mean_patch or mean_img (default)")->check(CLI::IsMember({"gaussian", "mean_patch", "mean_img"}));
  cmd->add_option("--n-batch", a->n_batch, "occluded copies per network call (default 8)")->check(CLI::PositiveNumber);
  cmd->add_flag("--uncertainty", a->uncertainty, "flip test-time augmentation: mean, std and variation coefficient per class");
  cmd->add_option("--threads", a->threads, "threads (default: VOXINFER_NUM_THREADS or all cores)");
  cmd->callback([a] {
    if (a->threads < 0) throw Error(ErrorCode::invalid_input, "--threads must be >= 0");
    if (a->threads) set_num_threads(a->threads);
    if (!a->explain.empty() && !is_image_file_name(a->explain)) throw Error(ErrorCode::invalid_input, a->explain + ": the map must end in .nii.gz, .nii, .nrrd or .mha");
    check_outputs(a->inputs, {a->json, a->explain, a->explain_preview});
    ClassificationOptions opt;
    opt.threads = a->threads;
    opt.uncertainty = a->uncertainty;
    const bool explain = !a->explain.empty() || !a->explain_preview.empty();
    ClassificationPipeline probe(a->model);  // to resolve class names and tabular names first
    const PipelineSpec& spec = probe.spec();
    const std::vector<float> tab = parse_tabular(a->tabular, a->tabular_json, spec);
    if (explain) {
      OcclusionOptions o;
      o.mask_size = {a->mask, a->mask, a->mask};
      if (!(a->overlap >= 0 && a->overlap < 1)) throw Error(ErrorCode::invalid_input, "--occlusion-overlap must be in [0, 1)");
      o.overlap = a->overlap;
      o.mode = a->mode == "gaussian" ? OcclusionOptions::Mode::gaussian : a->mode == "mean_patch" ? OcclusionOptions::Mode::mean_patch : OcclusionOptions::Mode::mean_img;
      o.n_batch = a->n_batch;
      if (!a->explain_class.empty()) {
        const auto it = std::find(spec.classes.begin(), spec.classes.end(), a->explain_class);
        if (it != spec.classes.end()) o.target = static_cast<int>(it - spec.classes.begin());
        else o.target = static_cast<int>(parse_number(a->explain_class, "--explain-class"));
      }
      const bool tty = ::isatty(STDERR_FILENO) != 0;
      o.progress = [tty](std::int64_t done, std::int64_t total) {
        if (!tty) return;
        std::fprintf(stderr, "\rocclusion %lld/%lld", static_cast<long long>(done), static_cast<long long>(total));
        if (done == total) std::fprintf(stderr, "\n");
      };
      opt.explain = o;
    }
    ClassificationPipeline pipeline(a->model, opt);
    std::vector<Volume> vols;
    for (std::size_t i = 0; i < a->inputs.size(); ++i) {
      ReadOptions ro;
      if (i == 0) ro.series_uid = a->series;
      vols.push_back(read_volume(a->inputs[i], ro));
    }
    const ClassificationResult r = pipeline.run(vols, tab);
    std::vector<std::size_t> order(r.classes.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return r.classes[x].probability > r.classes[y].probability; });
    for (std::size_t i = 0; i < std::min<std::size_t>(order.size(), 5); ++i)
      std::printf("%-32s %.4f\n", r.classes[order[i]].name.c_str(), r.classes[order[i]].probability);
    for (const auto& u : r.uncertainty)
      std::printf("uncertainty %-20s mean %.4f std %.4f vvc %.4f (%d flips)\n", u.name.c_str(), u.mean, u.std, u.vvc, r.tta_passes);
    if (r.explanation) {
      if (!a->explain.empty()) {
        WriteOptions wo;
        wo.pixel_type = PixelType::float32;
        write_image(a->explain, *r.explanation, wo);
        std::fprintf(stderr, "explanation %s (class '%s', %lld occlusions)\n", a->explain.c_str(), r.classes[static_cast<std::size_t>(r.explained_class)].name.c_str(),
                     static_cast<long long>(r.occlusions));
      }
      if (!a->explain_preview.empty()) {
        // Quantise positive drops into ten heat bins shown as an overlay.
        const Volume& m = *r.explanation;
        float hi = 0;
        for (std::int64_t i = 0; i < m.voxels(); ++i) hi = std::max(hi, m.channel(0)[i]);
        Volume bins(1, m.nz(), m.ny(), m.nx(), m.geometry);
        std::vector<LabelSpec> legend;
        for (int b = 1; b <= (hi > 0 ? 10 : 0); ++b) {
          LabelSpec s;
          s.value = b;
          char name[64];
          std::snprintf(name, sizeof name, "drop %.3g-%.3g", hi * (b - 1) / 10, hi * b / 10);
          s.name = name;
          const double t = (b - 1) / 9.0;
          s.color = std::array<int, 3>{static_cast<int>(255 * t), static_cast<int>(160 * (1 - std::abs(2 * t - 1))), static_cast<int>(255 * (1 - t))};
          legend.push_back(s);
        }
        for (std::int64_t i = 0; i < m.voxels(); ++i) {
          const float v = m.channel(0)[i];
          bins.channel(0)[i] = (hi > 0 && v > 0.05f * hi) ? static_cast<float>(std::min(10, 1 + static_cast<int>(10 * v / hi))) : 0.f;
        }
        if (legend.empty()) {
          LabelSpec none;
          none.value = 1;
          none.name = "no occlusion lowered the probability";
          none.color = std::array<int, 3>{80, 80, 80};
          legend.push_back(none);
        }
        const RgbImage img = render_preview(vols[0], bins, legend);
        write_png(a->explain_preview, img.width, img.height, 3, img.rgb.data());
        std::fprintf(stderr, "explanation preview %s\n", a->explain_preview.c_str());
      }
    }
    if (!a->json.empty()) {
      nlohmann::json j;
      for (const auto& c : r.classes) j["classes"].push_back({{"name", c.name}, {"probability", c.probability}});
      j["top"] = r.classes[static_cast<std::size_t>(r.top)].name;
      j["logits"] = r.logits;
      j["model"] = {{"file", fs::path(pipeline.model_path()).filename().string()},
                    {"sha256", app::sha256_file(pipeline.model_path())},
                    {"name", spec.name},
                    {"version", spec.version},
                    {"activation", std::string(activation_name(spec.postprocess.activation))}};
      nlohmann::json ins = nlohmann::json::array();
      for (std::size_t i = 0; i < a->inputs.size(); ++i) {
        nlohmann::json e{{"path", fs::path(a->inputs[i]).filename().string()}};
        const auto it = vols[i].metadata.find("SeriesInstanceUID");
        if (it != vols[i].metadata.end()) e["series_uid"] = it->second;
        else if (fs::is_regular_file(a->inputs[i])) e["sha256"] = app::sha256_file(a->inputs[i]);
        e["size"] = {vols[i].nx(), vols[i].ny(), vols[i].nz()};
        ins.push_back(e);
      }
      j["input"] = ins;
      if (!tab.empty()) j["tabular"] = tab;
      if (!r.uncertainty.empty()) {
        for (const auto& u : r.uncertainty) j["uncertainty"]["classes"].push_back({{"name", u.name}, {"mean", u.mean}, {"std", u.std}, {"vvc", u.vvc}});
        j["uncertainty"]["passes"] = r.tta_passes;
        j["uncertainty"]["method"] = "flips over all combinations of the three spatial axes";
      }
      if (r.explanation) j["explanation"] = {{"class", r.classes[static_cast<std::size_t>(r.explained_class)].name}, {"occlusions", r.occlusions}, {"mask_size", a->mask}, {"mode", a->mode}};
      write_text_atomic(a->json, j.dump(2) + "\n");
    }
  });
}

}  // namespace voxinfer::cli
