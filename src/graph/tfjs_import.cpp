// TF.js layers model importer (model.json + weight shards).
#include "voxinfer/graph/tfjs_import.h"

namespace voxinfer::graph {

Graph import_tfjs(const std::string& path) {
  throw Error(ErrorCode::unsupported, path + ": TF.js/Keras models are not supported yet");
}

}  // namespace voxinfer::graph
