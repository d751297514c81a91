// Elementwise operators: unary activations and maths, numpy-broadcasting binary
// arithmetic and comparisons, PRelu, Clip, Where and the variadic Sum/Min/Max/Mean.
#include <cmath>
#include <functional>
#include <limits>

#include "graph/ops_common.h"
#include "voxinfer/kernels/reorder.h"

namespace voxinfer::graph {
namespace {

// ---------------------------------------------------------------- unary (float)

enum class UnaryKind {
  relu, leaky_relu, elu, selu, sigmoid, hard_sigmoid, tanh, erf, gelu, sqrt, exp, log, abs, neg, reciprocal,
  floor, ceil, softplus, identity_copy, clip, hard_swish, round, sign, sin, cos
};

class UnaryOp final : public Op {
 public:
  UnaryOp(const Node& n, std::int64_t opset, UnaryKind k) : Op(n, opset), kind_(k) {
    switch (k) {
      case UnaryKind::leaky_relu: alpha_ = n.get_float("alpha", 0.01f); break;
      case UnaryKind::elu: alpha_ = n.get_float("alpha", 1.0f); break;
      case UnaryKind::selu:
        alpha_ = n.get_float("alpha", 1.67326319217681884765625f);
        beta_ = n.get_float("gamma", 1.05070102214813232421875f);
        break;
      case UnaryKind::hard_sigmoid:
        alpha_ = n.get_float("alpha", 0.2f);
        beta_ = n.get_float("beta", 0.5f);
        break;
      case UnaryKind::gelu: approx_tanh_ = n.get_string("approximate", "none") == "tanh"; break;
      case UnaryKind::clip:
        alpha_ = n.get_float("min", -std::numeric_limits<float>::infinity());
        beta_ = n.get_float("max", std::numeric_limits<float>::infinity());
        break;
      default: break;
    }
  }
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, kind_ == UnaryKind::clip ? 3 : 1);
    const DType t = in[0].dtype;
    if (t != DType::f32 && !(t == DType::i64 && (kind_ == UnaryKind::abs || kind_ == UnaryKind::neg || kind_ == UnaryKind::clip ||
                                                  kind_ == UnaryKind::relu || kind_ == UnaryKind::sign)))
      fail_unsupported("dtype " + std::string(dtype_name(t)) + " is not supported");
    out[0].shape = in[0].shape;
    out[0].dtype = t;
    rank5_f32_ = t == DType::f32 && in[0].shape.rank() == 5;
  }
  int inplace_input() const override { return 0; }
  std::int64_t flops(const std::vector<ValueMeta>& in, const std::vector<ValueMeta>&) const override {
    return in[0].shape.numel();
  }
  // Activations with f(0) = 0 also run on channel-blocked tensors (the zero padding lanes stay
  // zero), so that Conv -> Norm -> Relu -> Conv chains with unfused activations stay blocked.
  bool blockable() const {
    return rank5_f32_ && (kind_ == UnaryKind::relu || kind_ == UnaryKind::leaky_relu || kind_ == UnaryKind::elu ||
                          kind_ == UnaryKind::neg || kind_ == UnaryKind::abs || kind_ == UnaryKind::tanh);
  }
  Layout preferred_output_layout(int o) const override { return o == 0 && blockable() ? in_layout_ : Layout::plain; }
  bool accepts_input_layout(int i, Layout l) const override {
    return l == Layout::plain || (i == 0 && blockable() && !layout_is_weights(l));
  }
  void set_layouts(const std::vector<Layout>& in, const std::vector<Layout>& out) override {
    in_layout_ = in.empty() ? Layout::plain : in[0];
    out_layout_ = out.empty() ? Layout::plain : out[0];
  }
  int reorders() const override { return in_layout_ != out_layout_ ? 1 : 0; }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    if (in_layout_ != out_layout_) {  // blocked in, plain out: reorder, then apply in place
      const Shape& sh = in[0]->shape();
      kernels::reorder_blocked_to_plain(in[0]->data<float>(), out[0]->data<float>(), sh[0], sh[1], sh.numel() / (sh[0] * sh[1]),
                                        layout_block(in_layout_));
      run_same_layout(std::vector<const Tensor*>{out[0]}, out);
      return;
    }
    run_same_layout(in, out);
  }

 private:
  void run_same_layout(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) {
    float lo = alpha_, hi = beta_;
    if (kind_ == UnaryKind::clip) {
      if (in.size() > 1 && in[1]) lo = tensor_to_floats(*in[1]).at(0);
      if (in.size() > 2 && in[2]) hi = tensor_to_floats(*in[2]).at(0);
    }
    // Blocked tensors: every stored value, channel padding included.
    const std::int64_t n = in[0]->layout() == Layout::plain ? in[0]->numel() : static_cast<std::int64_t>(in[0]->nbytes() / sizeof(float));
    if (in[0]->dtype() == DType::i64) {
      const auto* s = in[0]->data<std::int64_t>();
      auto* d = out[0]->data<std::int64_t>();
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t v = s[i];
        switch (kind_) {
          case UnaryKind::abs: d[i] = v < 0 ? -v : v; break;
          case UnaryKind::neg: d[i] = -v; break;
          case UnaryKind::relu: d[i] = v < 0 ? 0 : v; break;
          case UnaryKind::sign: d[i] = (v > 0) - (v < 0); break;
          default: d[i] = std::min<std::int64_t>(std::max<std::int64_t>(v, static_cast<std::int64_t>(lo)), static_cast<std::int64_t>(hi));
        }
      }
      return;
    }
    const float* s = in[0]->data<float>();
    float* d = out[0]->data<float>();
    const float a = alpha_, b = beta_;
    const bool approx = approx_tanh_;
    // One loop per kind, so that the compiler vectorises the simple ones.
    auto apply = [&](auto f) {
      parallel_for(n, 1 << 15, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) d[i] = f(s[i]);
      });
    };
    switch (kind_) {
      // Branch-free: activations are about half negative, and these forms vectorise.
      case UnaryKind::relu: apply([](float x) { return std::max(x, 0.f); }); break;
      case UnaryKind::leaky_relu: apply([a](float x) { return std::max(x, 0.f) + a * std::min(x, 0.f); }); break;
      case UnaryKind::elu: apply([a](float x) { return x >= 0 ? x : a * (std::exp(x) - 1.f); }); break;
      case UnaryKind::selu: apply([a, b](float x) { return x > 0 ? b * x : b * a * (std::exp(x) - 1.f); }); break;
      case UnaryKind::sigmoid: apply([](float x) { return 1.f / (1.f + std::exp(-x)); }); break;
      case UnaryKind::hard_sigmoid: apply([a, b](float x) { return std::max(0.f, std::min(1.f, a * x + b)); }); break;
      case UnaryKind::tanh: apply([](float x) { return std::tanh(x); }); break;
      case UnaryKind::erf: apply([](float x) { return std::erf(x); }); break;
      case UnaryKind::gelu:
        if (approx) apply([](float x) { return 0.5f * x * (1.f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x))); });
        else apply([](float x) { return 0.5f * x * (1.f + std::erf(x * 0.7071067811865476f)); });
        break;
      case UnaryKind::sqrt: apply([](float x) { return std::sqrt(x); }); break;
      case UnaryKind::exp: apply([](float x) { return std::exp(x); }); break;
      case UnaryKind::log: apply([](float x) { return std::log(x); }); break;
      case UnaryKind::abs: apply([](float x) { return std::abs(x); }); break;
      case UnaryKind::neg: apply([](float x) { return -x; }); break;
      case UnaryKind::reciprocal: apply([](float x) { return 1.f / x; }); break;
      case UnaryKind::floor: apply([](float x) { return std::floor(x); }); break;
      case UnaryKind::ceil: apply([](float x) { return std::ceil(x); }); break;
      case UnaryKind::round: apply([](float x) { return std::nearbyint(x); }); break;
      case UnaryKind::sign: apply([](float x) { return static_cast<float>((x > 0) - (x < 0)); }); break;
      case UnaryKind::sin: apply([](float x) { return std::sin(x); }); break;
      case UnaryKind::cos: apply([](float x) { return std::cos(x); }); break;
      case UnaryKind::softplus: apply([](float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }); break;
      case UnaryKind::hard_swish: apply([](float x) { return x * std::max(0.f, std::min(1.f, x / 6.f + 0.5f)); }); break;
      case UnaryKind::clip: apply([lo, hi](float x) { return std::min(std::max(x, lo), hi); }); break;
      case UnaryKind::identity_copy: apply([](float x) { return x; }); break;
    }
  }

 private:
  UnaryKind kind_;
  float alpha_ = 0, beta_ = 0;
  bool approx_tanh_ = false;
  bool rank5_f32_ = false;
  Layout in_layout_ = Layout::plain, out_layout_ = Layout::plain;
};

