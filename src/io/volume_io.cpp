// read_volume / write_volume: the one entry point that sends folders and DICOM files to
// the DCMTK adapter and image files to the ITK adapter.
#include <filesystem>

#include "voxinfer/io/dicom.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {

Volume read_volume(const std::string& path, const ReadOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(ErrorCode::io, path + ": no such file or folder");
  if (fs::is_directory(st)) return read_dicom(path, options);
  if (is_image_file_name(path)) return read_image(path, options);
  // Anything else is tried as DICOM (files from PACS often have no extension).
  return read_dicom(path, options);
}

void write_volume(const std::string& path, const Volume& volume, const WriteOptions& options) {
  write_image(path, volume, options);
}

}  // namespace voxinfer
