// `voxinfer models [DIR]`: the model packages under a folder, with their variants
// (pipeline.NAME.json beside a package's pipeline.json), nnU-Net folders and MONAI bundles.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/pipeline/nnunet.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer::cli {
namespace {

namespace fs = std::filesystem;

struct Entry {
  std::string path;  // relative to DIR: a folder, or folder/pipeline.NAME.json for a variant
  std::string kind, task, name, description;
  std::int64_t outputs = 0;  // labels or classes
  std::string error;         // a package that does not load
};

bool is_variant_file(const fs::path& p) {
  const std::string n = p.filename().string();
  return n != "pipeline.json" && n.rfind("pipeline.", 0) == 0 && n.size() > 14 &&
         n.compare(n.size() - 5, 5, ".json") == 0;
}

Entry describe_spec(const fs::path& spec_file, const std::string& rel, const std::string& kind) {
  Entry e{rel, kind, "", "", "", 0, ""};
  try {
    const PipelineSpec s = load_pipeline_spec(spec_file);
    e.task = task_name(s.task);
    e.name = s.name;
    e.description = s.description;
    e.outputs = static_cast<std::int64_t>(s.task == Task::segmentation ? s.labels.size() : s.classes.size());
  } catch (const Error& err) {
    e.error = err.what();
  }
  return e;
}

void scan(const fs::path& root, const fs::path& dir, int depth, std::vector<Entry>& out) {
  std::error_code ec;
  const std::string rel = dir == root ? "." : fs::relative(dir, root, ec).generic_string();
  if (fs::is_regular_file(dir / "pipeline.json", ec)) {
    out.push_back(describe_spec(dir / "pipeline.json", rel, "package"));
    std::vector<fs::path> variants;
    for (const auto& f : fs::directory_iterator(dir, ec))
      if (is_variant_file(f.path())) variants.push_back(f.path());
    std::sort(variants.begin(), variants.end(), [](const fs::path& a, const fs::path& b) {
      // pipeline.e3.json before pipeline.e10.json: by length, then by name.
      const std::string x = a.filename().string(), y = b.filename().string();
      return x.size() != y.size() ? x.size() < y.size() : x < y;
    });
    for (const auto& v : variants) out.push_back(describe_spec(v, rel + "/" + v.filename().string(), "variant"));
    return;
  }
  if (monai::is_bundle(dir)) {
    out.push_back(Entry{rel, "MONAI bundle", "", "", "", 0, ""});
    return;
  }
  if (nnunet::is_model_folder(dir)) {
    out.push_back(Entry{rel, "nnU-Net folder", "segmentation", "", "", 0, ""});
    return;
  }
  if (nnunet::is_composite_folder(dir)) {
    out.push_back(Entry{rel, "nnU-Net composite", "segmentation", "", "", 0, ""});
    return;
  }
  if (depth == 0) return;
  std::vector<fs::path> children;
  for (const auto& f : fs::directory_iterator(dir, ec))
    if (f.is_directory(ec) && !f.is_symlink(ec)) children.push_back(f.path());
  std::sort(children.begin(), children.end());
  for (const auto& c : children) scan(root, c, depth - 1, out);
}

}  // namespace

void add_models_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "models", "List the model packages under a folder (and their variants, pipeline.NAME.json), nnU-Net folders and MONAI bundles");
  auto dir = std::make_shared<std::string>(".");
  auto json = std::make_shared<bool>(false);
  cmd->add_option("DIR", *dir, "folder to search (default: the current folder; four levels deep)");
  cmd->add_flag("--json", *json, "print a JSON array instead of a table");
  cmd->callback([=] {
    std::error_code ec;
    const fs::path root(*dir);
    if (!fs::is_directory(root, ec)) throw Error(ErrorCode::invalid_input, *dir + ": folder not found");
    std::vector<Entry> entries;
    scan(root, root, 4, entries);
    if (*json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& e : entries) {
        nlohmann::json o = {{"path", (root / e.path).lexically_normal().generic_string()}, {"kind", e.kind}};
        if (!e.task.empty()) o["task"] = e.task;
        if (!e.name.empty()) o["name"] = e.name;
        if (!e.description.empty()) o["description"] = e.description;
        if (e.outputs > 0) o[e.task == "classification" ? "classes" : "labels"] = e.outputs;
        if (!e.error.empty()) o["error"] = e.error;
        j.push_back(o);
      }
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    if (entries.empty()) {
      std::fprintf(stderr, "no model packages under %s\n", dir->c_str());
      return;
    }
    for (const auto& e : entries) {
      const std::string what = !e.error.empty() ? "invalid: " + e.error
                                                : (e.name.empty() ? e.kind : e.name) +
                                                      (e.outputs > 0 ? " (" + std::to_string(e.outputs) +
                                                                           (e.task == "classification" ? " classes)" : " labels)")
                                                                     : "");
      std::printf("%-44s %s\n", e.path.c_str(), what.c_str());
    }
  });
}

}  // namespace voxinfer::cli
