// Edits a model package asks for after import, for behaviour that a framework adds at run
// time and that is not in the model file (brainchop normalises the output of every
// convolution named "*_gn" of mindgrab per channel; the TF.js model.json does not say so).
#pragma once

#include <string_view>

#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

// True when `name` matches `pattern`, where '*' stands for any run of characters.
bool glob_match(std::string_view pattern, std::string_view name);

// Inserts a parameter-free InstanceNormalization (scale 1, bias 0, population variance,
// `epsilon`) after the output of every Conv node whose name matches `pattern`, so that each
// channel is normalised over its whole spatial extent. Returns how many were inserted;
// a matching node that is not a Conv with a constant weight is Error(invalid_model).
int insert_instance_norm_after(Graph& g, std::string_view pattern, float epsilon);

}  // namespace voxinfer::graph
