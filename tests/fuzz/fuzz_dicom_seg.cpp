// libFuzzer harness: the DICOM SEG reader (preamble and "DICM" added in front of the input).
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "voxinfer/io/dicom_seg.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = voxinfer::fuzz::scratch("seg") / "seg.dcm";
  voxinfer::fuzz::write_file(file,
                             std::string(128, '\0') + "DICM" + std::string(reinterpret_cast<const char*>(data), size));
  try {
    voxinfer::DicomSegInfo info;
    (void)voxinfer::read_dicom_seg(file.string(), {}, &info);
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
