// libFuzzer harness: read_volume on a folder of up to three DICOM files cut from the input
// (parts separated by "\0VOXFILE\0"); each part gets the 128-byte preamble and "DICM" in
// front, so that mutations explore the file meta group and dataset rather than the magic.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "voxinfer/io/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = voxinfer::fuzz::scratch("dicom");
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  static const std::string_view kSeparator("\0VOXFILE\0", 9);
  for (int i = 0; i < 3 && !rest.empty(); ++i) {
    const auto at = i < 2 ? rest.find(kSeparator) : std::string_view::npos;
    const std::string_view part = rest.substr(0, at);
    voxinfer::fuzz::write_file(dir / ("IM" + std::to_string(i)), std::string(128, '\0') + "DICM" + std::string(part));
    rest = at == std::string_view::npos ? std::string_view() : rest.substr(at + kSeparator.size());
  }
  voxinfer::ReadOptions options;
  options.max_voxels = std::int64_t{1} << 22;
  options.allow_uneven = (size & 1) != 0;
  try {
    (void)voxinfer::read_volume(dir.string(), options);
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