template <UnaryKind K>
std::unique_ptr<Op> make_unary(const Node& n, std::int64_t opset) {
  return std::make_unique<UnaryOp>(n, opset, K);
}

// ---------------------------------------------------------------- binary

enum class BinKind { add, sub, mul, div, pow, min, max, mod, prelu, eq, lt, gt, le, ge, and_, or_, xor_ };

bool is_compare(BinKind k) {
  return k == BinKind::eq || k == BinKind::lt || k == BinKind::gt || k == BinKind::le || k == BinKind::ge ||
         k == BinKind::and_ || k == BinKind::or_ || k == BinKind::xor_;
}

template <typename T>
inline T arith(BinKind k, T a, T b, bool fmod_mode) {
  switch (k) {
    case BinKind::add: return a + b;
    case BinKind::sub: return a - b;
    case BinKind::mul: return a * b;
    case BinKind::div:
      if constexpr (std::is_integral_v<T>) return b == 0 ? T(0) : static_cast<T>(a / b);
      else return a / b;
    case BinKind::pow: return static_cast<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
    case BinKind::min: return a < b ? a : b;
    case BinKind::max: return a > b ? a : b;
    case BinKind::prelu: return a >= T(0) ? a : a * b;
    case BinKind::mod:
      if constexpr (std::is_integral_v<T>) {
        if (b == 0) return 0;
        if (fmod_mode) return static_cast<T>(a % b);
        T r = static_cast<T>(a % b);
        if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
        return r;
      } else {
        if (fmod_mode) return static_cast<T>(std::fmod(a, b));
        T r = static_cast<T>(std::fmod(a, b));
        if (r != 0 && ((r < 0) != (b < 0))) r += b;
        return r;
      }
    default: return a;
  }
}

