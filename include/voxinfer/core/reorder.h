// Explicit reorders between the plain layouts (NCDHW activations, OIDHW weights) and the
// channel-blocked layouts. Channel tails that do not fill a block are zero.
#pragma once

#include <cstdint>

#include "voxinfer/core/tensor.h"

namespace voxinfer {

// Offset (in elements) of logical (n, c, d, h, w) in a blocked activation tensor.
inline std::int64_t blocked_act_offset(const Shape& s, int block, std::int64_t n, std::int64_t c, std::int64_t d,
                                       std::int64_t h, std::int64_t w) noexcept {
  const std::int64_t cb = round_up(s[1], block) / block;
  const std::int64_t spatial = s[2] * s[3] * s[4];
  return (((n * cb + c / block) * spatial + (d * s[3] + h) * s[4] + w) * block) + c % block;
}

// Offset of logical (o, i, kd, kh, kw) in a blocked weight tensor ([O/b][I/b][D][H][W][b i][b o]).
inline std::int64_t blocked_wei_offset(const Shape& s, int block, std::int64_t o, std::int64_t i, std::int64_t kd,
                                       std::int64_t kh, std::int64_t kw) noexcept {
  const std::int64_t ib = round_up(s[1], block) / block;
  const std::int64_t spatial = s[2] * s[3] * s[4];
  const std::int64_t blk = ((o / block) * ib + i / block) * spatial + (kd * s[3] + kh) * s[4] + kw;
  return (blk * block + i % block) * block + o % block;
}

// plain f32 [N,C,D,H,W] or [O,I,D,H,W] -> the given blocked layout.
inline Tensor reorder_to_blocked(const Tensor& src_in, Layout layout) {
  VOXINFER_CHECK(src_in.layout() == Layout::plain && src_in.rank() == 5 && src_in.dtype() == DType::f32, invalid_input,
                 "reorder_to_blocked needs a plain rank-5 f32 tensor, got " + src_in.shape().str());
  VOXINFER_CHECK(layout != Layout::plain, invalid_input, "reorder_to_blocked: target layout is plain");
  const Tensor src = src_in.contiguous();
  const Shape& s = src.shape();
  const int b = layout_block(layout);
  Tensor dst(s, DType::f32, layout);
  const float* in = src.data<float>();
  float* out = dst.data<float>();
  const bool wei = layout_is_weights(layout);
  std::int64_t k = 0;
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t c = 0; c < s[1]; ++c)
      for (std::int64_t d = 0; d < s[2]; ++d)
        for (std::int64_t h = 0; h < s[3]; ++h)
          for (std::int64_t w = 0; w < s[4]; ++w, ++k)
            out[wei ? blocked_wei_offset(s, b, a, c, d, h, w) : blocked_act_offset(s, b, a, c, d, h, w)] = in[k];
  return dst;
}

// blocked -> plain f32, dropping the channel padding.
inline Tensor reorder_to_plain(const Tensor& src) {
  if (src.layout() == Layout::plain) return src.contiguous();
  VOXINFER_CHECK(src.dtype() == DType::f32, invalid_input, "reorder_to_plain supports f32 only");
  const Shape& s = src.shape();
  const int b = layout_block(src.layout());
  const bool wei = layout_is_weights(src.layout());
  Tensor dst(s, DType::f32);
  const float* in = src.data<float>();
  float* out = dst.data<float>();
  std::int64_t k = 0;
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t c = 0; c < s[1]; ++c)
      for (std::int64_t d = 0; d < s[2]; ++d)
        for (std::int64_t h = 0; h < s[3]; ++h)
          for (std::int64_t w = 0; w < s[4]; ++w, ++k)
            out[k] = in[wei ? blocked_wei_offset(s, b, a, c, d, h, w) : blocked_act_offset(s, b, a, c, d, h, w)];
  return dst;
}

}  // namespace voxinfer
