// Plans a fuzzed graph on small input shapes (symbolic dimensions set to 4), the way a
// Session does before its first run: shape inference, constant folding, operator
// preparation and the arena layout. Graphs whose inputs would be large are skipped.
#pragma once

#include "voxinfer/graph/session.h"

namespace voxinfer::fuzz {

inline void plan_small(graph::Graph g) {
  graph::SessionOptions options;
  options.threads = 1;
  graph::Session session(std::move(g), options);
  std::vector<Shape> shapes;
  for (const graph::ValueInfo& in : session.inputs()) {
    std::vector<std::int64_t> dims;
    std::int64_t n = 1;
    if (in.dtype != DType::f32 || !in.has_shape) return;
    for (const graph::Dim& d : in.dims) {
      const std::int64_t v = d.value > 0 ? d.value : 4;
      if (v > 4096) return;
      n *= v;
      if (n > (1 << 16)) return;
      dims.push_back(v);
    }
    shapes.push_back(Shape(dims));
  }
  (void)session.plan_stats(shapes);
}

}  // namespace voxinfer::fuzz
