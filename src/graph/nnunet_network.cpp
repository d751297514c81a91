#include "voxinfer/graph/nnunet_network.h"

#include <cstring>
#include <utility>

#include "voxinfer/core/error.h"

namespace voxinfer::graph {
namespace {

using Ints = std::vector<std::int64_t>;

Attribute ints_attr(Ints v) {
  return Attribute::make_ints(std::move(v));
}

// Builds the graph node by node while looking weights up in the state dict.
class Builder {
 public:
  Builder(const NnunetArchitecture& arch, const std::map<std::string, Tensor>& sd, std::string what)
      : a_(arch), sd_(sd), what_(std::move(what)) {}

  Graph take() { return std::move(g_); }
  Graph& graph() { return g_; }

  // Spatial triple (D, H, W) of a per-stage list; 2D lists get a leading 1.
  Ints spatial(const Ints& v) const { return a_.dims == 2 ? Ints{1, v[0], v[1]} : v; }

  // A weight from the state dict with the expected PyTorch shape; 2D kernels become depth 1.
  std::string weight(const std::string& name, const Ints& torch_shape) {
    const Tensor* t = find(name);
    if (!t)
      fail(ErrorCode::invalid_model,
           what_ + ": the checkpoint has no tensor '" + name + "' that the architecture in plans.json needs");
    const Shape want(torch_shape);
    if (t->shape() != want)
      fail(ErrorCode::invalid_model, what_ + ": tensor '" + name + "' is " + t->shape().str() +
                                         ", the architecture in plans.json needs " + want.str());
    if (t->dtype() != DType::f32)
      fail(ErrorCode::invalid_model, what_ + ": tensor '" + name + "' is not floating point");
    Shape stored = want;
    if (a_.dims == 2 && want.rank() == 4) stored = Shape{want[0], want[1], 1, want[2], want[3]};
    Tensor copy(stored, DType::f32);
    std::memcpy(copy.raw(), t->raw(), static_cast<std::size_t>(t->numel()) * sizeof(float));
    const std::string key = "w" + std::to_string(g_.initializers.size()) + ":" + name;
    g_.initializers[key] = std::move(copy);
    return key;
  }
  bool has(const std::string& name) const { return find(name) != nullptr; }

  std::string constant(const std::string& name, std::int64_t n, float value) {
    Tensor t(Shape{n}, DType::f32);
    for (std::int64_t i = 0; i < n; ++i) t.data<float>()[i] = value;
    const std::string key = "c" + std::to_string(g_.initializers.size()) + ":" + name;
    g_.initializers[key] = std::move(t);
    return key;
  }

  std::string node(const std::string& op, std::vector<std::string> inputs, std::map<std::string, Attribute> attrs,
                   const std::string& hint) {
    Node n;
    n.op_type = op;
    n.name = hint + "/" + op + "_" + std::to_string(g_.nodes.size());
    n.inputs = std::move(inputs);
    n.outputs = {n.name};
    n.attrs = std::move(attrs);
    g_.nodes.push_back(n);
    return n.name;
  }

  // nn.ConvNd with "same" padding (k - 1) / 2, as ConvDropoutNormReLU builds it.
  std::string conv(const std::string& x, const std::string& prefix, std::int64_t cin, std::int64_t cout,
                   const Ints& kernel, const Ints& stride, bool bias) {
    Ints shape{cout, cin};
    for (auto k : kernel) shape.push_back(k);
    const Ints k3 = spatial(kernel), s3 = spatial(stride);
    Ints pads(6);
    for (int i = 0; i < 3; ++i)
      pads[static_cast<std::size_t>(i)] = pads[static_cast<std::size_t>(i + 3)] =
          (k3[static_cast<std::size_t>(i)] - 1) / 2;
    std::vector<std::string> in{x, weight(prefix + ".weight", shape)};
    if (bias) in.push_back(weight(prefix + ".bias", {cout}));
    return node("Conv", in, {{"kernel_shape", ints_attr(k3)}, {"strides", ints_attr(s3)}, {"pads", ints_attr(pads)}},
                prefix);
  }

