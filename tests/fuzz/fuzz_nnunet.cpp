// libFuzzer harness: an nnU-Net v2 results folder's plans.json and dataset.json (the input:
// plans, a NUL, dataset), opened with one fold whose checkpoint loader returns no weights.
#include <cstdint>

#include "fuzz_util.h"
#include "voxinfer/pipeline/nnunet.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = voxinfer::fuzz::split(data, size, 2);
  const auto dir = voxinfer::fuzz::scratch("nnunet") / "Dataset001_Fuzz" / "nnUNetTrainer__nnUNetPlans__3d_fullres";
  voxinfer::fuzz::write_file(dir / "plans.json", parts[0]);
  voxinfer::fuzz::write_file(dir / "dataset.json", parts[1]);
  voxinfer::fuzz::write_file(dir / "fold_0" / "checkpoint_final.pth", "");
  try {
    voxinfer::nnunet::LoadOptions options;
    options.threads = 1;
    (void)voxinfer::nnunet::Model::open(
        dir, [](const std::filesystem::path&) { return voxinfer::nnunet::Checkpoint{}; }, options);
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
