// Shape and data-movement operators: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze,
// Transpose, Concat, Split, Slice, Pad, Expand, Tile, Gather, ScatterND, ConstantOfShape,
// Constant, Cast, Identity, Dropout, Range. Inputs that decide an output shape must be
// constant once the input shapes are known (the Session folds shape sub-graphs).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "graph/ops_common.h"
#include "voxinfer/kernels/reorder.h"

namespace voxinfer::graph {
namespace {

const Tensor& need_const(const Op& op, const std::vector<ValueMeta>& in, int i, const char* what) {
  const auto k = static_cast<std::size_t>(i);
  if (k >= in.size() || !in[k].present)
    throw Error(ErrorCode::invalid_model, op.node().label() + ": input '" + what + "' is missing");
  if (!in[k].constant)
    throw Error(ErrorCode::unsupported, op.node().label() + ": input '" + what +
                                            "' must be known when the input shapes are (it is computed from data)");
  return *in[k].constant;
}

void copy_bytes(const Tensor& src, Tensor& dst) {
  if (src.raw() != dst.raw()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
}

class ShapeOp final : public Op {
 public:
  using Op::Op;
  bool shape_only() const override { return true; }
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    const std::int64_t r = in[0].shape.rank();
    std::int64_t start = node_.get_int("start", 0), end = node_.get_int("end", r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    start_ = std::clamp<std::int64_t>(start, 0, r);
    end_ = std::clamp<std::int64_t>(end, start_, r);
    out[0].shape = Shape{end_ - start_};
    out[0].dtype = DType::i64;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    for (std::int64_t i = start_; i < end_; ++i) out[0]->data<std::int64_t>()[i - start_] = in[0]->shape()[static_cast<int>(i)];
  }

 private:
  std::int64_t start_ = 0, end_ = 0;
};

class SizeOp final : public Op {
 public:
  using Op::Op;
  bool shape_only() const override { return true; }
  void infer(const std::vector<ValueMeta>&, std::vector<ValueMeta>& out) override {
    out[0].shape = Shape{};
    out[0].dtype = DType::i64;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    out[0]->data<std::int64_t>()[0] = in[0]->numel();
  }
};

// Ops whose output is input 0's bytes under a new shape.
class ViewOp : public Op {
 public:
  using Op::Op;
  int alias_input(int) const override { return 0; }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override { copy_bytes(*in[0], *out[0]); }
};

class ReshapeOp final : public ViewOp {
 public:
  using ViewOp::ViewOp;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 2);
    const auto spec = tensor_to_int64s(need_const(*this, in, 1, "shape"));
    const bool allowzero = node_.get_int("allowzero", 0) != 0;
    std::vector<std::int64_t> d(spec.size());
    std::int64_t known = 1;
    int infer_at = -1;
    for (std::size_t i = 0; i < spec.size(); ++i) {
      if (spec[i] == -1) {
        if (infer_at >= 0) fail_model("more than one -1 in the target shape");
        infer_at = static_cast<int>(i);
        continue;
      }
      if (spec[i] == 0 && !allowzero) {
        if (static_cast<int>(i) >= in[0].shape.rank()) fail_model("0 in the target shape beyond the input's rank");
        d[i] = in[0].shape[static_cast<int>(i)];
      } else {
        if (spec[i] < 0) fail_model("negative size in the target shape");
        d[i] = spec[i];
      }
      known *= d[i];
    }
    const std::int64_t n = in[0].shape.numel();
    if (infer_at >= 0) {
      if (known == 0 || n % known != 0) fail_input("cannot reshape " + in[0].shape.str() + " with a -1 in the target");
      d[static_cast<std::size_t>(infer_at)] = n / known;
    } else if (known != n) {
      fail_input("cannot reshape " + in[0].shape.str() + " (" + std::to_string(n) + " elements) to " + Shape(d).str());
    }
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
  }
};

class FlattenOp final : public ViewOp {
 public:
  using ViewOp::ViewOp;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    const int r = in[0].shape.rank();
    std::int64_t axis = node_.get_int("axis", 1);
    if (axis < 0) axis += r;
    if (axis < 0 || axis > r) fail_model("axis out of range");
    std::int64_t a = 1, b = 1;
    for (int i = 0; i < r; ++i) (i < axis ? a : b) *= in[0].shape[i];
    out[0].shape = Shape{a, b};
    out[0].dtype = in[0].dtype;
  }
};

