// Small helpers shared by the subcommands.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "commands.h"
#include "voxinfer/core/error.h"

namespace voxinfer::cli {

namespace fs = std::filesystem;

void write_text_atomic(const std::string& path, const std::string& text) {
  const fs::path p(path);
  const auto dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::io, path + ": cannot write: folder '" + dir.string() + "' does not exist");
  const auto tmp = dir / (".voxinfer-partial-" + std::to_string(::getpid()) + "-" + p.filename().string());
  {
    std::ofstream out(tmp);
    out << text;
    if (!out) {
      fs::remove(tmp, ec);
      throw Error(ErrorCode::io, path + ": write failed");
    }
  }
  fs::rename(tmp, p, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(ErrorCode::io, path + ": cannot move the finished file into place");
  }
}

}  // namespace voxinfer::cli
