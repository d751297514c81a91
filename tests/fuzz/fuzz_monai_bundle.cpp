// libFuzzer harness: a MONAI bundle's configs (the input: metadata.json, a NUL,
// inference.json) translated into a pipeline spec, collecting every problem.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "voxinfer/pipeline/monai_bundle.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = voxinfer::fuzz::split(data, size, 2);
  try {
    const voxinfer::monai::Bundle b = voxinfer::monai::translate_bundle(std::string(parts[0]), std::string(parts[1]),
                                                                        "bundle", "bundle/models/model.onnx", true);
    (void)voxinfer::monai::describe(b);
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
