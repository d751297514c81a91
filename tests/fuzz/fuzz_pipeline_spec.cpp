// libFuzzer harness: pipeline.json (parse_pipeline_spec).
#include <cstdint>
#include <string_view>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/pipeline_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)voxinfer::parse_pipeline_spec(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
