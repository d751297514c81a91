// Graph passes. Each preserves the graph's outputs (tests run every model with the
// passes on and off): drop Identity/Dropout, fold BatchNormalization into the
// preceding Conv/ConvTranspose, fuse elementwise activations into Conv, collapse
// Reshape chains, remove dead nodes.
#pragma once

#include <string>
#include <vector>

#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

struct PassReport {
  int identities_removed = 0;
  int batchnorms_folded = 0;
  int activations_fused = 0;
  int reshapes_collapsed = 0;
  int dead_removed = 0;
  int group_norms_fused = 0;
  int residuals_fused = 0;
};

PassReport drop_identities(Graph& g);
PassReport fold_batchnorm(Graph& g);
// PyTorch's exported GroupNorm chain (Reshape, InstanceNormalization, Reshape, Mul, Add)
// becomes one GroupNormalization node.
PassReport fuse_group_norm(Graph& g);
// Conv -> Add(conv, r) with r a runtime value becomes one Conv with r as its fused residual
// (input 4), placed where the Add was; an activation after the Add then fuses too.
PassReport fuse_residual_add(Graph& g);
PassReport fuse_activations(Graph& g);
PassReport collapse_reshapes(Graph& g);
PassReport remove_dead_nodes(Graph& g);

// All of the above, in order.
PassReport optimize_graph(Graph& g);

}  // namespace voxinfer::graph
