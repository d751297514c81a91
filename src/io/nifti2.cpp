// NIfTI-2 reader (540-byte header, 64-bit dims). ITK 5.2 reads only NIfTI-1, so this
// small reader follows the NIfTI-2 header layout and ITK's NIfTI-1 conventions for the
// geometry (sform when its code is set, else qform, else pixdim), converted to LPS.
#include <zlib.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "io/nifti2.h"
#include "voxinfer/core/threading.h"

namespace voxinfer {
namespace {

constexpr int kHeaderSize = 540;

template <typename T>
T field(const unsigned char* h, std::size_t offset, bool swap) {
  T v;
  std::memcpy(&v, h + offset, sizeof(T));
  if (swap) {
    auto* b = reinterpret_cast<unsigned char*>(&v);
    for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  }
  return v;
}

struct GzFile {
  gzFile f = nullptr;
  explicit GzFile(const std::string& path) : f(gzopen(path.c_str(), "rb")) {}
  ~GzFile() {
    if (f) gzclose(f);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  // Reads exactly n bytes (in chunks, as gzread takes an unsigned count); false if short.
  bool read(void* dst, std::uint64_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::uint64_t>(n, 1u << 30));
      const int got = gzread(f, p, chunk);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<std::uint64_t>(got);
    }
    return true;
  }
};

template <typename T>
void convert(const unsigned char* src, float* dst, std::int64_t n, bool swap, double slope, double inter) {
  parallel_for(n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      T v;
      std::memcpy(&v, src + static_cast<std::size_t>(i) * sizeof(T), sizeof(T));
      if (swap) {
        auto* c = reinterpret_cast<unsigned char*>(&v);
        for (std::size_t k = 0; k < sizeof(T) / 2; ++k) std::swap(c[k], c[sizeof(T) - 1 - k]);
      }
      dst[i] = static_cast<float>(static_cast<double>(v) * slope + inter);
    }
  });
}

}  // namespace

bool is_nifti2_file(const std::string& path) {
  GzFile g(path);
  unsigned char h[4];
  if (!g.f || !g.read(h, 4)) return false;
  std::int32_t size;
  std::memcpy(&size, h, 4);
  return size == kHeaderSize || field<std::int32_t>(h, 0, true) == kHeaderSize;
}