class SqueezeOp final : public ViewOp {
 public:
  using ViewOp::ViewOp;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& s = in[0].shape;
    std::vector<std::int64_t> axes = node_.get_ints("axes");
    if (in.size() > 1 && in[1].present) axes = tensor_to_int64s(need_const(*this, in, 1, "axes"));
    std::vector<bool> drop(static_cast<std::size_t>(s.rank()), false);
    if (axes.empty()) {
      for (int i = 0; i < s.rank(); ++i) drop[static_cast<std::size_t>(i)] = s[i] == 1;
    } else {
      for (auto a : axes) {
        const auto k = norm_axis(a, s.rank(), node_);
        if (s[static_cast<int>(k)] != 1) fail_input("cannot squeeze axis " + std::to_string(a) + " of " + s.str());
        drop[static_cast<std::size_t>(k)] = true;
      }
    }
    std::vector<std::int64_t> d;
    for (int i = 0; i < s.rank(); ++i)
      if (!drop[static_cast<std::size_t>(i)]) d.push_back(s[i]);
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
  }
};

class UnsqueezeOp final : public ViewOp {
 public:
  using ViewOp::ViewOp;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    std::vector<std::int64_t> axes = node_.get_ints("axes");
    if (in.size() > 1 && in[1].present) axes = tensor_to_int64s(need_const(*this, in, 1, "axes"));
    const int r = in[0].shape.rank() + static_cast<int>(axes.size());
    std::vector<bool> ins(static_cast<std::size_t>(r), false);
    for (auto a : axes) {
      const auto k = norm_axis(a, r, node_);
      if (ins[static_cast<std::size_t>(k)]) fail_model("repeated axis");
      ins[static_cast<std::size_t>(k)] = true;
    }
    std::vector<std::int64_t> d;
    int j = 0;
    for (int i = 0; i < r; ++i) d.push_back(ins[static_cast<std::size_t>(i)] ? 1 : in[0].shape[j++]);
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
  }
};

class IdentityOp final : public ViewOp {
 public:
  using ViewOp::ViewOp;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    out[0].shape = in[0].shape;
    out[0].dtype = in[0].dtype;
    if (out.size() > 1) {  // Dropout's mask
      out[1].shape = in[0].shape;
      out[1].dtype = DType::boolean;
    }
  }
  int alias_input(int o) const override { return o == 0 ? 0 : -1; }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    copy_bytes(*in[0], *out[0]);
    if (out.size() > 1 && out[1]) std::memset(out[1]->raw(), 1, out[1]->nbytes());
  }
};

class TransposeOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    const int r = in[0].shape.rank();
    auto p = node_.get_ints("perm");
    if (p.empty())
      for (int i = r - 1; i >= 0; --i) p.push_back(i);
    if (static_cast<int>(p.size()) != r) fail_model("perm has " + std::to_string(p.size()) + " axes for rank " + std::to_string(r));
    perm_.assign(p.begin(), p.end());
    std::vector<std::int64_t> d;
    for (auto a : p) d.push_back(in[0].shape[static_cast<int>(norm_axis(a, r, node_))]);
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    Tensor v = in[0]->permute(perm_);
    Tensor c = v.clone();
    std::memcpy(out[0]->raw(), c.raw(), c.nbytes());
  }

 private:
  std::vector<int> perm_;
};

