// Memory layouts: plain (row-major over the logical shape) and the channel-blocked
// layouts the convolution kernels use. A blocked tensor keeps its logical shape
// ([N,C,D,H,W] or [O,I,D,H,W]); channels are padded up to the block with zeros.
#pragma once

#include <cstdint>
#include <string_view>

namespace voxinfer {

enum class Layout : std::uint8_t {
  plain,
  nCdhw8c,      // activations [N][C/8][D][H][W][8c]
  nCdhw16c,     // activations [N][C/16][D][H][W][16c]
  OIdhw8i8o,    // weights [O/8][I/8][D][H][W][8i][8o]
  OIdhw16i16o,  // weights [O/16][I/16][D][H][W][16i][16o]
};

constexpr int layout_block(Layout l) noexcept {
  switch (l) {
    case Layout::plain: return 1;
    case Layout::nCdhw8c: case Layout::OIdhw8i8o: return 8;
    case Layout::nCdhw16c: case Layout::OIdhw16i16o: return 16;
  }
  return 1;
}

constexpr bool layout_is_weights(Layout l) noexcept {
  return l == Layout::OIdhw8i8o || l == Layout::OIdhw16i16o;
}

constexpr std::string_view layout_name(Layout l) noexcept {
  switch (l) {
    case Layout::plain: return "plain";
    case Layout::nCdhw8c: return "nCdhw8c";
    case Layout::nCdhw16c: return "nCdhw16c";
    case Layout::OIdhw8i8o: return "OIdhw8i8o";
    case Layout::OIdhw16i16o: return "OIdhw16i16o";
  }
  return "?";
}

constexpr std::int64_t round_up(std::int64_t x, std::int64_t m) noexcept { return (x + m - 1) / m * m; }

}  // namespace voxinfer
