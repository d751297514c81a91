// ONNX importer: a .onnx file (protobuf ModelProto, opsets 7-21 of the default domain,
// external-data weights) into voxinfer's graph IR.
#pragma once

#include <string>

#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

// Throws voxinfer::Error (invalid_model / unsupported) naming the file, node, op or
// attribute it cannot honour; io when the file cannot be read.
Graph import_onnx(const std::string& path);

// Parses a model from memory; `base_dir` resolves external-data files.
Graph import_onnx_bytes(const std::string& bytes, const std::string& name, const std::string& base_dir);

}  // namespace voxinfer::graph
