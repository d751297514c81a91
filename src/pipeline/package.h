// Opening a model package (a folder with pipeline.json and the model it names), shared by the
// segmentation and classification pipelines.
#pragma once

#include <filesystem>
#include <optional>

#include "voxinfer/graph/session.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer::detail {

struct OpenedPackage {
  PipelineSpec spec;
  std::filesystem::path dir, spec_file, model;  // dir: the package folder
  std::optional<graph::Session> session;
};

// True for a variant spec file named pipeline.json or pipeline.NAME.json: such a file names its
// package (the folder holding it) with that spec instead of the folder's pipeline.json.
bool is_package_spec_file(const std::filesystem::path& path);

// Parses and validates pipeline.json (its task must be `task`), checks that the model file
// exists and opens a session on it with `threads` (0: the default). `dir` is the package folder,
// or a variant spec file in it (is_package_spec_file). Errors name the folder or file:
// invalid_input for a missing folder, invalid_model for anything in the package.
OpenedPackage open_package(const std::filesystem::path& dir, Task task, int threads);

// The same for a spec translated from another package format, with its network file `model`.
OpenedPackage open_translated_package(const std::filesystem::path& dir, PipelineSpec spec,
                                      const std::filesystem::path& model, int threads);

// Checks that the model's image input `vi` is [N, C, D, H, W] with C = input.channels when
// the model declares them.
void check_image_input(const OpenedPackage& p, const graph::ValueInfo& vi);

}  // namespace voxinfer::detail
