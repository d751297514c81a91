// Plane streaming of whole-volume networks: a chain of 'same'-padded stride-1 3D convolutions
// with elementwise activations between them (MeshNet and its relatives), ending in the labels
// (argmax over the channels of the last convolution), computed a few planes along D at a time.
// Each convolution keeps a ring of the input planes its next outputs read (2 * halo + a few
// planes), so neither the activations nor the C x volume logits ever exist whole. A
// per-channel normalisation over the whole volume (InstanceNormalization right after a
// convolution) is the one place where a whole activation is kept: the convolution before it
// streams into one full buffer, the normalisation runs on that buffer, and the next
// convolution streams out of it and back into it in place.
//
// Every output voxel gets the same kernels, the same operations in the same order as a run of
// the whole graph by Session (the kernels' ConvKernel::run_planes), so the labels equal the
// argmax of Session's output bit for bit, for any thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "voxinfer/core/tensor.h"
#include "voxinfer/graph/session.h"

namespace voxinfer::graph {

struct StreamingStats {
  std::int64_t ring_bytes = 0;    // input rings and per-chunk outputs of all convolutions
  std::int64_t full_bytes = 0;    // whole activations kept for normalisations (0 without)
  std::int64_t planes_held = 0;   // ring planes of all convolutions together
  int convolutions = 0, normalisations = 0;
};

class StreamingArgmax {
 public:
  // The executor for `session`'s network on inputs of `input_shape` ([1, C, D, H, W]), or null
  // with the reason in `why` when the graph is not such a chain or a layer's kernel cannot
  // stream. `threads` as SessionOptions::threads (0: leave the current setting).
  static std::unique_ptr<StreamingArgmax> create(Session& session, const Shape& input_shape, int threads,
                                                 std::string* why = nullptr);
  ~StreamingArgmax();
  StreamingArgmax(const StreamingArgmax&) = delete;
  StreamingArgmax& operator=(const StreamingArgmax&) = delete;

  // The index of the largest output channel per voxel (the first on ties), as f32 [1, D, H, W]:
  // what argmax over the channels of the network's output gives. `input`: plain f32 of the
  // shape given to create(); the executor lets go of it once the first stage has read it (pass
  // it with std::move so that its memory goes then).
  Tensor run(Tensor input);
  // The network's output itself, f32 [1, K, D, H, W] (activations still streamed; the output
  // is whole): equal bit for bit to Session::run's.
  Tensor run_output(const Tensor& input);

  // Bytes the executor allocates besides the input and the labels.
  StreamingStats stats() const;

 private:
  struct Impl;
  explicit StreamingArgmax(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// False when VOXINFER_STREAMING=0 asks for whole-graph runs (to compare both paths); true
// when it is unset or 1. Other values are invalid_input errors naming the variable.
bool streaming_enabled_from_env();

}  // namespace voxinfer::graph
