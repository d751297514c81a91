// Several nnU-Net folders on one study: an optional crop model, then models whose label maps
// are merged through class maps (TotalSegmentator's body crop and multi-part tasks).
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/nnunet.h"
#include "voxinfer/pipeline/preprocess.h"

namespace voxinfer::nnunet {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const char* kFile = "nnunet_composite.json";

[[noreturn]] void bad(const fs::path& file, const std::string& field, const std::string& what) {
  fail(ErrorCode::invalid_model, file.string() + ": " + field + ": " + what);
}

int as_label(const json& j, const fs::path& file, const std::string& field) {
  if (j.is_number_integer() && j.get<std::int64_t>() >= 0 && j.get<std::int64_t>() <= 65535) return j.get<int>();
  if (j.is_string()) {
    try {
      std::size_t used = 0;
      const int v = std::stoi(j.get<std::string>(), &used);
      if (used == j.get<std::string>().size() && v >= 0 && v <= 65535) return v;
    } catch (const std::exception&) {
    }
  }
  bad(file, field, "expected a label value 0..65535");
}

// A folder path inside the package: relative, without "..".
std::string folder_field(const json& j, const fs::path& file, const std::string& field) {
  if (!j.is_string() || j.get<std::string>().empty())
    bad(file, field, "expected a folder path relative to the package");
  const fs::path p(j.get<std::string>());
  if (p.is_absolute()) bad(file, field, "must be relative to the package folder (link the model folders into it)");
  for (const auto& part : p)
    if (part == "..") bad(file, field, "must stay inside the package folder (no '..')");
  return p.string();
}

CompositeStep step(const json& j, const fs::path& file, const std::string& field, bool with_map) {
  if (!j.is_object()) bad(file, field, "expected an object");
  static const char* kKnown[] = {"model",       "folds",     "checkpoint", "step_size",
                                 "disable_tta", "class_map", "labels",     "margin_mm"};
  for (const auto& [k, v] : j.items())
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown))
      bad(file, field + "." + k, "unknown field");
  CompositeStep s;
  if (!j.contains("model")) bad(file, field + ".model", "missing");
  s.folder = folder_field(j.at("model"), file, field + ".model");
  if (j.contains("folds")) {
    if (!j.at("folds").is_array()) bad(file, field + ".folds", "expected a list of fold numbers");
    for (const auto& f : j.at("folds")) {
      if (!f.is_number_integer() || f.get<int>() < 0 || f.get<int>() > 999)
        bad(file, field + ".folds", "expected fold numbers");
      s.folds.push_back(f.get<int>());
    }
  }
  if (j.contains("checkpoint")) {
    const auto c = j.at("checkpoint").is_string() ? j.at("checkpoint").get<std::string>() : "";
    if (c != "final" && c != "best") bad(file, field + ".checkpoint", "expected \"final\" or \"best\"");
    s.checkpoint = "checkpoint_" + c + ".pth";
  }
  if (j.contains("step_size")) {
    if (!j.at("step_size").is_number() || !(j.at("step_size").get<double>() > 0) || j.at("step_size").get<double>() > 1)
      bad(file, field + ".step_size", "expected a number in (0, 1]");
    s.step_size = j.at("step_size").get<double>();
  }
  if (j.contains("disable_tta")) {
    if (!j.at("disable_tta").is_boolean()) bad(file, field + ".disable_tta", "expected true or false");
    s.mirroring = !j.at("disable_tta").get<bool>();
  }
  if (with_map) {
    if (!j.contains("class_map") || !j.at("class_map").is_object() || j.at("class_map").empty())
      bad(file, field + ".class_map", "expected an object {\"model label\": output label, ...}");
    for (const auto& [k, v] : j.at("class_map").items())
      s.class_map[as_label(json(k), file, field + ".class_map")] = as_label(v, file, field + ".class_map." + k);
  }
  return s;
}

}  // namespace

bool is_composite_folder(const fs::path& folder) {
  std::error_code ec;
  return fs::is_directory(folder, ec) && fs::is_regular_file(folder / kFile, ec);
}

CompositeSpec load_composite(const fs::path& folder) {
  const fs::path file = folder / kFile;
  std::ifstream f(file, std::ios::binary);
  if (!f) fail(ErrorCode::invalid_model, file.string() + ": cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(ErrorCode::invalid_model, file.string() + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  if (!j.is_object()) bad(file, "(top level)", "expected an object");
  static const char* kKnown[] = {"name", "version", "description", "crop", "models", "labels"};
  for (const auto& [k, v] : j.items())
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown)) bad(file, k, "unknown field");
  CompositeSpec c;
  if (j.contains("name") && j.at("name").is_string()) c.name = j.at("name").get<std::string>();
  if (j.contains("version") && j.at("version").is_string()) c.version = j.at("version").get<std::string>();
  if (j.contains("crop")) {
    const json& cj = j.at("crop");
    c.crop = step(cj, file, "crop", false);
    if (!cj.contains("labels") || !cj.at("labels").is_array() || cj.at("labels").empty())
      bad(file, "crop.labels", "expected the crop model's labels that bound the region");
    for (const auto& l : cj.at("labels")) c.crop_labels.push_back(as_label(l, file, "crop.labels"));
    if (cj.contains("margin_mm")) {
      if (!cj.at("margin_mm").is_number() || cj.at("margin_mm").get<double>() < 0 ||
          cj.at("margin_mm").get<double>() > 1000)
        bad(file, "crop.margin_mm", "expected a margin in mm, 0..1000");
      c.crop_margin_mm = cj.at("margin_mm").get<double>();
    }
  }
  if (!j.contains("models") || !j.at("models").is_array() || j.at("models").empty())
    bad(file, "models", "expected a list of nnU-Net folders");
  for (std::size_t i = 0; i < j.at("models").size(); ++i)
    c.models.push_back(step(j.at("models")[i], file, "models[" + std::to_string(i) + "]", true));
  if (j.contains("labels")) {
    if (!j.at("labels").is_object()) bad(file, "labels", "expected {\"value\": \"name\", ...}");
    for (const auto& [k, v] : j.at("labels").items()) {
      if (!v.is_string()) bad(file, "labels." + k, "expected a name");
      c.labels.emplace_back(as_label(json(k), file, "labels"), v.get<std::string>());
    }
  }
  for (const auto& m : c.models)
    for (const auto& entry : m.class_map) {
      const auto to = entry.second;
      if (!c.labels.empty() &&
          std::none_of(c.labels.begin(), c.labels.end(), [&](const auto& l) { return l.first == to; }) && to != 0)
        bad(file, "labels", "output label " + std::to_string(to) + " of a class_map has no name");
    }
  return c;
}

