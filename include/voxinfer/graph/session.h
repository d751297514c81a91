// Session: load a model once, run it many times. A new set of input shapes is planned
// once (constant folding of shape sub-graphs, operator preparation and weight packing,
// arena layout) and the plan is cached.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "voxinfer/core/tensor.h"
#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

// Which convolution kernels a Session runs. `optimized`: the first kernel that accepts the
// layer for active_isa(), which is the generic blocked kernel when the ISA is capped to
// generic (VOXINFER_MAX_ISA) or the CPU has no AVX2. `reference`: the plain reference loops
// (the oracle, many times slower), to check a model or a kernel against them. `from_env`:
// VOXINFER_KERNELS=optimized|reference decides, optimized when it is unset.
enum class KernelChoice { from_env, optimized, reference };

// The choice VOXINFER_KERNELS makes; throws invalid_input naming the variable on other values.
KernelChoice kernel_choice_from_env();

struct SessionOptions {
  int threads = 0;        // 0: VOXINFER_NUM_THREADS or all cores
  bool optimize = true;   // run the graph passes (BN folding, activation fusion, ...)
  bool profile = false;   // time every step (see Session::profile())
  KernelChoice kernels = KernelChoice::from_env;
};

// Accumulated time per node while profiling.
struct StepProfile {
  std::string node, op, kernel;
  double ms = 0;
  std::int64_t flops = 0;
  int runs = 0;
};

// The kernel of one step that had several to choose from, and why those tried before it
// declined ("kernel: reason" per entry).
struct KernelChoiceNote {
  std::string node, op, kernel;
  std::vector<std::string> declined;
};

struct PlanStats {
  std::int64_t arena_bytes = 0;       // planned peak of the activation arena
  std::int64_t activation_bytes = 0;  // sum of all intermediate tensors (what a naive executor holds)
  std::int64_t output_bytes = 0;
  std::int64_t workspace_bytes = 0;
  std::int64_t flops = 0;
  int steps = 0;                      // nodes run per inference
  int folded = 0;                     // nodes folded to constants at plan time
  int inplace = 0, aliased = 0;       // outputs written over an input / sharing an input's buffer
  int reorders = 0;                   // layout reorders per run (only at blocked/plain boundaries)
  int blocked_values = 0;             // intermediate tensors kept in a blocked layout
  int concat_in_place = 0;            // Concat inputs written straight into the Concat's output
  std::map<std::string, int> kernels; // kernel name -> count
  std::vector<KernelChoiceNote> kernel_choices;  // convolutions, in execution order
  std::map<std::string, int> ops;     // op type -> count of nodes run
};

// Loads a model file: ONNX (.onnx) or a TF.js/Keras layers model (model.json).
Graph load_model(const std::string& path);

class Session {
 public:
  explicit Session(Graph graph, SessionOptions options = {});
  static Session from_file(const std::string& path, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  const Graph& graph() const;
  const std::vector<ValueInfo>& inputs() const;
  const std::vector<ValueInfo>& outputs() const;

  // Runs with inputs in the order of inputs(); returns outputs in the order of outputs().
  // Throws invalid_input naming the input when a name, rank, dtype or dimension is wrong.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);
  std::map<std::string, Tensor> run(const std::map<std::string, Tensor>& inputs);

  // Per-step times accumulated over the runs since profiling was enabled (empty unless
  // SessionOptions::profile), slowest first.
  std::vector<StepProfile> profile() const;

  // Plans (or reuses the plan) for these input shapes and reports its statistics.
  PlanStats plan_stats(const std::vector<Shape>& input_shapes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace voxinfer::graph