template <typename T>
inline bool compare(BinKind k, T a, T b) {
  switch (k) {
    case BinKind::eq: return a == b;
    case BinKind::lt: return a < b;
    case BinKind::gt: return a > b;
    case BinKind::le: return a <= b;
    case BinKind::ge: return a >= b;
    case BinKind::and_: return a && b;
    case BinKind::or_: return a || b;
    case BinKind::xor_: return static_cast<bool>(a) != static_cast<bool>(b);
    default: return false;
  }
}

class BinaryOp final : public Op {
 public:
  BinaryOp(const Node& n, std::int64_t opset, BinKind k) : Op(n, opset), kind_(k) {
    fmod_ = n.get_int("fmod", 0) != 0;
  }
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 2);
    if (kind_ != BinKind::pow && in[0].dtype != in[1].dtype)
      fail_model("input dtypes differ: " + std::string(dtype_name(in[0].dtype)) + " and " + std::string(dtype_name(in[1].dtype)));
    if (kind_ == BinKind::pow && in[0].dtype != DType::f32) fail_unsupported("Pow supports f32 bases");
    out[0].shape = broadcast_shapes(in[0].shape, in[1].shape, node_);
    if (kind_ == BinKind::prelu && out[0].shape != in[0].shape)
      fail_model("slope shape " + in[1].shape.str() + " does not broadcast to the input " + in[0].shape.str());
    out[0].dtype = is_compare(kind_) ? DType::boolean : in[0].dtype;
    same_rank5_f32_ = in[0].dtype == DType::f32 && in[0].shape.rank() == 5 && in[0].shape == in[1].shape;
    // PRelu on 5D f32 data with one slope or one per channel also runs on blocked data.
    prelu_blockable_ = false;
    if (kind_ == BinKind::prelu && in[0].dtype == DType::f32 && in[0].shape.rank() == 5 && in[1].shape.rank() <= 5) {
      const Shape& s = in[1].shape;
      bool ok = true;
      for (int k = 0; k < s.rank(); ++k) {
        const int axis = 5 - s.rank() + k;
        if (s[k] != 1 && axis != 1) ok = false;
      }
      prelu_blockable_ = ok;
    }
  }
  int inplace_input() const override { return is_compare(kind_) ? -1 : 0; }
  std::int64_t flops(const std::vector<ValueMeta>&, const std::vector<ValueMeta>& out) const override {
    return out[0].shape.numel();
  }
  // Add/Sub/Mul/Min/Max of two f32 tensors of one rank-5 shape (a residual connection) also
  // run on channel-blocked tensors, so that ResNet-style blocks stay blocked.
  bool blockable() const {
    return same_rank5_f32_ && (kind_ == BinKind::add || kind_ == BinKind::sub || kind_ == BinKind::mul ||
                               kind_ == BinKind::min || kind_ == BinKind::max);
  }
  Layout preferred_output_layout(int o) const override {
    if (o == 0 && prelu_blockable_) return in_layouts_[0];
    if (o != 0 || !blockable()) return Layout::plain;
    for (Layout l : in_layouts_)
      if (l != Layout::plain) return l;
    return Layout::plain;
  }
  bool accepts_input_layout(int i, Layout l) const override {
    if (prelu_blockable_) return l == Layout::plain || (i == 0 && !layout_is_weights(l));
    return l == Layout::plain || (i < 2 && blockable() && !layout_is_weights(l));
  }
  void set_layouts(const std::vector<Layout>& in, const std::vector<Layout>& out) override {
    in_layouts_ = in;
    in_layouts_.resize(2, Layout::plain);
    out_layout_ = out.empty() ? Layout::plain : out[0];
  }
  int reorders() const override {
    if (prelu_blockable_) return in_layouts_[0] != out_layout_;  // the slope is read as it is
    return (in_layouts_[0] != out_layout_) + (in_layouts_[1] != out_layout_);
  }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    if (out_layout_ != Layout::plain || in_layouts_[0] != Layout::plain || in_layouts_[1] != Layout::plain) {
      run_blocked(*in[0], *in[1], *out[0]);
      return;
    }
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    Tensor& d = *out[0];
    if (kind_ == BinKind::pow) {
      const Tensor bf = b.dtype() == DType::f32 ? b : float_copy(b);
      run_typed<float>(a, bf, d);
      return;
    }
    if (a.dtype() == DType::boolean) {
      run_bool(a, b, d);
      return;
    }
    dispatch_numeric(a.dtype(), node_, [&](auto tag) { run_typed<decltype(tag)>(a, b, d); });
  }

 private:
  static Tensor float_copy(const Tensor& t) {
    const auto v = tensor_to_floats(t);
    return Tensor::from_vector(t.shape(), v);
  }
  template <typename T>
  void run_typed(const Tensor& a, const Tensor& b, Tensor& d) {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    const BinKind k = kind_;
    const bool fm = fmod_;
    if (is_compare(k)) {
      bool* pd = d.data<bool>();
      broadcast_binary_rows(d.shape(), a.shape(), b.shape(),
                            [&](std::int64_t od, std::int64_t oa, std::int64_t sa, std::int64_t ob, std::int64_t sb, std::int64_t n) {
                              for (std::int64_t i = 0; i < n; ++i) pd[od + i] = compare<T>(k, pa[oa + i * sa], pb[ob + i * sb]);
                            });
      return;
    }
    T* pd = d.data<T>();
    // One loop per operation and stride pattern, so that the common cases vectorise.
    auto rows = [&](auto f) {
      broadcast_binary_rows(d.shape(), a.shape(), b.shape(),
                            [&](std::int64_t od, std::int64_t oa, std::int64_t sa, std::int64_t ob, std::int64_t sb, std::int64_t n) {
                              T* q = pd + od;
                              const T* x = pa + oa;
                              const T* y = pb + ob;
                              if (sa == 1 && sb == 1) {
                                for (std::int64_t i = 0; i < n; ++i) q[i] = f(x[i], y[i]);
                              } else if (sa == 1 && sb == 0) {
                                const T yv = *y;
                                for (std::int64_t i = 0; i < n; ++i) q[i] = f(x[i], yv);
                              } else if (sa == 0 && sb == 1) {
                                const T xv = *x;
                                for (std::int64_t i = 0; i < n; ++i) q[i] = f(xv, y[i]);
                              } else {
                                for (std::int64_t i = 0; i < n; ++i) q[i] = f(x[i * sa], y[i * sb]);
                              }
                            });
    };
    switch (k) {
      case BinKind::add: rows([](T x, T y) { return static_cast<T>(x + y); }); break;
      case BinKind::sub: rows([](T x, T y) { return static_cast<T>(x - y); }); break;
      case BinKind::mul: rows([](T x, T y) { return static_cast<T>(x * y); }); break;
      case BinKind::prelu: rows([](T x, T y) { return x >= T(0) ? x : static_cast<T>(x * y); }); break;
      default: rows([k, fm](T x, T y) { return arith<T>(k, x, y, fm); }); break;
    }
  }
  void run_bool(const Tensor& a, const Tensor& b, Tensor& d) {
    const bool* pa = a.data<bool>();
    const bool* pb = b.data<bool>();
    bool* pd = d.data<bool>();
    const BinKind k = kind_;
    if (!is_compare(k)) fail_unsupported("arithmetic on bool tensors");
    broadcast_binary_rows(d.shape(), a.shape(), b.shape(),
                          [&](std::int64_t od, std::int64_t oa, std::int64_t sa, std::int64_t ob, std::int64_t sb, std::int64_t n) {
                            for (std::int64_t i = 0; i < n; ++i) pd[od + i] = compare<bool>(k, pa[oa + i * sa], pb[ob + i * sb]);
                          });
  }
  template <class F>
  static void blocked_loop(const Tensor& a, const Tensor& b, Tensor& d, Layout la, Layout lb, Layout ld, F f) {
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    float* pd = d.data<float>();
    if (la == ld && lb == ld) {  // one layout: every stored value, padding lanes give f(0, 0) = 0
      const auto n = static_cast<std::int64_t>(d.nbytes() / sizeof(float));
      parallel_for(n, 1 << 15, [&](std::int64_t b0, std::int64_t e0) {
        for (std::int64_t i = b0; i < e0; ++i) pd[i] = f(pa[i], pb[i]);
      });
      return;
    }
    // Mixed layouts: element by element, per (image, channel).
    const Shape& sh = d.shape();
    const std::int64_t nn = sh[0], c = sh[1], sp = sh.numel() / (nn * c);
    const int ka = layout_block(la), kb = layout_block(lb), kd = layout_block(ld);
    parallel_for(nn * c, 1, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const float* x = pa + kernels::channel_offset(ka, c, sp, r / c, r % c);
        const float* y = pb + kernels::channel_offset(kb, c, sp, r / c, r % c);
        float* z = pd + kernels::channel_offset(kd, c, sp, r / c, r % c);
        for (std::int64_t i = 0; i < sp; ++i) z[i * kd] = f(x[i * ka], y[i * kb]);
      }
    });
    kernels::zero_channel_padding(pd, nn, c, sp, kd);
  }
  // PRelu with one slope or one per channel (b, plain) on a blocked or plain a, into d of
  // a's layout or plain: per (image, channel), branch-free (activation signs are random).
  void prelu_blocked(const Tensor& a, const Tensor& b, Tensor& d, Layout la, Layout ld) {
    const Shape& sh = d.shape();
    const std::int64_t nn = sh[0], c = sh[1], sp = sh.numel() / (nn * c);
    const int ka = layout_block(la), kd = layout_block(ld);
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    const bool per_channel = b.numel() > 1;
    float* pd = d.data<float>();
    if (ka == kd && ka > 1) {  // same blocked layout: rows of ka lanes, slope per lane
      const std::int64_t ncb = (c + ka - 1) / ka;
      parallel_for(nn * ncb, 1, [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
          const std::int64_t c0 = (r % ncb) * ka;
          float s[16];
          for (int l = 0; l < ka; ++l) s[l] = c0 + l < c ? pb[per_channel ? c0 + l : 0] : 0.f;
          const float* x = pa + r * sp * ka;
          float* z = pd + r * sp * ka;
          for (std::int64_t i = 0; i < sp; ++i)
            for (int l = 0; l < ka; ++l) {
              const float v = x[i * ka + l];
              z[i * ka + l] = std::max(v, 0.f) + s[l] * std::min(v, 0.f);
            }
        }
      });
      return;
    }
    parallel_for(nn * c, 1, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const float* x = pa + kernels::channel_offset(ka, c, sp, r / c, r % c);
        float* z = pd + kernels::channel_offset(kd, c, sp, r / c, r % c);
        const float s = pb[per_channel ? r % c : 0];
        for (std::int64_t i = 0; i < sp; ++i) {
          const float v = x[i * ka];
          z[i * kd] = std::max(v, 0.f) + s * std::min(v, 0.f);
        }
      }
    });
    kernels::zero_channel_padding(pd, nn, c, sp, kd);
  }
  void run_blocked(const Tensor& a, const Tensor& b, Tensor& d) {
    const Layout la = in_layouts_[0], lb = in_layouts_[1], ld = out_layout_;
    if (kind_ == BinKind::prelu && prelu_blockable_ && lb == Layout::plain) {
      prelu_blocked(a, b, d, la, ld);
      return;
    }
    switch (kind_) {
      case BinKind::add: blocked_loop(a, b, d, la, lb, ld, [](float x, float y) { return x + y; }); break;
      case BinKind::sub: blocked_loop(a, b, d, la, lb, ld, [](float x, float y) { return x - y; }); break;
      case BinKind::mul: blocked_loop(a, b, d, la, lb, ld, [](float x, float y) { return x * y; }); break;
      case BinKind::min: blocked_loop(a, b, d, la, lb, ld, [](float x, float y) { return std::min(x, y); }); break;
      case BinKind::max: blocked_loop(a, b, d, la, lb, ld, [](float x, float y) { return std::max(x, y); }); break;
      default: fail_unsupported("blocked layout");
    }
  }

  BinKind kind_;
  bool fmod_ = false;
  bool same_rank5_f32_ = false;
  bool prelu_blockable_ = false;
  std::vector<Layout> in_layouts_{Layout::plain, Layout::plain};
  Layout out_layout_ = Layout::plain;
};

