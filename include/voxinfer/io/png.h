// Minimal PNG writer (8-bit gray, RGB or RGBA, zlib-compressed), for previews.
#pragma once

#include <cstdint>
#include <string>

namespace voxinfer {

// Writes `width` x `height` pixels of `channels` (1, 3 or 4) bytes each, row-major from
// the top row. The file appears atomically.
void write_png(const std::string& path, int width, int height, int channels, const std::uint8_t* pixels);

}  // namespace voxinfer