  std::string norm(const std::string& x, const std::string& prefix, std::int64_t c) {
    const float eps = static_cast<float>(a_.norm_eps);
    switch (a_.norm) {
      case NnunetArchitecture::Norm::none:
        return x;
      case NnunetArchitecture::Norm::instance: {
        const std::string scale =
            a_.norm_affine ? weight(prefix + ".weight", {c}) : constant(prefix + ".weight", c, 1.f);
        const std::string b = a_.norm_affine ? weight(prefix + ".bias", {c}) : constant(prefix + ".bias", c, 0.f);
        return node("InstanceNormalization", {x, scale, b}, {{"epsilon", Attribute::make_float(eps)}}, prefix);
      }
      case NnunetArchitecture::Norm::batch: {
        const std::string scale =
            a_.norm_affine ? weight(prefix + ".weight", {c}) : constant(prefix + ".weight", c, 1.f);
        const std::string b = a_.norm_affine ? weight(prefix + ".bias", {c}) : constant(prefix + ".bias", c, 0.f);
        const std::string mean = weight(prefix + ".running_mean", {c}), var = weight(prefix + ".running_var", {c});
        return node("BatchNormalization", {x, scale, b, mean, var}, {{"epsilon", Attribute::make_float(eps)}}, prefix);
      }
    }
    return x;
  }

  std::string nonlin(const std::string& x, const std::string& hint) {
    switch (a_.nonlin) {
      case NnunetArchitecture::Nonlin::none:
        return x;
      case NnunetArchitecture::Nonlin::relu:
        return node("Relu", {x}, {}, hint);
      case NnunetArchitecture::Nonlin::leaky_relu:
        return node("LeakyRelu", {x}, {{"alpha", Attribute::make_float(static_cast<float>(a_.negative_slope))}}, hint);
    }
    return x;
  }

  // ConvDropoutNormReLU (dropout is the identity at inference). The state dict holds each
  // layer twice, as `.conv`/`.norm` and as `.all_modules.<i>`; the first names are used, the
  // second are the fallback.
  std::string conv_norm_nonlin(const std::string& x, const std::string& prefix, std::int64_t cin, std::int64_t cout,
                               const Ints& kernel, const Ints& stride, bool bias, bool with_nonlin) {
    const bool named = has(prefix + ".conv.weight");
    const std::string conv_name = named ? prefix + ".conv" : prefix + ".all_modules.0";
    std::string y = conv(x, conv_name, cin, cout, kernel, stride, bias);
    const bool has_norm = a_.norm != NnunetArchitecture::Norm::none;
    const std::string norm_name = named ? prefix + ".norm" : prefix + ".all_modules." + (has_norm ? "1" : "0");
    if (a_.nonlin_first && with_nonlin && has_norm) {
      y = nonlin(y, prefix);
      return norm(y, norm_name, cout);
    }
    y = norm(y, norm_name, cout);
    return with_nonlin ? nonlin(y, prefix) : y;
  }

  // StackedConvBlocks at `prefix` (its convs are `prefix.convs.<i>`).
  std::string stacked_convs(const std::string& x, const std::string& prefix, std::int64_t n, std::int64_t cin,
                            std::int64_t cout, const Ints& kernel, const Ints& first_stride) {
    std::string y = x;
    const Ints one(kernel.size(), 1);
    for (std::int64_t i = 0; i < n; ++i)
      y = conv_norm_nonlin(y, prefix + ".convs." + std::to_string(i), i == 0 ? cin : cout, cout, kernel,
                           i == 0 ? first_stride : one, a_.conv_bias, true);
    return y;
  }