template <BinKind K>
std::unique_ptr<Op> make_binary(const Node& n, std::int64_t opset) {
  return std::make_unique<BinaryOp>(n, opset, K);
}

// Sum/Min/Max/Mean with any number of inputs, folded pairwise left to right.
class VariadicOp final : public Op {
 public:
  VariadicOp(const Node& n, std::int64_t opset, BinKind k, bool mean) : Op(n, opset), kind_(k), mean_(mean) {}
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    if (in.empty()) fail_model("needs at least one input");
    Shape s = in[0].shape;
    for (std::size_t i = 1; i < in.size(); ++i) {
      if (in[i].dtype != in[0].dtype) fail_model("input dtypes differ");
      s = broadcast_shapes(s, in[i].shape, node_);
    }
    if (in[0].dtype != DType::f32) fail_unsupported("only f32 is supported");
    out[0].shape = s;
    out[0].dtype = in[0].dtype;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    Tensor& d = *out[0];
    float* pd = d.data<float>();
    // First input broadcast into d, then combine the others in order.
    const Tensor& a = *in[0];
    const float* pa = a.data<float>();
    broadcast_binary_rows(d.shape(), a.shape(), a.shape(),
                          [&](std::int64_t od, std::int64_t oa, std::int64_t sa, std::int64_t, std::int64_t, std::int64_t n) {
                            for (std::int64_t i = 0; i < n; ++i) pd[od + i] = pa[oa + i * sa];
                          });
    const BinKind k = kind_;
    for (std::size_t j = 1; j < in.size(); ++j) {
      const float* pb = in[j]->data<float>();
      broadcast_binary_rows(d.shape(), d.shape(), in[j]->shape(),
                            [&](std::int64_t od, std::int64_t, std::int64_t, std::int64_t ob, std::int64_t sb, std::int64_t n) {
                              for (std::int64_t i = 0; i < n; ++i) pd[od + i] = arith<float>(k, pd[od + i], pb[ob + i * sb], false);
                            });
    }
    if (mean_) {
      const float inv = 1.f / static_cast<float>(in.size());
      for (std::int64_t i = 0; i < d.numel(); ++i) pd[i] *= inv;
    }
  }

 private:
  BinKind kind_;
  bool mean_;
};

