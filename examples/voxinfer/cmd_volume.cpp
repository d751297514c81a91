// `voxinfer convert` and `voxinfer info VOLUME|FOLDER`.
#include "commands.h"

#include "voxinfer/core/error.h"

namespace voxinfer::cli {

void add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert a DICOM series or image file to NIfTI/NRRD/MHA");
  cmd->allow_extras();
  cmd->callback([] { throw Error(ErrorCode::unsupported, "'convert' is not available in this build yet"); });
}

void print_volume_info(const std::string& input, const std::string&, bool) {
  throw Error(ErrorCode::unsupported, input + ": volume info is not available in this build yet");
}

}  // namespace voxinfer::cli
