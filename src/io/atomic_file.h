// AtomicFile: output that appears under its final name only when complete. Data goes
// to a hidden temporary file in the same folder (same filesystem), which commit()
// renames over the target; destruction without commit() deletes the temporary, and so
// does SIGINT/SIGTERM/SIGHUP (see output_file.h).
#pragma once

#include <cstdio>
#include <string>

namespace voxinfer {

class AtomicFile {
 public:
  // Checks the path (not a folder, folder exists and is writable) and creates the
  // temporary; with open_stream false an external writer (ITK, DCMTK) writes temp_path().
  explicit AtomicFile(const std::string& path, bool open_stream = true);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  // Where an external writer should write before commit().
  const std::string& temp_path() const { return temp_; }

  void write(const void* data, std::size_t n);

  // Flushes and closes (each checked), then renames the temporary over the target.
  void commit();

  // Throws the write error for this file (an external writer's output was found short).
  [[noreturn]] void fail(const std::string& why) const;

 private:
  std::string path_;
  std::string temp_;
  std::FILE* file_ = nullptr;
  int slot_ = -1;  // in the table of temporaries removed on a signal
  bool committed_ = false;
};

}  // namespace voxinfer
