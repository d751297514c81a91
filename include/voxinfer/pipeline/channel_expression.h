// Element-wise expressions over a voxel's channels: the small "lambda x: ..." functions that
// MONAI bundles put in Lambdad post-processing steps (torch.where, comparisons, channel
// indexing such as x[[2]] or x[1:3], torch.cat, arithmetic), compiled once and evaluated per
// voxel without allocating. Nothing is ever handed to Python: a form outside the grammar in
// docs/pipeline.md is an Error(unsupported) that says which part.
//
// Every value is a vector over channels at one voxel (a Python number is a one-channel value
// that broadcasts). Because the functions act on each voxel alone, evaluating them per voxel
// on the input's grid gives what MONAI computes on the whole tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {

class ChannelExpression {
 public:
  // Compiles `text` ("lambda x: <expression>", or the expression alone with x free) for an
  // input of `in_channels` channels. Throws Error(unsupported) naming the unsupported part,
  // or when channel counts do not fit (an index out of range, shapes that do not broadcast).
  static ChannelExpression compile(std::string_view text, std::int64_t in_channels);

  std::int64_t in_channels() const { return in_; }
  std::int64_t out_channels() const;
  // Floats of scratch space evaluate() needs.
  std::size_t scratch_size() const { return scratch_; }
  // out[0 .. out_channels()) from in[0 .. in_channels()); `scratch` holds scratch_size() floats.
  void evaluate(const float* in, float* scratch, float* out) const;

  struct Node;

 private:
  std::int64_t in_ = 0;
  std::size_t scratch_ = 0;
  std::shared_ptr<const std::vector<Node>> nodes_;  // in evaluation order; the last is the result
};

// What a voxel's K network values become on the input's grid, as a MONAI post-processing chain
// after Invertd defines it: activation (unless the values are probabilities already), the
// Lambdad expressions before the discretisation, the discretisation (argmax keeps one channel
// holding the index; threshold gives one 0/1 channel per channel), the expressions after it.
// The last channels decide the label: one channel is the label value itself; several are masks
// (channel i on = label_values[i], or i + 1 without them; the last one on wins).
class VoxelRule {
 public:
  VoxelRule(const PostprocessSpec& post, std::int64_t channels, std::vector<int> label_values);

  std::int64_t in_channels() const { return k_; }
  std::int64_t out_channels() const { return out_; }
  std::size_t scratch_size() const { return scratch_; }
  // `values`: K values (logits, or probabilities when `activated`); `scratch`: scratch_size().
  float label(const float* values, bool activated, float* scratch) const;
  // The final channels (out_channels() of them) into `out`.
  void channels(const float* values, bool activated, float* scratch, float* out) const;

 private:
  Activation activation_;
  Discretize discretize_;
  float threshold_;
  std::int64_t k_, out_;
  std::vector<ChannelExpression> before_, after_;
  std::vector<int> values_;
  std::size_t widest_ = 0, expression_scratch_ = 0, scratch_ = 0;
};

}  // namespace voxinfer
