// Parallel reorders of f32 activations between plain NCDHW and the channel-blocked
// nCdhw8c / nCdhw16c layouts, on raw pointers (the graph reorders at layout boundaries).
// Blocked tensors hold round_up(c, block) channels; the padding channels are written as 0.
#pragma once

#include <cstdint>

#include "voxinfer/core/layout.h"

namespace voxinfer::kernels {

// src [n][c][spatial] -> dst [n][ceil(c/block)][spatial][block]. block is 8 or 16.
void reorder_plain_to_blocked(const float* src, float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial,
                              int block);

// src [n][ceil(c/block)][spatial][block] -> dst [n][c][spatial]; the padding channels are dropped.
void reorder_blocked_to_plain(const float* src, float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial,
                              int block);

// Elements of an activation buffer in `layout` (plain, nCdhw8c or nCdhw16c).
inline std::int64_t activation_elements(Layout layout, std::int64_t n, std::int64_t c, std::int64_t spatial) {
  return n * round_up(c, layout_block(layout)) * spatial;
}

// Offset of element (image, ch, position 0) in an activation buffer with channel block
// `block` (1 for plain): image * Cp * spatial + (ch / block) * spatial * block + ch % block.
// Consecutive positions are `block` floats apart.
inline std::int64_t channel_offset(int block, std::int64_t c, std::int64_t spatial, std::int64_t image, std::int64_t ch) {
  return image * round_up(c, block) * spatial + (ch / block) * spatial * block + ch % block;
}

// Writes 0 to the padding channels of a blocked buffer [n][ceil(c/block)][spatial][block]
// (nothing when block divides c).
void zero_channel_padding(float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial, int block);

}  // namespace voxinfer::kernels