// Where(condition, x, y) with three-way broadcasting.
class WhereOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 3, 3);
    if (in[0].dtype != DType::boolean) fail_model("condition must be bool");
    if (in[1].dtype != in[2].dtype) fail_model("x and y dtypes differ");
    out[0].shape = broadcast_shapes(broadcast_shapes(in[0].shape, in[1].shape, node_), in[2].shape, node_);
    out[0].dtype = in[1].dtype;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    Tensor& d = *out[0];
    const auto sc = broadcast_strides(in[0]->shape(), d.shape());
    const auto sx = broadcast_strides(in[1]->shape(), d.shape());
    const auto sy = broadcast_strides(in[2]->shape(), d.shape());
    const std::size_t es = dtype_size(d.dtype());
    const bool* c = in[0]->data<bool>();
    const auto* x = static_cast<const std::byte*>(in[1]->raw());
    const auto* y = static_cast<const std::byte*>(in[2]->raw());
    auto* o = static_cast<std::byte*>(d.raw());
    const int r = d.rank();
    for (std::int64_t i = 0; i < d.numel(); ++i) {
      std::int64_t rem = i, oc = 0, ox = 0, oy = 0;
      for (int k = r - 1; k >= 0; --k) {
        const std::int64_t idx = rem % d.shape()[k];
        rem /= d.shape()[k];
        oc += idx * sc[static_cast<std::size_t>(k)];
        ox += idx * sx[static_cast<std::size_t>(k)];
        oy += idx * sy[static_cast<std::size_t>(k)];
      }
      std::memcpy(o + static_cast<std::size_t>(i) * es, c[oc] ? x + ox * static_cast<std::int64_t>(es) : y + oy * static_cast<std::int64_t>(es), es);
    }
  }
};

class NotOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    if (in[0].dtype != DType::boolean) fail_model("input must be bool");
    out[0].shape = in[0].shape;
    out[0].dtype = DType::boolean;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    for (std::int64_t i = 0; i < in[0]->numel(); ++i) out[0]->data<bool>()[i] = !in[0]->data<bool>()[i];
  }
};

}  // namespace

void register_elementwise_ops() {
  register_op("Relu", make_unary<UnaryKind::relu>);
  register_op("LeakyRelu", make_unary<UnaryKind::leaky_relu>);
  register_op("Elu", make_unary<UnaryKind::elu>);
  register_op("Selu", make_unary<UnaryKind::selu>);
  register_op("Sigmoid", make_unary<UnaryKind::sigmoid>);
  register_op("HardSigmoid", make_unary<UnaryKind::hard_sigmoid>);
  register_op("HardSwish", make_unary<UnaryKind::hard_swish>);
  register_op("Tanh", make_unary<UnaryKind::tanh>);
  register_op("Erf", make_unary<UnaryKind::erf>);
  register_op("Gelu", make_unary<UnaryKind::gelu>);
  register_op("Sqrt", make_unary<UnaryKind::sqrt>);
  register_op("Exp", make_unary<UnaryKind::exp>);
  register_op("Log", make_unary<UnaryKind::log>);
  register_op("Abs", make_unary<UnaryKind::abs>);
  register_op("Neg", make_unary<UnaryKind::neg>);
  register_op("Reciprocal", make_unary<UnaryKind::reciprocal>);
  register_op("Floor", make_unary<UnaryKind::floor>);
  register_op("Ceil", make_unary<UnaryKind::ceil>);
  register_op("Round", make_unary<UnaryKind::round>);
  register_op("Sign", make_unary<UnaryKind::sign>);
  register_op("Sin", make_unary<UnaryKind::sin>);
  register_op("Cos", make_unary<UnaryKind::cos>);
  register_op("Softplus", make_unary<UnaryKind::softplus>);
  register_op("Clip", make_unary<UnaryKind::clip>);
  register_op("Add", make_binary<BinKind::add>);
  register_op("Sub", make_binary<BinKind::sub>);
  register_op("Mul", make_binary<BinKind::mul>);
  register_op("Div", make_binary<BinKind::div>);
  register_op("Pow", make_binary<BinKind::pow>);
  register_op("Mod", make_binary<BinKind::mod>);
  register_op("PRelu", make_binary<BinKind::prelu>);
  register_op("Equal", make_binary<BinKind::eq>);
  register_op("Less", make_binary<BinKind::lt>);
  register_op("Greater", make_binary<BinKind::gt>);
  register_op("LessOrEqual", make_binary<BinKind::le>);
  register_op("GreaterOrEqual", make_binary<BinKind::ge>);
  register_op("And", make_binary<BinKind::and_>);
  register_op("Or", make_binary<BinKind::or_>);
  register_op("Xor", make_binary<BinKind::xor_>);
  register_op("Min", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<VariadicOp>(n, o, BinKind::min, false); });
  register_op("Max", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<VariadicOp>(n, o, BinKind::max, false); });
  register_op("Sum", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<VariadicOp>(n, o, BinKind::add, false); });
  register_op("Mean", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<VariadicOp>(n, o, BinKind::add, true); });
  register_op("Where", make_op<WhereOp>);
  register_op("Not", make_op<NotOp>);
}

}  // namespace voxinfer::graph