CompositeResult run_composite(const fs::path& folder, const CompositeSpec& spec, const std::vector<Volume>& channels,
                              const CheckpointLoader& loader, int threads,
                              const std::function<void(const std::string&)>& log) {
  const auto t0 = std::chrono::steady_clock::now();
  if (channels.empty()) fail(ErrorCode::invalid_input, "no input");
  const auto open = [&](const CompositeStep& s) {
    const fs::path p = folder / s.folder;
    if (!is_model_folder(p))
      fail(ErrorCode::invalid_model,
           p.string() + ": not an nnU-Net results folder (named in " + std::string(kFile) + ")");
    LoadOptions lo;
    lo.folds = s.folds;
    lo.checkpoint = s.checkpoint;
    lo.threads = threads;
    return Model::open(p, loader, lo);
  };
  const auto options = [](const CompositeStep& s) {
    PredictOptions o;
    o.step_size = s.step_size;
    o.mirroring = s.mirroring;
    return o;
  };
  CompositeResult r;
  const Volume& v0 = channels[0];
  const std::array<std::int64_t, 3> size{v0.nx(), v0.ny(), v0.nz()};
  std::array<std::int64_t, 3> begin{0, 0, 0}, end = size;
  if (spec.crop) {
    Model m = open(*spec.crop);
    if (log) log("crop model " + spec.crop->folder);
    Prediction p = predict(m, channels, options(*spec.crop));
    r.tiles += p.tiles;
    std::array<std::int64_t, 3> lo{size[0], size[1], size[2]}, hi{-1, -1, -1};
    for (std::int64_t z = 0; z < v0.nz(); ++z)
      for (std::int64_t y = 0; y < v0.ny(); ++y)
        for (std::int64_t x = 0; x < v0.nx(); ++x) {
          const int l = static_cast<int>(p.labels.at(0, z, y, x));
          if (std::find(spec.crop_labels.begin(), spec.crop_labels.end(), l) == spec.crop_labels.end()) continue;
          const std::array<std::int64_t, 3> i{x, y, z};
          for (std::size_t a = 0; a < 3; ++a) lo[a] = std::min(lo[a], i[a]), hi[a] = std::max(hi[a], i[a]);
        }
    if (hi[0] >= 0) {
      for (std::size_t a = 0; a < 3; ++a) {
        const auto m = static_cast<std::int64_t>(
            std::ceil(spec.crop_margin_mm / v0.geometry.spacing[static_cast<Eigen::Index>(a)] - 1e-9));
        begin[a] = std::max<std::int64_t>(0, lo[a] - m);
        end[a] = std::min(size[a], hi[a] + 1 + m);
      }
      r.crop_box =
          std::array<std::array<std::int64_t, 2>, 3>{{{begin[0], end[0]}, {begin[1], end[1]}, {begin[2], end[2]}}};
    } else if (log) {
      log("the crop model found none of its labels: the whole study is segmented");
    }
  }
  std::vector<Volume> cropped;
  const std::array<std::int64_t, 3> cs{end[0] - begin[0], end[1] - begin[1], end[2] - begin[2]};
  for (const auto& v : channels) cropped.push_back(r.crop_box ? crop_or_pad(v, begin, cs) : v);

  Volume out(1, v0.nz(), v0.ny(), v0.nx(), v0.geometry);
  for (const auto& s : spec.models) {
    Model m = open(s);
    if (log) log("model " + s.folder);
    Prediction p = predict(m, cropped, options(s));
    r.tiles += p.tiles;
    for (std::int64_t z = 0; z < cs[2]; ++z)
      for (std::int64_t y = 0; y < cs[1]; ++y)
        for (std::int64_t x = 0; x < cs[0]; ++x) {
          const int l = static_cast<int>(p.labels.at(0, z, y, x));
          if (l == 0) continue;
          const auto it = s.class_map.find(l);
          if (it == s.class_map.end() || it->second == 0) continue;
          out.at(0, z + begin[2], y + begin[1], x + begin[0]) = static_cast<float>(it->second);
        }
  }
  r.labels = std::move(out);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace voxinfer::nnunet
