// Tensor: a typed n-d view over 64-byte-aligned storage that views share. Views
// (slice, permute, reshape) never copy; contiguous() and clone() do.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <string>
#include <vector>

#include "voxinfer/core/dtype.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/layout.h"
#include "voxinfer/core/shape.h"

namespace voxinfer {

inline constexpr std::size_t kTensorAlignment = 64;

// Allocates zeroed, 64-byte-aligned bytes owned by a shared_ptr. Large blocks (1 MiB and up)
// are mapped straight from the operating system: pages count towards the resident size only
// once written, and freeing returns them at once (the C heap may keep them).
std::shared_ptr<std::byte> aligned_bytes(std::size_t nbytes);

class Tensor {
 public:
  using Strides = std::array<std::int64_t, Shape::kMaxRank>;

  Tensor() = default;

  // Allocates a zero-filled tensor. Blocked layouts pad the channel axes to the block.
  Tensor(const Shape& shape, DType dtype, Layout layout = Layout::plain)
      : shape_(shape), strides_(shape.contiguous_strides()), dtype_(dtype), layout_(layout) {
    if (layout != Layout::plain) {
      VOXINFER_CHECK(shape.rank() == 5, invalid_input,
                     std::string("layout ") + std::string(layout_name(layout)) + " needs a rank-5 shape, got " + shape.str());
    }
    holder_ = aligned_bytes(physical_numel() * dtype_size(dtype));
    data_ = static_cast<std::byte*>(holder_.get());
  }

  // A view of memory owned elsewhere (an arena, a mapped file). `owner` keeps it alive if given.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner = {},
                     Layout layout = Layout::plain) {
    Tensor t;
    t.shape_ = shape;
    t.strides_ = shape.contiguous_strides();
    t.dtype_ = dtype;
    t.layout_ = layout;
    t.holder_ = std::move(owner);
    t.data_ = static_cast<std::byte*>(data);
    return t;
  }

