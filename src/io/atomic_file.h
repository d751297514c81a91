// AtomicFile: output that appears under its final name only when complete. Data goes
// to a hidden temporary file in the same folder (same filesystem), which commit()
// renames over the target; destruction without commit() deletes the temporary.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "voxinfer/core/error.h"

namespace voxinfer {

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path, bool open_stream = true) : path_(path) {
    const std::filesystem::path p(path);
    const auto dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
      throw Error(ErrorCode::io, path + ": cannot write: folder '" + dir.string() + "' does not exist");
    // Keep the full file name at the end so that extension-based writers (ITK) still work.
    temp_ = (dir / (".voxinfer-partial-" + std::to_string(::getpid()) + "-" + p.filename().string())).string();
    if (open_stream) {
      file_ = std::fopen(temp_.c_str(), "wb");
      if (!file_) throw Error(ErrorCode::io, path + ": cannot open for writing");
    }
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (file_) std::fclose(file_);
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove(temp_, ec);
    }
  }

  // Where an external writer should write before commit().
  const std::string& temp_path() const { return temp_; }

  void write(const void* data, std::size_t n) {
    if (n && std::fwrite(data, 1, n, file_) != n) throw Error(ErrorCode::io, path_ + ": write failed (disk full?)");
  }

  void commit() {
    if (file_) {
      const bool ok = std::fflush(file_) == 0;
      std::fclose(file_);
      file_ = nullptr;
      if (!ok) throw Error(ErrorCode::io, path_ + ": write failed (disk full?)");
    }
    std::error_code ec;
    std::filesystem::rename(temp_, path_, ec);
    if (ec) throw Error(ErrorCode::io, path_ + ": cannot move the finished file into place: " + ec.message());
    committed_ = true;
  }

 private:
  std::string path_;
  std::string temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

}  // namespace voxinfer
