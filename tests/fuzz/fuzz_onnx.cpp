// libFuzzer harness: the ONNX importer (protobuf, attributes, initializers) and shape
// inference, planning the imported graph on small shapes.
#include <cstdint>
#include <string>

#include "fuzz_plan.h"
#include "fuzz_util.h"
#include "voxinfer/graph/onnx_import.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto dir = voxinfer::fuzz::scratch("onnx");  // external data stays inside it (none there)
  try {
    voxinfer::fuzz::plan_small(voxinfer::graph::import_onnx_bytes(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx", dir.string()));
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
