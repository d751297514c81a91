// PNG encoding: signature, IHDR, one IDAT (zlib stream of filter-0 scanlines), IEND,
// each chunk with its CRC-32 (zlib's crc32).
#include "voxinfer/io/png.h"

#include <zlib.h>

#include <vector>

#include "io/atomic_file.h"
#include "voxinfer/core/error.h"

namespace voxinfer {
namespace {

void put32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<std::uint8_t>((x >> s) & 0xff));
}

void chunk(std::vector<std::uint8_t>& out, const char type[4], const std::vector<std::uint8_t>& data) {
  put32(out, static_cast<std::uint32_t>(data.size()));
  const std::size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  const auto crc = crc32(0L, out.data() + start, static_cast<uInt>(out.size() - start));
  put32(out, static_cast<std::uint32_t>(crc));
}

}  // namespace

void write_png(const std::string& path, int width, int height, int channels, const std::uint8_t* pixels) {
  VOXINFER_CHECK(width > 0 && height > 0 && width <= 1 << 15 && height <= 1 << 15, invalid_input, path + ": bad PNG size");
  VOXINFER_CHECK(channels == 1 || channels == 3 || channels == 4, invalid_input, path + ": PNG needs 1, 3 or 4 channels");
  const std::size_t row = static_cast<std::size_t>(width) * static_cast<std::size_t>(channels);
  std::vector<std::uint8_t> raw;
  raw.reserve((row + 1) * static_cast<std::size_t>(height));
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    raw.insert(raw.end(), pixels + static_cast<std::size_t>(y) * row, pixels + static_cast<std::size_t>(y + 1) * row);
  }
  uLongf zlen = compressBound(static_cast<uLong>(raw.size()));
  std::vector<std::uint8_t> z(zlen);
  if (compress2(z.data(), &zlen, raw.data(), static_cast<uLong>(raw.size()), 6) != Z_OK)
    throw Error(ErrorCode::internal, path + ": PNG compression failed");
  z.resize(zlen);
  std::vector<std::uint8_t> out{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<std::uint8_t> ihdr;
  put32(ihdr, static_cast<std::uint32_t>(width));
  put32(ihdr, static_cast<std::uint32_t>(height));
  ihdr.push_back(8);
  ihdr.push_back(channels == 1 ? 0 : channels == 3 ? 2 : 6);
  ihdr.push_back(0);
  ihdr.push_back(0);
  ihdr.push_back(0);
  chunk(out, "IHDR", ihdr);
  chunk(out, "IDAT", z);
  chunk(out, "IEND", {});
  AtomicFile f(path);
  f.write(out.data(), out.size());
  f.commit();
}

}  // namespace voxinfer