Volume read_nifti2(const std::string& path, std::int64_t max_voxels) {
  const std::string what = path + ": ";
  GzFile g(path);
  if (!g.f) throw Error(ErrorCode::io, what + "cannot open for reading");
  unsigned char h[kHeaderSize];
  if (!g.read(h, kHeaderSize)) throw Error(ErrorCode::invalid_input, what + "truncated NIfTI-2 header");
  const bool swap = field<std::int32_t>(h, 0, false) != kHeaderSize;
  if (field<std::int32_t>(h, 0, swap) != kHeaderSize) throw Error(ErrorCode::invalid_input, what + "not a NIfTI-2 file");
  const bool pair = std::memcmp(h + 4, "ni2", 4) == 0;
  if (!pair && std::memcmp(h + 4, "n+2", 4) != 0)
    throw Error(ErrorCode::invalid_input, what + "bad NIfTI-2 magic");

  const auto datatype = field<std::int16_t>(h, 12, swap);
  std::array<std::int64_t, 8> dim{};
  std::array<double, 8> pixdim{};
  for (int i = 0; i < 8; ++i) {
    dim[static_cast<std::size_t>(i)] = field<std::int64_t>(h, 16 + 8 * static_cast<std::size_t>(i), swap);
    pixdim[static_cast<std::size_t>(i)] = field<double>(h, 104 + 8 * static_cast<std::size_t>(i), swap);
  }
  const auto vox_offset = field<std::int64_t>(h, 168, swap);
  double slope = field<double>(h, 176, swap), inter = field<double>(h, 184, swap);
  if (slope == 0 || !std::isfinite(slope) || !std::isfinite(inter)) {
    slope = 1;
    inter = 0;
  }
  const auto qform_code = field<std::int32_t>(h, 344, swap), sform_code = field<std::int32_t>(h, 348, swap);

  if (dim[0] < 2 || dim[0] > 7) throw Error(ErrorCode::invalid_input, what + "NIfTI-2 dim[0] = " + std::to_string(dim[0]));
  for (int i = 5; i <= dim[0]; ++i)
    if (dim[static_cast<std::size_t>(i)] > 1)
      throw Error(ErrorCode::invalid_input, what + "NIfTI-2 images with more than 4 dimensions are not supported");
  std::int64_t n[4] = {1, 1, 1, 1}, total = 1;
  for (int i = 0; i < std::min<std::int64_t>(dim[0], 4); ++i) {
    n[i] = dim[static_cast<std::size_t>(i) + 1];
    if (n[i] <= 0) throw Error(ErrorCode::invalid_input, what + "dimension " + std::to_string(i) + " has size " + std::to_string(n[i]));
    if (total > max_voxels / n[i])
      throw Error(ErrorCode::invalid_input, what + "the header claims more than " + std::to_string(max_voxels) +
                                                " voxels; refusing to allocate it (corrupt header?)");
    total *= n[i];
  }
  std::size_t bytes = 0;
  switch (datatype) {
    case 2: case 256: bytes = 1; break;
    case 4: case 512: bytes = 2; break;
    case 8: case 768: case 16: bytes = 4; break;
    case 64: case 1024: case 1280: bytes = 8; break;
    default:
      throw Error(ErrorCode::invalid_input, what + "NIfTI datatype " + std::to_string(datatype) +
                                              " (complex, RGB or other non-scalar data) is not supported");
  }

  // Geometry: voxel -> RAS affine from the sform, the qform or pixdim (ITK's order).
  Eigen::Matrix4d ras = Eigen::Matrix4d::Identity();
  if (sform_code > 0) {
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) ras(r, c) = field<double>(h, 400 + 32 * static_cast<std::size_t>(r) + 8 * static_cast<std::size_t>(c), swap);
    for (int a = 0; a < 3; ++a)
      for (int b = a + 1; b < 3; ++b) {
        const double na = ras.block<3, 1>(0, a).norm(), nb = ras.block<3, 1>(0, b).norm();
        if (na > 0 && nb > 0 && std::abs(ras.block<3, 1>(0, a).dot(ras.block<3, 1>(0, b))) / (na * nb) > 1e-4)
          throw Error(ErrorCode::invalid_input, what + "the sform is sheared (voxel axes are not perpendicular); "
                                                     "voxinfer needs orthogonal axes: resample the image first");
      }
  } else if (qform_code > 0) {
    const double b = field<double>(h, 352, swap), c = field<double>(h, 360, swap), d = field<double>(h, 368, swap);
    const double a = std::sqrt(std::max(0.0, 1.0 - (b * b + c * c + d * d)));
    Eigen::Matrix3d R;
    R << a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c),
        2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b),
        2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b;
    const double qfac = pixdim[0] < 0 ? -1.0 : 1.0;
    ras.topLeftCorner<3, 3>() = R * Eigen::Vector3d(pixdim[1], pixdim[2], qfac * pixdim[3]).asDiagonal();
    ras(0, 3) = field<double>(h, 376, swap);
    ras(1, 3) = field<double>(h, 384, swap);
    ras(2, 3) = field<double>(h, 392, swap);
  } else {
    // No transform: identity LPS direction at the origin, as ITK does for NIfTI-1.
    ras.topLeftCorner<3, 3>() = Eigen::Vector3d(-pixdim[1], -pixdim[2], pixdim[3]).asDiagonal();
  }
  const Geometry geometry = Geometry::from_affine_ras(ras);
  geometry.validate(path);

  std::string data_path = path;
  std::uint64_t offset = static_cast<std::uint64_t>(std::max<std::int64_t>(vox_offset, 0));
  if (pair) {
    const std::filesystem::path p(path);
    data_path = (p.parent_path() / (p.stem().string() + ".img")).string();
    offset = 0;
  }
  const std::uint64_t data_bytes = static_cast<std::uint64_t>(total) * bytes;
  {
    std::error_code ec;
    const auto size = std::filesystem::file_size(data_path, ec);
    const bool compressed = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
    if (!ec && !compressed && size < offset + data_bytes)
      throw Error(ErrorCode::invalid_input, what + "truncated: the header describes " + std::to_string(offset + data_bytes) +
                                                " bytes but the file holds only " + std::to_string(size));
  }
  GzFile data(data_path);
  if (!data.f) throw Error(ErrorCode::io, data_path + ": cannot open for reading");
  if (offset > 0 && gzseek(data.f, static_cast<z_off_t>(offset), SEEK_SET) < 0)
    throw Error(ErrorCode::invalid_input, what + "truncated before the voxel data");
  std::vector<unsigned char> raw(static_cast<std::size_t>(data_bytes));
  if (!data.read(raw.data(), data_bytes))
    throw Error(ErrorCode::invalid_input, what + "truncated: fewer voxel bytes than the header describes");

  Volume vol(n[3], n[2], n[1], n[0], geometry);
  float* dst = vol.data.data<float>();
  switch (datatype) {
    case 2: convert<std::uint8_t>(raw.data(), dst, total, false, slope, inter); break;
    case 256: convert<std::int8_t>(raw.data(), dst, total, false, slope, inter); break;
    case 4: convert<std::int16_t>(raw.data(), dst, total, swap, slope, inter); break;
    case 512: convert<std::uint16_t>(raw.data(), dst, total, swap, slope, inter); break;
    case 8: convert<std::int32_t>(raw.data(), dst, total, swap, slope, inter); break;
    case 768: convert<std::uint32_t>(raw.data(), dst, total, swap, slope, inter); break;
    case 16: convert<float>(raw.data(), dst, total, swap, slope, inter); break;
    case 64: convert<double>(raw.data(), dst, total, swap, slope, inter); break;
    case 1024: convert<std::int64_t>(raw.data(), dst, total, swap, slope, inter); break;
    case 1280: convert<std::uint64_t>(raw.data(), dst, total, swap, slope, inter); break;
    default: break;
  }
  vol.metadata["source_format"] = "NIfTI-2";
  // The on-disk voxel type (NiiVue's conform treats uint8 apart).
  static const std::pair<int, const char*> kTypes[] = {{2, "uint8"},    {4, "int16"},   {8, "int32"},  {16, "float32"},
                                                       {64, "float64"}, {256, "int8"},  {512, "uint16"}, {768, "uint32"},
                                                       {1024, "int64"}, {1280, "uint64"}};
  for (const auto& [code, name] : kTypes)
    if (code == datatype) vol.metadata["voxel_type"] = name;
  return vol;
}

}  // namespace voxinfer
