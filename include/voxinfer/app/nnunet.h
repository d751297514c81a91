// Opening an nnU-Net v2 model folder with its PyTorch checkpoints read by the io layer's
// checkpoint reader (the pipeline layer takes checkpoints through a loader callback).
#pragma once

#include <filesystem>

#include "voxinfer/pipeline/nnunet.h"

namespace voxinfer::app {

// Reads fold_N/checkpoint_*.pth: network_weights, inference_allowed_mirroring_axes,
// trainer_name, init_args.configuration. Error(invalid_model) naming the file otherwise.
nnunet::Checkpoint read_nnunet_checkpoint(const std::filesystem::path& file);

// nnunet::Model::open with read_nnunet_checkpoint.
nnunet::Model open_nnunet_model(const std::filesystem::path& folder, const nnunet::LoadOptions& options = {});

}  // namespace voxinfer::app
