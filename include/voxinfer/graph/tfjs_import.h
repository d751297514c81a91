// TensorFlow.js layers / Keras JSON importer: model.json (topology + weightsManifest)
// with its .bin weight shards, channels_last converted to voxinfer's NCDHW at load.
#pragma once

#include <string>

#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

Graph import_tfjs(const std::string& model_json_path);

}  // namespace voxinfer::graph
