// Small helpers shared by the subcommands.
#include "commands.h"
#include "voxinfer/io/output_file.h"

namespace voxinfer::cli {

void write_text_atomic(const std::string& path, const std::string& text) { write_file_atomic(path, text); }

}  // namespace voxinfer::cli
