// libFuzzer harness: a TF.js/Keras layers model: model.json, a NUL, then the bytes of the
// weights shard group1-shard1of1.bin; imported and planned on small shapes.
#include <cstdint>

#include "fuzz_plan.h"
#include "fuzz_util.h"
#include "voxinfer/graph/tfjs_import.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = voxinfer::fuzz::split(data, size, 2);
  const auto dir = voxinfer::fuzz::scratch("tfjs");
  voxinfer::fuzz::write_file(dir / "model.json", parts[0]);
  voxinfer::fuzz::write_file(dir / "group1-shard1of1.bin", parts[1]);
  try {
    voxinfer::fuzz::plan_small(voxinfer::graph::import_tfjs((dir / "model.json").string()));
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