// Concat. Along channels of rank-5 f32 tensors it also works on channel-blocked layouts
// (nCdhw8c/16c) when every input but the last has a whole number of blocks, so that U-Net
// skip connections stay blocked. An input whose data already sits at its place in the output
// (the planner puts it there: "Concat without copies") is not copied.
class ConcatOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    if (in.empty()) fail_model("needs inputs");
    const Shape& s0 = in[0].shape;
    axis_ = static_cast<int>(norm_axis(node_.get_int("axis", 1), s0.rank(), node_));
    Shape s = s0;
    std::int64_t total = 0;
    channels_.clear();
    for (std::size_t i = 0; i < in.size(); ++i) {
      const Shape& si = in[i].shape;
      if (in[i].dtype != in[0].dtype) fail_model("input dtypes differ");
      if (si.rank() != s0.rank()) fail_input("input " + std::to_string(i) + " has rank " + std::to_string(si.rank()) + ", expected " + std::to_string(s0.rank()));
      for (int k = 0; k < s0.rank(); ++k)
        if (k != axis_ && si[k] != s0[k])
          fail_input("dimension mismatch: input 0 is " + s0.str() + ", input " + std::to_string(i) + " is " + si.str() +
                     " (only axis " + std::to_string(axis_) + " may differ)");
      total += si[axis_];
      channels_.push_back(si[axis_]);
    }
    s[axis_] = total;
    out[0].shape = s;
    out[0].dtype = in[0].dtype;
    blockable_ = axis_ == 1 && s.rank() == 5 && in[0].dtype == DType::f32;
  }

  bool accepts_input_layout(int i, Layout l) const override {
    if (l == Layout::plain) return true;
    if (!blockable_ || layout_is_weights(l)) return false;
    const int b = layout_block(l);
    for (std::size_t k = 0; k + 1 < channels_.size(); ++k)
      if (channels_[k] % b) return false;
    return i >= 0 && i < static_cast<int>(channels_.size());
  }
  // Blocked output when an input arrives blocked and the block divides the channel offsets.
  Layout preferred_output_layout(int) const override {
    for (Layout l : in_layouts_)
      if (l != Layout::plain && accepts_input_layout(0, l)) return l;
    return Layout::plain;
  }
  void set_layouts(const std::vector<Layout>& in, const std::vector<Layout>& out) override {
    in_layouts_ = in;
    out_layout_ = out.empty() ? Layout::plain : out[0];
  }
  int reorders() const override {
    int n = 0;
    for (Layout l : in_layouts_) n += l != out_layout_;
    return n;
  }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    bool mixed = out_layout_ != Layout::plain;
    for (Layout l : in_layouts_) mixed = mixed || l != Layout::plain;
    if (mixed) {
      run_blocked(in, out);
      return;
    }
    const Shape& s = out[0]->shape();
    std::int64_t outer = 1, inner = dtype_size(out[0]->dtype());
    for (int k = 0; k < axis_; ++k) outer *= s[k];
    for (int k = axis_ + 1; k < s.rank(); ++k) inner *= s[k];
    const std::int64_t out_row = s[axis_] * inner;
    auto* dst = static_cast<std::byte*>(out[0]->raw());
    std::int64_t col = 0;
    for (const Tensor* t : in) {
      const std::int64_t row = t->shape()[axis_] * inner;
      const auto* src = static_cast<const std::byte*>(t->raw());
      if (!(outer == 1 && src == dst + col))  // already in place
        parallel_for(outer, std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(row, 1)), [&](std::int64_t b, std::int64_t e) {
          for (std::int64_t o = b; o < e; ++o)
            std::memcpy(dst + o * out_row + col, src + o * row, static_cast<std::size_t>(row));
        });
      col += row;
    }
  }

 private:
  // Channels of input i go to channels [off, off + C_i) of the output; either side may be
  // blocked (element (n, c, x) at n*Cp*sp + (c/b)*sp*b + x*b + c%b, b = 1 when plain).
  void run_blocked(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) {
    const Shape& s = out[0]->shape();
    const std::int64_t n = s[0], c = s[1], sp = s.numel() / (n * c);
    const int bo = layout_block(out_layout_);
    const std::int64_t cpo = round_up(c, bo);
    float* d = out[0]->data<float>();
    std::int64_t off = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
      const std::int64_t ci = channels_[i];
      const int bi = layout_block(in_layouts_[i]);
      const std::int64_t cpi = round_up(ci, bi);
      const float* src = in[i]->data<float>();
      if (bi == 1 && bo > 1 && off % bo == 0) {
        // A plain input starting on a block boundary: the blocked reorder into its blocks.
        // Only the last input of a blocked output can end inside a block, so the zeros it
        // writes past its last channel are that block's padding.
        for (std::int64_t b = 0; b < n; ++b)
          kernels::reorder_plain_to_blocked(src + b * ci * sp, d + b * cpo * sp + off * sp, 1, ci, sp, bo);
      } else if (bi == bo) {
        // Whole blocks (the last input's padding lanes are zero in a blocked input): one
        // contiguous run per image.
        const std::int64_t run = cpi * sp;
        for (std::int64_t b = 0; b < n; ++b) {
          float* to = d + b * cpo * sp + off * sp;
          const float* from = src + b * cpi * sp;
          if (to == from) continue;  // already in place
          parallel_for(run, 1 << 16, [&](std::int64_t x0, std::int64_t x1) {
            std::memcpy(to + x0, from + x0, static_cast<std::size_t>(x1 - x0) * sizeof(float));
          });
        }
      } else {
        parallel_for(n * ci, 1, [&](std::int64_t r0, std::int64_t r1) {
          for (std::int64_t r = r0; r < r1; ++r) {
            const std::int64_t b = r / ci, ch = r % ci;
            const float* from = src + kernels::channel_offset(bi, ci, sp, b, ch);
            float* to = d + kernels::channel_offset(bo, c, sp, b, off + ch);
            for (std::int64_t x = 0; x < sp; ++x) to[x * bo] = from[x * bi];
          }
        });
      }
      off += ci;
    }
    kernels::zero_channel_padding(d, n, c, sp, bo);
  }

  int axis_ = 0;
  bool blockable_ = false;
  std::vector<std::int64_t> channels_;
  std::vector<Layout> in_layouts_;
  Layout out_layout_ = Layout::plain;
};

class SplitOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& s = in[0].shape;
    axis_ = static_cast<int>(norm_axis(node_.get_int("axis", 0), s.rank(), node_));
    std::vector<std::int64_t> sizes = node_.get_ints("split");
    if (in.size() > 1 && in[1].present) sizes = tensor_to_int64s(need_const(*this, in, 1, "split"));
    const auto n = static_cast<std::int64_t>(out.size());
    if (sizes.empty()) {
      std::int64_t num = node_.get_int("num_outputs", n);
      const std::int64_t chunk = (s[axis_] + num - 1) / num;
      for (std::int64_t i = 0; i < num; ++i) sizes.push_back(std::min(chunk, s[axis_] - i * chunk));
    }
    if (static_cast<std::int64_t>(sizes.size()) != n) fail_model("split sizes do not match the number of outputs");
    if (std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0}) != s[axis_]) fail_input("split sizes do not sum to the axis size");
    sizes_ = sizes;
    for (std::size_t i = 0; i < out.size(); ++i) {
      Shape o = s;
      o[axis_] = sizes[i];
      out[i].shape = o;
      out[i].dtype = in[0].dtype;
    }
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& s = in[0]->shape();
    std::int64_t outer = 1, inner = dtype_size(in[0]->dtype());
    for (int k = 0; k < axis_; ++k) outer *= s[k];
    for (int k = axis_ + 1; k < s.rank(); ++k) inner *= s[k];
    const auto* src = static_cast<const std::byte*>(in[0]->raw());
    const std::int64_t in_row = s[axis_] * inner;
    std::int64_t col = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const std::int64_t row = sizes_[i] * inner;
      if (out[i]) {
        auto* dst = static_cast<std::byte*>(out[i]->raw());
        for (std::int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * row, src + o * in_row + col, static_cast<std::size_t>(row));
      }
      col += row;
    }
  }

 private:
  int axis_ = 0;
  std::vector<std::int64_t> sizes_;
};

class SliceOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& s = in[0].shape;
    std::vector<std::int64_t> starts, ends, axes, steps;
    if (opset_ < 10) {
      starts = node_.get_ints("starts");
      ends = node_.get_ints("ends");
      axes = node_.get_ints("axes");
    } else {
      starts = tensor_to_int64s(need_const(*this, in, 1, "starts"));
      ends = tensor_to_int64s(need_const(*this, in, 2, "ends"));
      if (in.size() > 3 && in[3].present) axes = tensor_to_int64s(need_const(*this, in, 3, "axes"));
      if (in.size() > 4 && in[4].present) steps = tensor_to_int64s(need_const(*this, in, 4, "steps"));
    }
    if (axes.empty())
      for (std::size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<std::int64_t>(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      fail_model("starts, ends, axes and steps differ in length");
    const int r = s.rank();
    begin_.assign(static_cast<std::size_t>(r), 0);
    step_.assign(static_cast<std::size_t>(r), 1);
    std::vector<std::int64_t> d(s.dims().begin(), s.dims().end());
    for (std::size_t i = 0; i < starts.size(); ++i) {
      const auto a = static_cast<std::size_t>(norm_axis(axes[i], r, node_));
      const std::int64_t dim = s[static_cast<int>(a)], st = steps[i];
      if (st == 0) fail_model("step 0");
      std::int64_t b = starts[i], e = ends[i];
      if (b < 0) b += dim;
      if (e < 0) e += dim;
      if (st > 0) {
        b = std::clamp<std::int64_t>(b, 0, dim);
        e = std::clamp<std::int64_t>(e, 0, dim);
        d[a] = e > b ? (e - b + st - 1) / st : 0;
      } else {
        b = std::clamp<std::int64_t>(b, 0, dim - 1);
        e = std::clamp<std::int64_t>(e, -1, dim - 1);
        d[a] = b > e ? (b - e + (-st) - 1) / (-st) : 0;
      }
      begin_[a] = b;
      step_[a] = st;
    }
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Tensor& src = *in[0];
    Tensor& dst = *out[0];
    const int r = src.rank();
    const std::size_t es = dtype_size(src.dtype());
    const auto ss = src.shape().contiguous_strides();
    const Shape& os = dst.shape();
    const std::int64_t n = dst.numel();
    const std::int64_t inner = r ? os[r - 1] : 1;
    const auto* sp = static_cast<const std::byte*>(src.raw());
    auto* dp = static_cast<std::byte*>(dst.raw());
    const std::int64_t rows = inner ? n / inner : 0;
    parallel_for(rows, 64, [&](std::int64_t rb, std::int64_t re) {
      for (std::int64_t row = rb; row < re; ++row) {
        std::int64_t rem = row, off = 0;
        for (int k = r - 2; k >= 0; --k) {
          const std::int64_t idx = rem % os[k];
          rem /= os[k];
          off += (begin_[static_cast<std::size_t>(k)] + idx * step_[static_cast<std::size_t>(k)]) * ss[static_cast<std::size_t>(k)];
        }
        const std::int64_t b = r ? begin_[static_cast<std::size_t>(r - 1)] : 0, st = r ? step_[static_cast<std::size_t>(r - 1)] : 1;
        if (st == 1) {
          std::memcpy(dp + row * inner * static_cast<std::int64_t>(es), sp + (off + b) * static_cast<std::int64_t>(es), static_cast<std::size_t>(inner) * es);
        } else {
          for (std::int64_t i = 0; i < inner; ++i)
            std::memcpy(dp + (row * inner + i) * static_cast<std::int64_t>(es), sp + (off + b + i * st) * static_cast<std::int64_t>(es), es);
        }
      }
    });
  }

 private:
  std::vector<std::int64_t> begin_, step_;
};

class PadOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& s = in[0].shape;
    const int r = s.rank();
    std::vector<std::int64_t> pads;
    mode_ = node_.get_string("mode", "constant");
    if (mode_ != "constant" && mode_ != "reflect" && mode_ != "edge" && mode_ != "wrap")
      fail_unsupported("pad mode '" + mode_ + "'");
    if (opset_ < 11) {
      pads = node_.get_ints("pads");
      value_ = node_.get_float("value", 0.f);
    } else {
      pads = tensor_to_int64s(need_const(*this, in, 1, "pads"));
      if (in.size() > 2 && in[2].present) {
        const Tensor& v = need_const(*this, in, 2, "constant_value");
        if (v.numel()) value_ = tensor_to_floats(v)[0];
      }
    }
    std::vector<std::int64_t> axes;
    if (in.size() > 3 && in[3].present) axes = tensor_to_int64s(need_const(*this, in, 3, "axes"));
    if (axes.empty())
      for (int i = 0; i < r; ++i) axes.push_back(i);
    if (pads.size() != 2 * axes.size()) fail_model("pads has " + std::to_string(pads.size()) + " values for " + std::to_string(axes.size()) + " axes");
    before_.assign(static_cast<std::size_t>(r), 0);
    std::vector<std::int64_t> d(s.dims().begin(), s.dims().end());
    for (std::size_t i = 0; i < axes.size(); ++i) {
      const auto a = static_cast<std::size_t>(norm_axis(axes[i], r, node_));
      before_[a] = pads[i];
      d[a] += pads[i] + pads[i + axes.size()];
      if (d[a] < 0) fail_input("negative output size after padding");
      if ((mode_ == "reflect") && (pads[i] >= s[static_cast<int>(a)] || pads[i + axes.size()] >= s[static_cast<int>(a)]))
        fail_input("reflect padding larger than the axis");
    }
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
    if (in[0].dtype != DType::f32 && in[0].dtype != DType::i64) fail_unsupported("dtype " + std::string(dtype_name(in[0].dtype)));
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    if (in[0]->dtype() == DType::f32) run_t<float>(*in[0], *out[0]);
    else run_t<std::int64_t>(*in[0], *out[0]);
  }

 private:
  template <typename T>
  void run_t(const Tensor& src, Tensor& dst) {
    const Shape& is = src.shape();
    const Shape& os = dst.shape();
    const int r = is.rank();
    const auto ss = is.contiguous_strides();
    const T* sp = src.data<T>();
    T* dp = dst.data<T>();
    const std::int64_t inner = r ? os[r - 1] : 1;
    const std::int64_t rows = inner ? dst.numel() / inner : 0;
    const T val = static_cast<T>(value_);
    const bool constant = mode_ == "constant", edge = mode_ == "edge", wrap = mode_ == "wrap";
    auto map = [&](std::int64_t o, int k, bool& inside) -> std::int64_t {
      std::int64_t i = o - before_[static_cast<std::size_t>(k)];
      const std::int64_t n = is[k];
      if (i >= 0 && i < n) return i;
      if (constant || n == 0) {
        inside = false;
        return 0;
      }
      if (edge) return i < 0 ? 0 : n - 1;
      if (wrap) return ((i % n) + n) % n;
      // reflect (without repeating the edge)
      if (n == 1) return 0;
      const std::int64_t period = 2 * (n - 1);
      i = ((i % period) + period) % period;
      return i < n ? i : period - i;
    };
    parallel_for(rows, 16, [&](std::int64_t rb, std::int64_t re) {
      for (std::int64_t row = rb; row < re; ++row) {
        std::int64_t rem = row, off = 0;
        bool inside = true;
        for (int k = r - 2; k >= 0; --k) {
          const std::int64_t idx = rem % os[k];
          rem /= os[k];
          off += map(idx, k, inside) * ss[static_cast<std::size_t>(k)];
        }
        T* drow = dp + row * inner;
        if (constant && r) {
          // The row's input run [b, b + n) clipped to the output row, padding on either side
          // (a negative pad crops): a copy and two fills instead of a mapping per element.
          const std::int64_t b = before_[static_cast<std::size_t>(r - 1)], n = is[r - 1];
          const std::int64_t lo = inside ? std::clamp<std::int64_t>(b, 0, inner) : inner;
          const std::int64_t hi = inside ? std::clamp<std::int64_t>(b + n, lo, inner) : inner;
          std::fill(drow, drow + lo, val);
          std::copy_n(sp + off + (lo - b), hi - lo, drow + lo);
          std::fill(drow + hi, drow + inner, val);
          continue;
        }
        for (std::int64_t x = 0; x < inner; ++x) {
          bool in_x = inside;
          const std::int64_t ix = r ? map(x, r - 1, in_x) : 0;
          drow[x] = in_x ? sp[off + ix] : val;
        }
      }
    });
  }
  std::string mode_;
  float value_ = 0.f;
  std::vector<std::int64_t> before_;
};

