#include "pipeline/package.h"

#include <string>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/graph/graph_edits.h"

namespace voxinfer::detail {
namespace {

void open_session(OpenedPackage& p, int threads) {
  if (threads > 0) set_num_threads(threads);
  graph::SessionOptions so;
  so.threads = threads;
  if (!p.spec.network) {
    p.session.emplace(graph::Session::from_file(p.model.string(), so));
    return;
  }
  // Edits the package asks for, applied to the imported graph before it is planned.
  graph::Graph g = graph::load_model(p.model.string());
  const std::string& pattern = p.spec.network->instance_norm_after;
  if (graph::insert_instance_norm_after(g, pattern, static_cast<float>(p.spec.network->epsilon)) == 0)
    throw Error(ErrorCode::invalid_model, p.spec_file.string() + ": network.instance_norm_after: no convolution of " +
                                              p.model.string() + " is named like \"" + pattern + "\"");
  p.session.emplace(std::move(g), so);
}

}  // namespace

bool is_package_spec_file(const std::filesystem::path& path) {
  const std::string name = path.filename().string();
  std::error_code ec;
  return name.size() >= 13 && name.compare(0, 9, "pipeline.") == 0 && name.compare(name.size() - 5, 5, ".json") == 0 &&
         std::filesystem::is_regular_file(path, ec);
}

OpenedPackage open_package(const std::filesystem::path& where, Task task, int threads) {
  std::error_code ec;
  const bool variant = is_package_spec_file(where);
  const std::filesystem::path dir = variant ? where.parent_path() : where;
  if (!variant && !std::filesystem::is_directory(dir, ec))
    throw Error(ErrorCode::invalid_input, dir.string() + ": model package folder not found (it must hold pipeline.json and the model)");
  OpenedPackage p;
  p.dir = dir.empty() ? std::filesystem::path(".") : dir;
  p.spec_file = variant ? where : dir / "pipeline.json";
  if (!std::filesystem::exists(p.spec_file, ec))
    throw Error(ErrorCode::invalid_model, p.spec_file.string() + ": missing (a model package needs pipeline.json)");
  p.spec = load_pipeline_spec(p.spec_file);
  if (p.spec.task != task)
    throw Error(ErrorCode::invalid_model, p.spec_file.string() + ": task is '" + std::string(task_name(p.spec.task)) + "', expected '" +
                                              std::string(task_name(task)) + "'");
  // Like ONNX external data and TF.js shards, the model stays inside its package folder.
  const std::filesystem::path named = std::filesystem::path(p.spec.model).lexically_normal();
  if (named.is_absolute() || named.empty() || *named.begin() == "..")
    throw Error(ErrorCode::invalid_model, p.spec_file.string() + ": \"model\": \"" + p.spec.model +
                                              "\" is outside the package folder (name a file inside it)");
  p.model = p.dir / p.spec.model;
  if (!std::filesystem::exists(p.model, ec))
    throw Error(ErrorCode::invalid_model, p.model.string() + ": model file named by pipeline.json is missing");
  open_session(p, threads);
  return p;
}

OpenedPackage open_translated_package(const std::filesystem::path& dir, PipelineSpec spec,
                                      const std::filesystem::path& model, int threads) {
  OpenedPackage p;
  p.spec = std::move(spec);
  p.dir = dir;
  p.spec_file = dir;
  p.model = model;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p.model, ec))
    throw Error(ErrorCode::invalid_model, p.model.string() + ": network file not found");
  open_session(p, threads);
  return p;
}

void check_image_input(const OpenedPackage& p, const graph::ValueInfo& vi) {
  if (vi.has_shape && vi.dims.size() != 5)
    throw Error(ErrorCode::invalid_model, p.model.string() + ": input '" + vi.name + "' is " + vi.dims_str() + ", a 3D model takes [N, C, D, H, W]");
  if (vi.has_shape && vi.dims[1].known() && vi.dims[1].value != p.spec.input.channels)
    throw Error(ErrorCode::invalid_model, p.spec_file.string() + ": input.channels is " + std::to_string(p.spec.input.channels) +
                                              " but the model takes " + std::to_string(vi.dims[1].value));
}

}  // namespace voxinfer::detail
