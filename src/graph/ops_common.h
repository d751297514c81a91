// Internal helpers for operator implementations: broadcasting iteration and dtype dispatch.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "graph/op.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/kernels/conv.h"

namespace voxinfer::graph {

// Strides (in elements) of `s` broadcast to `out` (rank aligned on the right, 0 on broadcast axes).
inline std::array<std::int64_t, Shape::kMaxRank> broadcast_strides(const Shape& s, const Shape& out) {
  std::array<std::int64_t, Shape::kMaxRank> st{};
  const auto cs = s.contiguous_strides();
  const int off = out.rank() - s.rank();
  for (int i = 0; i < out.rank(); ++i) {
    const int j = i - off;
    st[static_cast<std::size_t>(i)] = (j < 0 || s[j] == 1) ? 0 : cs[static_cast<std::size_t>(j)];
  }
  return st;
}

// Calls f(dst_index, a_index, b_index) over an output shape with two broadcast inputs,
// parallel over rows of the last axis; f is called for contiguous runs:
// run(dst_off, a_off, a_step, b_off, b_step, count).
template <typename Run>
void broadcast_binary_rows(const Shape& out, const Shape& a, const Shape& b, Run run) {
  const int r = out.rank();
  if (r == 0) {
    run(0, 0, 0, 0, 0, 1);
    return;
  }
  const auto sa = broadcast_strides(a, out), sb = broadcast_strides(b, out);
  const std::int64_t inner = out[r - 1];
  const std::int64_t rows = inner == 0 ? 0 : out.numel() / inner;
  const std::int64_t ia = sa[static_cast<std::size_t>(r - 1)], ib = sb[static_cast<std::size_t>(r - 1)];
  const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(inner, 1));
  parallel_for(rows, grain, [&](std::int64_t rb, std::int64_t re) {
    for (std::int64_t row = rb; row < re; ++row) {
      std::int64_t rem = row, oa = 0, ob = 0;
      for (int d = r - 2; d >= 0; --d) {
        const std::int64_t idx = rem % out[d];
        rem /= out[d];
        oa += idx * sa[static_cast<std::size_t>(d)];
        ob += idx * sb[static_cast<std::size_t>(d)];
      }
      run(row * inner, oa, ia, ob, ib, inner);
    }
  });
}

// Dispatch on a numeric dtype: f(T{}) with T in float, double, int64, int32, (int16, uint8, bool).
template <typename F>
void dispatch_numeric(DType t, const Node& node, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::i64: f(std::int64_t{}); return;
    case DType::i32: f(std::int32_t{}); return;
    case DType::i16: f(std::int16_t{}); return;
    case DType::u8: f(std::uint8_t{}); return;
    default: break;
  }
  throw Error(ErrorCode::unsupported, node.label() + ": dtype " + std::string(dtype_name(t)) + " is not supported");
}

inline std::int64_t norm_axis(std::int64_t axis, int rank, const Node& node) {
  const std::int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= std::max(rank, 1))
    throw Error(ErrorCode::invalid_model, node.label() + ": axis " + std::to_string(axis) + " is out of range for rank " +
                                              std::to_string(rank));
  return a;
}

// The activation fused into a convolution by the passes (voxinfer.activation / alpha / beta
// attributes); Error(invalid_model) naming the node for an unknown one.
kernels::Activation parse_activation(const Node& n, float& alpha, float& beta);

}  // namespace voxinfer::graph
