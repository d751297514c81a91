// Shape: up to 8 dimensions held inline (no allocation), with element counts and
// contiguous strides.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "voxinfer/core/error.h"

namespace voxinfer {

class Shape {
 public:
  static constexpr int kMaxRank = 8;
  // Largest element count a shape may describe: its byte size in the widest dtype (8 bytes),
  // and every stride, then fit in 64 bits with room to spare.
  static constexpr std::int64_t kMaxNumel = std::int64_t{1} << 58;

  // Whether dims (non-negative) multiply to at most kMaxNumel, ignoring zeros so that the
  // strides of an empty tensor cannot overflow either. Safe for any input.
  static bool numel_fits(std::span<const std::int64_t> dims) noexcept {
    std::int64_t n = 1;
    for (const std::int64_t d : dims) {
      if (d < 0) return false;
      if (d == 0) continue;
      if (d > kMaxNumel / n) return false;
      n *= d;
    }
    return true;
  }

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(std::span<const std::int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(const std::vector<std::int64_t>& dims) { assign(dims.begin(), dims.end()); }

  int rank() const noexcept { return rank_; }
  std::int64_t operator[](int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t& operator[](int i) noexcept { return dims_[static_cast<std::size_t>(i)]; }
  // Negative axes count from the end, as in numpy and ONNX.
  std::int64_t dim(int axis) const {
    return dims_[static_cast<std::size_t>(normalize_axis(axis))];
  }
  int normalize_axis(int axis) const {
    const int a = axis < 0 ? axis + rank_ : axis;
    VOXINFER_CHECK(a >= 0 && a < std::max(rank_, 1), invalid_input,
                   "axis " + std::to_string(axis) + " is out of range for a rank-" + std::to_string(rank_) + " shape");
    return a;
  }

  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  std::span<const std::int64_t> dims() const noexcept { return {dims_.data(), static_cast<std::size_t>(rank_)}; }
  std::vector<std::int64_t> vec() const { return {dims_.begin(), dims_.begin() + rank_}; }

  void push_back(std::int64_t d) {
    VOXINFER_CHECK(rank_ < kMaxRank, unsupported, "tensors of rank above 8 are not supported");
    VOXINFER_CHECK(d >= 0, invalid_input, "negative dimension " + std::to_string(d) + " in a shape");
    dims_[static_cast<std::size_t>(rank_++)] = d;
    if (!numel_fits(dims())) {
      --rank_;
      fail(ErrorCode::invalid_input, "shape " + str() + " extended by " + std::to_string(d) + " has too many elements");
    }
  }

  // Row-major (C order) strides in elements.
  std::array<std::int64_t, kMaxRank> contiguous_strides() const noexcept {
    std::array<std::int64_t, kMaxRank> s{};
    std::int64_t acc = 1;
    for (int i = rank_ - 1; i >= 0; --i) {
      s[static_cast<std::size_t>(i)] = acc;
      acc *= dims_[static_cast<std::size_t>(i)];
    }
    return s;
  }

  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? "," : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
    return s + "]";
  }

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    return a.rank_ == b.rank_ && std::equal(a.dims_.begin(), a.dims_.begin() + a.rank_, b.dims_.begin());
  }

 private:
  template <typename It>
  void assign(It first, It last) {
    const auto n = std::distance(first, last);
    VOXINFER_CHECK(n <= kMaxRank, unsupported, "tensors of rank above 8 are not supported (got " + std::to_string(n) + ")");
    rank_ = static_cast<int>(n);
    std::int64_t i = 0;
    for (auto it = first; it != last; ++it, ++i) {
      VOXINFER_CHECK(*it >= 0, invalid_input, "negative dimension " + std::to_string(*it) + " in a shape");
      dims_[static_cast<std::size_t>(i)] = *it;
    }
    VOXINFER_CHECK(numel_fits(dims()), invalid_input, "shape " + str() + " has too many elements (more than 2^58)");
  }

  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace voxinfer
