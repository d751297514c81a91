// Writes a volume (NIfTI, NRRD, MHA) as a CT DICOM series, one file per slice, for the DICOM
// node tests: make_ct_series IN.nii.gz OUT_DIR SERIES_UID [DESCRIPTION [MODALITY]]
// Values are stored as signed 16-bit integers (rounded), slope 1, intercept 0; the geometry
// (origin, spacing, direction) is the volume's. An empty SERIES_UID writes a series that
// lacks a valid Series Instance UID (a malformed instance for the node to refuse).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "io/dicom_writer.h"
#include "voxinfer/io/image_io.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: make_ct_series IN OUT_DIR SERIES_UID [DESCRIPTION [MODALITY]]\n");
    return 2;
  }
  const voxinfer::Volume v = voxinfer::read_volume(argv[1]);
  const std::string out = argv[2], series = argv[3], description = argc > 4 ? argv[4] : "test series";
  const std::string modality = argc > 5 ? argv[5] : "CT";
  std::filesystem::create_directories(out);
  const auto& g = v.geometry;
  const float* p = v.channel(0);
  for (std::int64_t k = 0; k < v.nz(); ++k) {
    voxinfer::test::SliceSpec s;
    s.series_uid = series;
    s.modality = modality;
    s.study_uid = "1.2.826.0.1.3680043.9.9999.20";
    s.frame_of_reference = "1.2.826.0.1.3680043.9.9999.21";
    s.sop_instance = (series.empty() ? std::string("1.2.826.0.1.3680043.9.9999.22") : series) + "." + std::to_string(k + 1);
    s.instance = static_cast<int>(k + 1);
    s.rows = static_cast<int>(v.ny());
    s.columns = static_cast<int>(v.nx());
    for (int a = 0; a < 3; ++a) {
      s.position[a] = g.origin[a] + static_cast<double>(k) * g.spacing[2] * g.direction(a, 2);
      s.orientation[a] = g.direction(a, 0);
      s.orientation[3 + a] = g.direction(a, 1);
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g\\%.6g", g.spacing[1], g.spacing[0]);
    s.pixel_spacing = buf;
    std::snprintf(buf, sizeof buf, "%.6g", g.spacing[2]);
    s.slice_thickness = buf;
    s.pixel_representation = 1;
    s.pixels.resize(static_cast<std::size_t>(v.nx() * v.ny()));
    for (std::int64_t j = 0; j < v.ny(); ++j)
      for (std::int64_t i = 0; i < v.nx(); ++i) {
        const float x = p[i + v.nx() * (j + v.ny() * k)];
        const auto q = static_cast<std::int16_t>(std::lround(std::fmin(32767.f, std::fmax(-32768.f, x))));
        s.pixels[static_cast<std::size_t>(i + v.nx() * j)] = static_cast<std::uint16_t>(q);
      }
    s.extra.emplace_back(0x0018, 0x0015, "CS", "ABDOMEN");
    s.extra.emplace_back(0x0008, 0x103E, "LO", description);
    std::snprintf(buf, sizeof buf, "/slice_%04lld.dcm", static_cast<long long>(k + 1));
    voxinfer::test::write_slice(out + buf, s);
  }
  return 0;
}