  template <typename T>
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values) {
    VOXINFER_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(), invalid_input,
                   "from_vector: " + std::to_string(values.size()) + " values for shape " + shape.str());
    Tensor t(shape, dtype_of_v<T>);
    if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(T));
    return t;
  }

  bool defined() const noexcept { return data_ != nullptr; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return shape_.rank(); }
  std::int64_t dim(int axis) const { return shape_.dim(axis); }
  DType dtype() const noexcept { return dtype_; }
  Layout layout() const noexcept { return layout_; }
  const Strides& strides() const noexcept { return strides_; }
  std::int64_t stride(int axis) const { return strides_[static_cast<std::size_t>(shape_.normalize_axis(axis))]; }
  std::int64_t numel() const noexcept { return shape_.numel(); }

  // Elements the storage holds, including the zero padding of blocked layouts.
  std::int64_t physical_numel() const noexcept {
    if (layout_ == Layout::plain) return shape_.numel();
    const int b = layout_block(layout_);
    std::int64_t n = round_up(shape_[1], b) * shape_[2] * shape_[3] * shape_[4];
    n *= layout_is_weights(layout_) ? round_up(shape_[0], b) : shape_[0];
    return n;
  }
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(physical_numel()) * dtype_size(dtype_); }

  void* raw() noexcept { return data_; }
  const void* raw() const noexcept { return data_; }
  template <typename T> T* data() {
    check_type<T>();
    return reinterpret_cast<T*>(data_);
  }
  template <typename T> const T* data() const {
    check_type<T>();
    return reinterpret_cast<const T*>(data_);
  }

  bool is_contiguous() const noexcept {
    if (layout_ != Layout::plain) return true;
    std::int64_t acc = 1;
    for (int i = rank() - 1; i >= 0; --i) {
      const auto k = static_cast<std::size_t>(i);
      if (shape_[i] != 1 && strides_[k] != acc) return false;
      acc *= shape_[i];
    }
    return true;
  }

  // Element offset (in elements) of a multi-index, honouring strides.
  std::int64_t offset_of(std::span<const std::int64_t> idx) const {
    VOXINFER_CHECK(layout_ == Layout::plain, invalid_input, "element access needs a plain layout");
    VOXINFER_CHECK(static_cast<int>(idx.size()) == rank(), invalid_input,
                   "index of rank " + std::to_string(idx.size()) + " for a tensor of shape " + shape_.str());
    std::int64_t off = 0;
    for (int i = 0; i < rank(); ++i) {
      const auto k = static_cast<std::size_t>(i);
      VOXINFER_CHECK(idx[k] >= 0 && idx[k] < shape_[i], invalid_input,
                     "index " + std::to_string(idx[k]) + " out of range on axis " + std::to_string(i) + " of " + shape_.str());
      off += idx[k] * strides_[k];
    }
    return off;
  }

  // Checked typed element access, meant for tests and small tensors.
  template <typename T, typename... I> T& at(I... idx) {
    const std::array<std::int64_t, sizeof...(I)> a{static_cast<std::int64_t>(idx)...};
    return data<T>()[offset_of(a)];
  }
  template <typename T, typename... I> const T& at(I... idx) const {
    const std::array<std::int64_t, sizeof...(I)> a{static_cast<std::int64_t>(idx)...};
    return data<T>()[offset_of(a)];
  }

  // View of [begin, end) with a step along one axis.
  Tensor slice(int axis, std::int64_t begin, std::int64_t end, std::int64_t step = 1) const {
    require_plain("slice");
    const int a = shape_.normalize_axis(axis);
    VOXINFER_CHECK(step > 0 && begin >= 0 && begin <= end && end <= shape_[a], invalid_input,
                   "slice [" + std::to_string(begin) + "," + std::to_string(end) + ") step " + std::to_string(step) +
                       " is out of range on axis " + std::to_string(axis) + " of " + shape_.str());
    Tensor t = *this;
    t.data_ = data_ + begin * strides_[static_cast<std::size_t>(a)] * static_cast<std::int64_t>(dtype_size(dtype_));
    t.shape_[a] = (end - begin + step - 1) / step;
    t.strides_[static_cast<std::size_t>(a)] *= step;
    return t;
  }

  // View with axes reordered: result axis i is source axis perm[i].
  Tensor permute(std::span<const int> perm) const {
    require_plain("permute");
    VOXINFER_CHECK(static_cast<int>(perm.size()) == rank(), invalid_input, "permute: wrong number of axes");
    Tensor t = *this;
    std::array<bool, Shape::kMaxRank> seen{};
    for (int i = 0; i < rank(); ++i) {
      const int p = perm[static_cast<std::size_t>(i)];
      VOXINFER_CHECK(p >= 0 && p < rank() && !seen[static_cast<std::size_t>(p)], invalid_input, "permute: not a permutation");
      seen[static_cast<std::size_t>(p)] = true;
      t.shape_[i] = shape_[p];
      t.strides_[static_cast<std::size_t>(i)] = strides_[static_cast<std::size_t>(p)];
    }
    return t;
  }

  // Same storage with a new shape; the tensor must be contiguous.
  Tensor reshape(const Shape& shape) const {
    require_plain("reshape");
    VOXINFER_CHECK(is_contiguous(), invalid_input, "reshape of a non-contiguous view; call contiguous() first");
    VOXINFER_CHECK(shape.numel() == numel(), invalid_input, "cannot reshape " + shape_.str() + " to " + shape.str());
    Tensor t = *this;
    t.shape_ = shape;
    t.strides_ = shape.contiguous_strides();
    return t;
  }

  // A contiguous copy (or this tensor, if already contiguous).
  Tensor contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
  }

  // A deep, contiguous copy.
  Tensor clone() const {
    Tensor out(shape_, dtype_, layout_);
    if (layout_ != Layout::plain || is_contiguous()) {
      std::memcpy(out.data_, data_, nbytes());
      return out;
    }
    copy_strided(out);
    return out;
  }

  bool shares_storage_with(const Tensor& o) const noexcept { return holder_ && holder_ == o.holder_; }
  // True when this tensor is the only owner of its storage (no other tensor or view holds it).
  bool owns_storage_alone() const noexcept { return holder_ && holder_.use_count() == 1; }

 private:
  template <typename T> void check_type() const {
    if constexpr (!std::is_same_v<T, std::byte> && !std::is_same_v<T, void>) {
      VOXINFER_CHECK(dtype_ == dtype_of_v<std::remove_const_t<T>>, invalid_input,
                     std::string("tensor holds ") + std::string(dtype_name(dtype_)) + ", accessed as " +
                         std::string(dtype_name(dtype_of_v<std::remove_const_t<T>>)));
    }
  }
  void require_plain(const char* what) const {
    VOXINFER_CHECK(layout_ == Layout::plain, invalid_input, std::string(what) + " needs a plain layout; reorder first");
  }
  void copy_strided(Tensor& out) const {
    const std::size_t es = dtype_size(dtype_);
    const std::int64_t n = numel();
    std::array<std::int64_t, Shape::kMaxRank> idx{};
    std::byte* dst = out.data_;
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t off = 0;
      for (int a = 0; a < rank(); ++a) off += idx[static_cast<std::size_t>(a)] * strides_[static_cast<std::size_t>(a)];
      std::memcpy(dst + static_cast<std::size_t>(i) * es, data_ + off * static_cast<std::int64_t>(es), es);
      for (int a = rank() - 1; a >= 0; --a) {
        if (++idx[static_cast<std::size_t>(a)] < shape_[a]) break;
        idx[static_cast<std::size_t>(a)] = 0;
      }
    }
  }

  std::shared_ptr<void> holder_;
  std::byte* data_ = nullptr;
  Shape shape_;
  Strides strides_{};
  DType dtype_ = DType::f32;
  Layout layout_ = Layout::plain;
};

}  // namespace voxinfer
