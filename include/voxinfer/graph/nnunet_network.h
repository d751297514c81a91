// The networks nnU-Net v2 trains (dynamic-network-architectures' PlainConvUNet and
// ResidualEncoderUNet), built as a voxinfer graph from the architecture a plans.json describes
// and a PyTorch state dict (handed in as tensors: the graph layer reads no files). The graph
// goes through the same passes and kernels as an imported ONNX model.
//
// 2D configurations are built as 3D graphs with depth-1 kernels: the input is [N, C, 1, H, W]
// and every Conv2d/ConvTranspose2d/InstanceNorm2d becomes its 3D form over a single plane,
// which computes the same numbers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/tensor.h"
#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

struct NnunetArchitecture {
  enum class Kind { plain_conv_unet, residual_encoder_unet };
  enum class Norm { none, instance, batch };
  enum class Nonlin { none, relu, leaky_relu };

  Kind kind = Kind::plain_conv_unet;
  int dims = 3;  // 2 or 3 (Conv2d / Conv3d)
  std::int64_t input_channels = 1;
  std::int64_t num_classes = 2;                                  // segmentation heads
  std::vector<std::int64_t> features;                            // per stage
  std::vector<std::vector<std::int64_t>> kernel_sizes, strides;  // per stage, `dims` entries each
  std::vector<std::int64_t> n_conv_per_stage;                    // plain: convs per encoder stage; residual: blocks
  std::vector<std::int64_t> n_conv_per_stage_decoder;
  bool conv_bias = true;
  Norm norm = Norm::instance;
  double norm_eps = 1e-5;
  bool norm_affine = true;
  Nonlin nonlin = Nonlin::leaky_relu;
  double negative_slope = 0.01;
  bool nonlin_first = false;                  // conv -> nonlin -> norm (plain only)
  std::optional<std::int64_t> stem_channels;  // residual: default features[0]

  std::size_t n_stages() const { return features.size(); }
  // Throws Error(invalid_model, "<what>: ...") when the lists disagree in length or hold
  // impossible values.
  void validate(const std::string& what) const;
  std::string kind_name() const;
};

// Builds the inference graph (deep-supervision heads dropped): input "input" [N, C, D, H, W]
// (D = 1 for 2D), output "logits" [N, num_classes, D, H, W]. Weights are looked up by their
// state-dict names; a missing or mis-shaped tensor is Error(invalid_model) naming `what` and
// the tensor.
Graph build_nnunet_network(const NnunetArchitecture& arch, const std::map<std::string, Tensor>& state_dict,
                           const std::string& what);

}  // namespace voxinfer::graph
