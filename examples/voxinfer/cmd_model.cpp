// `voxinfer info`, `voxinfer run` and `voxinfer bench`.
#include "commands.h"

#include "voxinfer/core/error.h"

namespace voxinfer::cli {

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model (ONNX, TF.js/Keras model.json) or a volume");
  auto input = std::make_shared<std::string>();
  auto series = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("INPUT", *input, "model file, image file or DICOM folder")->required();
  cmd->add_option("--series", *series, "DICOM SeriesInstanceUID to describe");
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([=] { print_volume_info(*input, *series, *json); });
}

void add_run_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run a model on .npy inputs");
  cmd->allow_extras();
  cmd->callback([] { throw Error(ErrorCode::unsupported, "'run' is not available in this build yet"); });
}

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time a model");
  cmd->allow_extras();
  cmd->callback([] { throw Error(ErrorCode::unsupported, "'bench' is not available in this build yet"); });
}

}  // namespace voxinfer::cli
