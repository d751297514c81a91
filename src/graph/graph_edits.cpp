// Graph edits requested by a model package (see graph_edits.h).
#include "voxinfer/graph/graph_edits.h"

#include <string>
#include <vector>

#include "voxinfer/core/error.h"

namespace voxinfer::graph {

bool glob_match(std::string_view pattern, std::string_view name) {
  // Iterative wildcard match with backtracking to the last '*'.
  std::size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

int insert_instance_norm_after(Graph& g, std::string_view pattern, float epsilon) {
  std::vector<Node> out;
  out.reserve(g.nodes.size());
  int inserted = 0;
  for (Node& n : g.nodes) {
    if (!glob_match(pattern, n.name)) {
      out.push_back(std::move(n));
      continue;
    }
    if (n.op_type != "Conv" || n.outputs.size() != 1 || n.inputs.size() < 2 || !g.is_constant(n.inputs[1]))
      throw Error(ErrorCode::invalid_model, "per-channel normalisation after '" + std::string(pattern) +
                                                "': " + n.label() + " is not a convolution with constant weights");
    const std::int64_t channels = g.initializers.at(n.inputs[1]).dim(0);
    const std::string y = n.outputs[0];
    const std::string conv_out = y + "__before_norm";
    const std::string scale = n.name + "__norm_scale", bias = n.name + "__norm_bias";
    Tensor ones(Shape{channels}, DType::f32), zeros(Shape{channels}, DType::f32);
    for (std::int64_t c = 0; c < channels; ++c) {
      ones.data<float>()[c] = 1.f;
      zeros.data<float>()[c] = 0.f;
    }
    g.initializers[scale] = ones;
    g.initializers[bias] = zeros;
    // The convolution writes a new value; the normalisation takes over the old name, so
    // consumers and graph outputs need no rewiring.
    Node norm;
    norm.name = n.name + "__norm";
    norm.op_type = "InstanceNormalization";
    norm.inputs = {conv_out, scale, bias};
    norm.outputs = {y};
    norm.attrs["epsilon"] = Attribute::make_float(epsilon);
    n.outputs[0] = conv_out;
    out.push_back(std::move(n));
    out.push_back(std::move(norm));
    ++inserted;
  }
  g.nodes = std::move(out);
  return inserted;
}

}  // namespace voxinfer::graph
