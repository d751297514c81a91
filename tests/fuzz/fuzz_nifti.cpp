// libFuzzer harness: NIfTI-1/2 headers and data through read_image (the input written to a
// .nii file, or .nii.gz when it starts with the gzip magic). Only voxinfer::Error may escape.
#include <cstdint>

#include "fuzz_util.h"
#include "voxinfer/io/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const auto file = voxinfer::fuzz::scratch("nifti") / (gz ? "in.nii.gz" : "in.nii");
  voxinfer::fuzz::write_file(file, std::string_view(reinterpret_cast<const char*>(data), size));
  voxinfer::ReadOptions options;
  options.max_voxels = std::int64_t{1} << 22;  // keeps each execution small
  try {
    (void)voxinfer::read_image(file.string(), options);
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
