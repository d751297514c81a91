// Minimal use of voxinfer as a library: segment a study with a model package and write
// the label map and the statistics.
//   segment_example MODEL_DIR INPUT OUTPUT.nii.gz
#include <cstdio>

#include "voxinfer/core/error.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/pipeline/segmentation.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR INPUT OUTPUT.nii.gz\n", argv[0]);
    return 2;
  }
  try {
    voxinfer::SegmentationPipeline pipeline(argv[1]);
    const voxinfer::Volume volume = voxinfer::read_volume(argv[2]);  // DICOM folder or image file
    const voxinfer::SegmentationResult result = pipeline.run(volume);
    voxinfer::WriteOptions options;
    options.pixel_type = voxinfer::PixelType::uint8;
    voxinfer::write_image(argv[3], result.labels, options);  // same grid and geometry as the input
    for (const auto& s : result.stats) std::printf("%d %s: %.2f mL\n", s.value, s.name.c_str(), s.volume_ml);
  } catch (const voxinfer::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return voxinfer::exit_status(e.code());
  }
  return 0;
}
