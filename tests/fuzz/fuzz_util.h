// Helpers shared by the libFuzzer harnesses: a private scratch folder per process, files
// written into it from the fuzz input, and the split of one input into several files.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace voxinfer::fuzz {

// An empty folder of this process (emptied again on each call).
inline std::filesystem::path scratch(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("voxinfer-fuzz-" + std::to_string(::getpid())) / name;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_file(const std::filesystem::path& p, std::string_view bytes) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Parts of the input separated by a NUL byte (JSON texts never hold one); at most `n`, the
// last taking the rest.
inline std::vector<std::string_view> split(const std::uint8_t* data, std::size_t size, std::size_t n) {
  std::vector<std::string_view> parts;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (parts.size() + 1 < n) {
    const auto at = rest.find('\0');
    if (at == std::string_view::npos) break;
    parts.push_back(rest.substr(0, at));
    rest.remove_prefix(at + 1);
  }
  parts.push_back(rest);
  while (parts.size() < n) parts.emplace_back();
  return parts;
}

}  // namespace voxinfer::fuzz