  // BasicBlockD (ResNet-D): conv1 (norm, nonlin), conv2 (norm), skip = [avg pool if strided]
  // [1x1 conv + norm if the channels change], sum, nonlin.
  std::string basic_block(const std::string& x, const std::string& prefix, std::int64_t cin, std::int64_t cout,
                          const Ints& kernel, const Ints& stride) {
    const Ints one(kernel.size(), 1);
    std::string y = conv_norm_nonlin(x, prefix + ".conv1", cin, cout, kernel, stride, a_.conv_bias, true);
    y = conv_norm_nonlin(y, prefix + ".conv2", cout, cout, kernel, one, a_.conv_bias, false);
    bool strided = false;
    for (auto s : stride) strided = strided || s != 1;
    std::string skip = x;
    int idx = 0;
    if (strided) {
      const Ints s3 = spatial(stride);
      skip = node("AveragePool", {skip}, {{"kernel_shape", ints_attr(s3)}, {"strides", ints_attr(s3)}},
                  prefix + ".skip.0");
      ++idx;
    }
    if (cin != cout)
      skip = conv_norm_nonlin(skip, prefix + ".skip." + std::to_string(idx), cin, cout, one, one, false, false);
    y = node("Add", {y, skip}, {}, prefix);
    return nonlin(y, prefix);
  }

  const NnunetArchitecture& arch() const { return a_; }

 private:
  const Tensor* find(const std::string& name) const {
    auto it = sd_.find(name);
    return it == sd_.end() ? nullptr : &it->second;
  }