// Expand and Tile: output element = input element at a broadcast / modulo index.
class ExpandTileOp final : public Op {
 public:
  ExpandTileOp(const Node& n, std::int64_t opset, bool tile) : Op(n, opset), tile_(tile) {}
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 2);
    const Shape& s = in[0].shape;
    const auto v = tensor_to_int64s(need_const(*this, in, 1, tile_ ? "repeats" : "shape"));
    if (tile_) {
      if (static_cast<int>(v.size()) != s.rank()) fail_model("repeats has " + std::to_string(v.size()) + " values for rank " + std::to_string(s.rank()));
      std::vector<std::int64_t> d;
      for (int i = 0; i < s.rank(); ++i) d.push_back(s[i] * v[static_cast<std::size_t>(i)]);
      out[0].shape = Shape(d);
    } else {
      out[0].shape = broadcast_shapes(s, Shape(v), node_);
    }
    out[0].dtype = in[0].dtype;
  }
  // Blocks, not elements: the trailing axes where input and output agree form one contiguous
  // run; the axis before them is tiled (or broadcast from 1), so each output "super-row" is the
  // source block of that axis repeated, written by doubling copies. VNet's 1 -> 16 channel
  // Tile of a 48^3 volume is 16 copies of 432 KiB.
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& is = in[0]->shape();
    const Shape& os = out[0]->shape();
    const int r = os.rank(), off = os.rank() - is.rank();
    const auto es = static_cast<std::int64_t>(dtype_size(in[0]->dtype()));
    const auto* sp = static_cast<const std::byte*>(in[0]->raw());
    auto* dp = static_cast<std::byte*>(out[0]->raw());
    if (out[0]->numel() == 0) return;
    std::vector<std::int64_t> id(static_cast<std::size_t>(r)), od(static_cast<std::size_t>(r));
    for (int k = 0; k < r; ++k) id[static_cast<std::size_t>(k)] = k < off ? 1 : is[k - off], od[static_cast<std::size_t>(k)] = os[k];
    int t = r;
    std::int64_t inner = 1;
    while (t > 0 && id[static_cast<std::size_t>(t - 1)] == od[static_cast<std::size_t>(t - 1)]) inner *= od[static_cast<std::size_t>(--t)];
    if (t == 0) {  // nothing repeated
      std::memcpy(dp, sp, static_cast<std::size_t>(inner * es));
      return;
    }
    // Axis t-1 repeats a source block of `blk` elements `reps` times (tile: id divides od;
    // expand: id is 1); axes before it pick the source block.
    const std::int64_t blk = id[static_cast<std::size_t>(t - 1)] * inner, reps = od[static_cast<std::size_t>(t - 1)] / id[static_cast<std::size_t>(t - 1)];
    const std::int64_t out_blk = blk * reps;
    std::vector<std::int64_t> istride(static_cast<std::size_t>(t), 0);  // source elements per index of axis k < t-1
    for (int k = t - 2, st = blk; k >= 0; --k) {
      istride[static_cast<std::size_t>(k)] = st;
      st *= id[static_cast<std::size_t>(k)];
    }
    std::int64_t rows = 1;
    for (int k = 0; k < t - 1; ++k) rows *= od[static_cast<std::size_t>(k)];
    const bool tile = tile_;
    parallel_for(rows, std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(1, out_blk)), [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t row = b; row < e; ++row) {
        std::int64_t rem = row, so = 0;
        for (int k = t - 2; k >= 0; --k) {
          const std::int64_t n = od[static_cast<std::size_t>(k)], idx = rem % n;
          rem /= n;
          const std::int64_t src = tile ? idx % id[static_cast<std::size_t>(k)] : (id[static_cast<std::size_t>(k)] == 1 ? 0 : idx);
          so += src * istride[static_cast<std::size_t>(k)];
        }
        std::byte* d = dp + row * out_blk * es;
        std::memcpy(d, sp + so * es, static_cast<std::size_t>(blk * es));
        for (std::int64_t done = blk; done < out_blk;) {  // doubling copies of what is written
          const std::int64_t n = std::min(done, out_blk - done);
          std::memcpy(d + done * es, d, static_cast<std::size_t>(n * es));
          done += n;
        }
      }
    });
  }

 private:
  bool tile_;
};

class GatherOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 2);
    const Shape& s = in[0].shape;
    axis_ = static_cast<int>(norm_axis(node_.get_int("axis", 0), s.rank(), node_));
    if (in[1].dtype != DType::i64 && in[1].dtype != DType::i32) fail_model("indices must be int64 or int32");
    std::vector<std::int64_t> d;
    for (int i = 0; i < axis_; ++i) d.push_back(s[i]);
    for (auto x : in[1].shape.dims()) d.push_back(x);
    for (int i = axis_ + 1; i < s.rank(); ++i) d.push_back(s[i]);
    out[0].shape = Shape(d);
    out[0].dtype = in[0].dtype;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& s = in[0]->shape();
    const auto idx = tensor_to_int64s(*in[1]);
    std::int64_t outer = 1, inner = dtype_size(in[0]->dtype());
    for (int k = 0; k < axis_; ++k) outer *= s[k];
    for (int k = axis_ + 1; k < s.rank(); ++k) inner *= s[k];
    const std::int64_t n = s[axis_];
    const auto* sp = static_cast<const std::byte*>(in[0]->raw());
    auto* dp = static_cast<std::byte*>(out[0]->raw());
    const auto m = static_cast<std::int64_t>(idx.size());
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t j = 0; j < m; ++j) {
        std::int64_t k = idx[static_cast<std::size_t>(j)];
        if (k < 0) k += n;
        if (k < 0 || k >= n) fail_input("index " + std::to_string(idx[static_cast<std::size_t>(j)]) + " out of range for axis size " + std::to_string(n));
        std::memcpy(dp + (o * m + j) * inner, sp + (o * n + k) * inner, static_cast<std::size_t>(inner));
      }
  }

 private:
  int axis_ = 0;
};

class ScatterNDOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 3, 3);
    if (node_.get_string("reduction", "none") != "none") fail_unsupported("reduction other than none");
    out[0].shape = in[0].shape;
    out[0].dtype = in[0].dtype;
  }
  int inplace_input() const override { return 0; }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    copy_bytes(*in[0], *out[0]);
    const Shape& s = in[0]->shape();
    const Shape& is = in[1]->shape();
    const auto idx = tensor_to_int64s(*in[1]);
    const int k = static_cast<int>(is[is.rank() - 1]);
    const auto cs = s.contiguous_strides();
    std::int64_t slice = dtype_size(in[0]->dtype());
    for (int i = k; i < s.rank(); ++i) slice *= s[i];
    const std::int64_t count = is.numel() / std::max(k, 1);
    const auto* up = static_cast<const std::byte*>(in[2]->raw());
    auto* dp = static_cast<std::byte*>(out[0]->raw());
    for (std::int64_t j = 0; j < count; ++j) {
      std::int64_t off = 0;
      for (int a = 0; a < k; ++a) {
        std::int64_t v = idx[static_cast<std::size_t>(j * k + a)];
        if (v < 0) v += s[a];
        if (v < 0 || v >= s[a]) fail_input("index out of range");
        off += v * cs[static_cast<std::size_t>(a)];
      }
      std::memcpy(dp + off * static_cast<std::int64_t>(dtype_size(in[0]->dtype())), up + j * slice, static_cast<std::size_t>(slice));
    }
  }
};

bool onnx_dtype_to_voxinfer(std::int64_t t, DType& out) {
  switch (t) {
    case 1: out = DType::f32; return true;
    case 2: out = DType::u8; return true;
    case 5: out = DType::i16; return true;
    case 6: out = DType::i32; return true;
    case 7: out = DType::i64; return true;
    case 9: out = DType::boolean; return true;
    case 10: out = DType::f16; return true;
    case 11: out = DType::f64; return true;
    default: return false;
  }
}

template <typename D, typename S>
void convert_values(const S* s, D* d, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<D, bool>) d[i] = s[i] != S(0);
    else d[i] = static_cast<D>(s[i]);
  }
}

void cast_tensor(const Tensor& src, Tensor& dst, const Node& node) {
  const std::int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) {
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return;
  }
  auto with_src = [&](auto stag) {
    using S = decltype(stag);
    const S* s = static_cast<const S*>(src.raw());
    switch (dst.dtype()) {
      case DType::f32: convert_values(s, dst.data<float>(), n); return;
      case DType::f64: convert_values(s, dst.data<double>(), n); return;
      case DType::i64: convert_values(s, dst.data<std::int64_t>(), n); return;
      case DType::i32: convert_values(s, dst.data<std::int32_t>(), n); return;
      case DType::i16: convert_values(s, dst.data<std::int16_t>(), n); return;
      case DType::u8: convert_values(s, dst.data<std::uint8_t>(), n); return;
      case DType::boolean: convert_values(s, dst.data<bool>(), n); return;
      default: throw Error(ErrorCode::unsupported, node.label() + ": cast to " + std::string(dtype_name(dst.dtype())));
    }
  };
  if (src.dtype() == DType::boolean) with_src(std::uint8_t{});
  else dispatch_numeric(src.dtype(), node, with_src);
}

class CastOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    const std::int64_t to = node_.get_int("to", 1);
    if (!onnx_dtype_to_voxinfer(to, out[0].dtype)) fail_unsupported("cast to ONNX type " + std::to_string(to));
    out[0].shape = in[0].shape;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    cast_tensor(*in[0], *out[0], node_);
  }
};

class ConstantOfShapeOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const auto d = tensor_to_int64s(need_const(*this, in, 0, "shape"));
    out[0].shape = Shape(d);
    const Tensor* v = node_.get_tensor("value");
    out[0].dtype = v ? v->dtype() : DType::f32;
  }
  void run(const std::vector<const Tensor*>&, const std::vector<Tensor*>& out, void*) override {
    const Tensor* v = node_.get_tensor("value");
    if (!v) {
      std::memset(out[0]->raw(), 0, out[0]->nbytes());
      return;
    }
    const std::size_t es = dtype_size(v->dtype());
    auto* d = static_cast<std::byte*>(out[0]->raw());
    for (std::int64_t i = 0; i < out[0]->numel(); ++i) std::memcpy(d + i * static_cast<std::int64_t>(es), v->raw(), es);
  }
};

class ConstantOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>&, std::vector<ValueMeta>& out) override {
    if (const Tensor* t = node_.get_tensor("value")) {
      value_ = *t;
    } else if (node_.has("value_float")) {
      value_ = Tensor::from_vector<float>(Shape{}, {node_.get_float("value_float", 0)});
    } else if (node_.has("value_floats")) {
      const auto v = node_.get_floats("value_floats");
      value_ = Tensor::from_vector<float>(Shape{static_cast<std::int64_t>(v.size())}, v);
    } else if (node_.has("value_int")) {
      value_ = Tensor::from_vector<std::int64_t>(Shape{}, {node_.get_int("value_int", 0)});
    } else if (node_.has("value_ints")) {
      const auto v = node_.get_ints("value_ints");
      value_ = Tensor::from_vector<std::int64_t>(Shape{static_cast<std::int64_t>(v.size())}, v);
    } else {
      fail_unsupported("Constant without a supported value attribute");
    }
    out[0].shape = value_.shape();
    out[0].dtype = value_.dtype();
  }
  void run(const std::vector<const Tensor*>&, const std::vector<Tensor*>& out, void*) override {
    std::memcpy(out[0]->raw(), value_.raw(), value_.nbytes());
  }

 private:
  Tensor value_;
};

class RangeOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 3, 3);
    const double start = tensor_to_floats(need_const(*this, in, 0, "start"))[0];
    const double limit = tensor_to_floats(need_const(*this, in, 1, "limit"))[0];
    const double delta = tensor_to_floats(need_const(*this, in, 2, "delta"))[0];
    if (delta == 0) fail_input("delta is 0");
    const auto n = static_cast<std::int64_t>(std::max(0.0, std::ceil((limit - start) / delta)));
    out[0].shape = Shape{n};
    out[0].dtype = in[0].dtype;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const auto n = out[0]->numel();
    if (in[0]->dtype() == DType::f32) {
      const float s = tensor_to_floats(*in[0])[0], d = tensor_to_floats(*in[2])[0];
      for (std::int64_t i = 0; i < n; ++i) out[0]->data<float>()[i] = s + static_cast<float>(i) * d;
    } else {
      const std::int64_t s = tensor_to_int64s(*in[0])[0], d = tensor_to_int64s(*in[2])[0];
      Tensor tmp(out[0]->shape(), DType::i64);
      for (std::int64_t i = 0; i < n; ++i) tmp.data<std::int64_t>()[i] = s + i * d;
      cast_tensor(tmp, *out[0], node_);
    }
  }
};

}  // namespace

void register_shape_ops() {
  register_op("Shape", make_op<ShapeOp>);
  register_op("Size", make_op<SizeOp>);
  register_op("Reshape", make_op<ReshapeOp>);
  register_op("Flatten", make_op<FlattenOp>);
  register_op("Squeeze", make_op<SqueezeOp>);
  register_op("Unsqueeze", make_op<UnsqueezeOp>);
  register_op("Identity", make_op<IdentityOp>);
  register_op("Dropout", make_op<IdentityOp>);
  register_op("Transpose", make_op<TransposeOp>);
  register_op("Concat", make_op<ConcatOp>);
  register_op("Split", make_op<SplitOp>);
  register_op("Slice", make_op<SliceOp>);
  register_op("Pad", make_op<PadOp>);
  register_op("Expand", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ExpandTileOp>(n, o, false); });
  register_op("Tile", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ExpandTileOp>(n, o, true); });
  register_op("Gather", make_op<GatherOp>);
  register_op("ScatterND", make_op<ScatterNDOp>);
  register_op("Cast", make_op<CastOp>);
  register_op("ConstantOfShape", make_op<ConstantOfShapeOp>);
  register_op("Constant", make_op<ConstantOp>);
  register_op("Range", make_op<RangeOp>);
}

}  // namespace voxinfer::graph
