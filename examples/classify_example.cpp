// Minimal use of voxinfer as a library: classify a study with a model package.
//   classify_example MODEL_DIR INPUT
#include <cstdio>

#include "voxinfer/core/error.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/classification.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR INPUT\n", argv[0]);
    return 2;
  }
  try {
    voxinfer::ClassificationPipeline pipeline(argv[1]);
    const voxinfer::ClassificationResult result = pipeline.run({voxinfer::read_volume(argv[2])});
    for (const auto& c : result.classes) std::printf("%-24s %.4f\n", c.name.c_str(), c.probability);
  } catch (const voxinfer::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return voxinfer::exit_status(e.code());
  }
  return 0;
}