  const NnunetArchitecture& a_;
  const std::map<std::string, Tensor>& sd_;
  std::string what_;
  Graph g_;
};

}  // namespace

std::string NnunetArchitecture::kind_name() const {
  return kind == Kind::plain_conv_unet ? "PlainConvUNet" : "ResidualEncoderUNet";
}

void NnunetArchitecture::validate(const std::string& what) const {
  const auto bad = [&](const std::string& m) { fail(ErrorCode::invalid_model, what + ": " + m); };
  const std::size_t n = n_stages();
  if (dims != 2 && dims != 3) bad("only 2D and 3D convolutions are supported");
  if (n < 2 || n > 16) bad("n_stages must be 2..16, got " + std::to_string(n));
  if (input_channels < 1 || input_channels > 4096)
    bad("impossible input channel count " + std::to_string(input_channels));
  if (num_classes < 1 || num_classes > 65535)
    bad("impossible number of segmentation heads " + std::to_string(num_classes));
  if (kernel_sizes.size() != n || strides.size() != n || n_conv_per_stage.size() != n)
    bad("features_per_stage, kernel_sizes, strides and the convs/blocks per stage must have one entry per stage");
  if (n_conv_per_stage_decoder.size() != n - 1) bad("n_conv_per_stage_decoder must have n_stages - 1 entries");
  for (std::size_t s = 0; s < n; ++s) {
    if (features[s] < 1 || features[s] > 65536) bad("impossible feature count at stage " + std::to_string(s));
    if (kernel_sizes[s].size() != static_cast<std::size_t>(dims) || strides[s].size() != static_cast<std::size_t>(dims))
      bad("stage " + std::to_string(s) + ": kernel size and stride need " + std::to_string(dims) + " entries");
    for (std::size_t d = 0; d < kernel_sizes[s].size(); ++d) {
      if (kernel_sizes[s][d] < 1 || kernel_sizes[s][d] > 15)
        bad("stage " + std::to_string(s) + ": kernel size must be 1..15");
      if (strides[s][d] < 1 || strides[s][d] > 16) bad("stage " + std::to_string(s) + ": stride must be 1..16");
    }
    if (n_conv_per_stage[s] < 1 || n_conv_per_stage[s] > 64)
      bad("stage " + std::to_string(s) + ": convs/blocks per stage must be 1..64");
    if (s + 1 < n && (n_conv_per_stage_decoder[s] < 1 || n_conv_per_stage_decoder[s] > 64))
      bad("decoder stage " + std::to_string(s) + ": convs per stage must be 1..64");
  }
  if (!(norm_eps > 0) || norm_eps > 1) bad("norm eps must be in (0, 1]");
  if (stem_channels && (*stem_channels < 1 || *stem_channels > 65536)) bad("impossible stem_channels");
}

Graph build_nnunet_network(const NnunetArchitecture& a, const std::map<std::string, Tensor>& state_dict,
                           const std::string& what) {
  a.validate(what);
  Builder b(a, state_dict, what);
  Graph& g = b.graph();
  g.name = a.kind_name();
  g.producer = "nnU-Net plans";
  g.opset = 17;
  ValueInfo in;
  in.name = "input";
  in.has_shape = true;
  in.dims = {Dim{-1, "N"}, Dim{a.input_channels, ""}, Dim{-1, "D"}, Dim{-1, "H"}, Dim{-1, "W"}};
  if (a.dims == 2) in.dims[2] = Dim{1, ""};
  g.inputs.push_back(in);

  const std::size_t n = a.n_stages();
  std::vector<std::string> skips;
  std::string x = "input";
  std::int64_t cin = a.input_channels;
  if (a.kind == NnunetArchitecture::Kind::plain_conv_unet) {
    for (std::size_t s = 0; s < n; ++s) {
      x = b.stacked_convs(x, "encoder.stages." + std::to_string(s) + ".0", a.n_conv_per_stage[s], cin, a.features[s],
                          a.kernel_sizes[s], a.strides[s]);
      cin = a.features[s];
      skips.push_back(x);
    }
  } else {
    const std::int64_t stem = a.stem_channels.value_or(a.features[0]);
    const Ints one(static_cast<std::size_t>(a.dims), 1);
    x = b.stacked_convs(x, "encoder.stem", 1, cin, stem, a.kernel_sizes[0], one);
    cin = stem;
    for (std::size_t s = 0; s < n; ++s) {
      for (std::int64_t k = 0; k < a.n_conv_per_stage[s]; ++k) {
        x = b.basic_block(x, "encoder.stages." + std::to_string(s) + ".blocks." + std::to_string(k),
                          k == 0 ? cin : a.features[s], a.features[s], a.kernel_sizes[s], k == 0 ? a.strides[s] : one);
      }
      cin = a.features[s];
      skips.push_back(x);
    }
  }

  // UNetDecoder: transposed convolution up, concat with the skip, stacked convs; only the
  // last (full-resolution) segmentation layer runs at inference.
  std::string lres = skips.back();
  for (std::size_t s = 0; s + 1 < n; ++s) {
    const std::size_t below = n - 1 - s, skip = n - 2 - s;
    const std::int64_t c_below = a.features[below], c_skip = a.features[skip];
    const Ints& st = a.strides[below];
    const std::string tp = "decoder.transpconvs." + std::to_string(s);
    Ints wshape{c_below, c_skip};
    for (auto k : st) wshape.push_back(k);
    std::vector<std::string> tin{lres, b.weight(tp + ".weight", wshape)};
    if (a.conv_bias) tin.push_back(b.weight(tp + ".bias", {c_skip}));
    const Ints s3 = b.spatial(st);
    std::string up = b.node("ConvTranspose", tin, {{"kernel_shape", ints_attr(s3)}, {"strides", ints_attr(s3)}}, tp);
    std::string cat =
        b.node("Concat", {up, skips[skip]}, {{"axis", Attribute::make_int(1)}}, "decoder.stages." + std::to_string(s));
    lres = b.stacked_convs(cat, "decoder.stages." + std::to_string(s), a.n_conv_per_stage_decoder[s], 2 * c_skip,
                           c_skip, a.kernel_sizes[skip], Ints(static_cast<std::size_t>(a.dims), 1));
  }
  const Ints one(static_cast<std::size_t>(a.dims), 1);
  b.conv(lres, "decoder.seg_layers." + std::to_string(n - 2), a.features[0], a.num_classes, one, one, true);
  g.nodes.back().outputs[0] = "logits";  // the head's output is the graph output
  ValueInfo vo;
  vo.name = "logits";
  vo.has_shape = false;
  g.outputs.push_back(vo);
  g.toposort();
  return b.take();
}

}  // namespace voxinfer::graph
