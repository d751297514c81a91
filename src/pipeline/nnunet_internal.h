// Shared state of the nnU-Net model folder sources.
#pragma once

#include <deque>

#include "voxinfer/graph/session.h"
#include "voxinfer/pipeline/nnunet.h"

namespace voxinfer::nnunet {

struct Model::Impl {
  std::filesystem::path folder;
  Dataset dataset;
  Configuration config;
  std::vector<int> folds;
  std::vector<int> mirror_axes;
  std::array<int, 3> transpose_forward{0, 1, 2};
  std::vector<PostprocessingStep> postprocessing;
  std::string trainer;
  std::deque<graph::Session> sessions;
};

}  // namespace voxinfer::nnunet
