// libFuzzer harness: .npy files (header dictionary, dtypes, shapes, data length).
#include <cstdint>

#include "fuzz_util.h"
#include "voxinfer/io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = voxinfer::fuzz::scratch("npy") / "in.npy";
  voxinfer::fuzz::write_file(file, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    (void)voxinfer::read_npy(file.string());
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
