// TF.js layers / Keras JSON importer: builds voxinfer IR nodes (Conv, ConvTranspose,
// Gemm, BatchNormalization, pooling, Resize, Concat, Add, activations) from the
// topology, and loads the weight shards. Keras tensors are channels_last (NDHWC); the
// imported graph is channels_first (NCDHW) throughout, so its input and output are NCDHW.
#include "voxinfer/graph/tfjs_import.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace voxinfer::graph {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Importer {
  std::string file;
  Graph g;
  std::map<std::string, Tensor> weights;            // "layer/kernel" -> tensor (as stored: channels_last)
  std::map<std::string, std::string> layer_output;  // layer name -> value name
  std::map<std::string, int> layer_rank;            // layer name -> rank of its output (for axis mapping)
  int counter = 0;

  [[noreturn]] void bad(const std::string& what) const { throw Error(ErrorCode::invalid_model, file + ": " + what); }
  [[noreturn]] void unsupported(const std::string& what) const { throw Error(ErrorCode::unsupported, file + ": " + what); }

  std::string fresh(const std::string& base) { return base + "__" + std::to_string(counter++); }

  std::string add_const(const std::string& name, Tensor t) {
    const std::string n = fresh(name);
    g.initializers[n] = std::move(t);
    return n;
  }

  std::string add_node(const std::string& op, const std::string& name, std::vector<std::string> inputs,
                       std::map<std::string, Attribute> attrs = {}) {
    Node n;
    n.op_type = op;
    n.name = name;
    n.inputs = std::move(inputs);
    n.outputs = {fresh(name + "_" + op)};
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
    return n.outputs[0];
  }

  const Tensor& weight(const std::string& layer, const std::string& what) {
    for (const std::string& key : {layer + "/" + what, layer + "/" + what + ":0"}) {
      const auto it = weights.find(key);
      if (it != weights.end()) return it->second;
    }
    // Some converters prefix with the model name: match the suffix.
    for (const auto& [k, t] : weights)
      if (k.size() > layer.size() + what.size() + 1 && k.ends_with("/" + layer + "/" + what)) return t;
    bad("layer '" + layer + "': weight '" + what + "' is missing from the weights manifest");
  }

  void load_weights(const json& manifest, const fs::path& dir) {
    if (!manifest.is_array()) bad("weightsManifest must be an array");
    for (const auto& group : manifest) {
      std::string blob;
      for (const auto& p : group.at("paths")) {
        const std::string rel = p.get<std::string>();
        if (fs::path(rel).is_absolute() || rel.find("..") != std::string::npos) bad("weight shard path '" + rel + "' must stay inside the model folder");
        std::error_code ec;
        if (fs::exists(dir / rel, ec) && !fs::is_regular_file(dir / rel, ec))
          bad("weight shard '" + rel + "' is not a regular file");
        std::ifstream in(dir / rel, std::ios::binary);
        if (!in) throw Error(ErrorCode::invalid_model, file + ": cannot open weight shard '" + (dir / rel).string() + "'");
        blob.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
      std::size_t off = 0;
      for (const auto& w : group.at("weights")) {
        const std::string name = w.at("name").get<std::string>();
        const std::string dtype = w.value("dtype", "float32");
        if (w.contains("quantization")) unsupported("weight '" + name + "' is quantized (not supported)");
        if (dtype != "float32") unsupported("weight '" + name + "' has dtype " + dtype + " (only float32)");
        std::vector<std::int64_t> shape = w.at("shape").get<std::vector<std::int64_t>>();
        if (shape.size() > static_cast<std::size_t>(Shape::kMaxRank) || !Shape::numel_fits(shape))
          bad("weight '" + name + "' has a shape of negative, too many or too large dimensions");
        const Shape s(shape);
        const std::size_t bytes = static_cast<std::size_t>(s.numel()) * 4;
        if (off + bytes > blob.size()) bad("weight shards are shorter than the manifest says (at '" + name + "')");
        Tensor t(s, DType::f32);
        std::memcpy(t.raw(), blob.data() + off, bytes);
        off += bytes;
        weights[name] = t;
      }
      if (off != blob.size()) bad("weight shards hold " + std::to_string(blob.size() - off) + " bytes more than the manifest lists");
    }
  }

  // Keras axis of a channels_last tensor of rank r -> voxinfer channels_first axis.
  static std::int64_t map_axis(std::int64_t a, int r) {
    if (a < 0) a += r;
    if (r <= 2 || a == 0) return a;
    if (a == r - 1) return 1;
    return a + 1;
  }

  std::string activation(const std::string& name, const std::string& act, const std::string& x) {
    if (act.empty() || act == "linear") return x;
    if (act == "relu") return add_node("Relu", name, {x});
    if (act == "sigmoid") return add_node("Sigmoid", name, {x});
    if (act == "tanh") return add_node("Tanh", name, {x});
    if (act == "elu") return add_node("Elu", name, {x});
    // Keras and TF.js "gelu" is the exact form x * (1 + erf(x / sqrt 2)) / 2; "gelu_new" the tanh one.
    if (act == "gelu") return add_node("Gelu", name, {x});
    if (act == "gelu_new") return add_node("Gelu", name, {x}, {{"approximate", Attribute::make_string("tanh")}});
    if (act == "selu") return add_node("Selu", name, {x});
    if (act == "softplus") return add_node("Softplus", name, {x});
    if (act == "relu6") return add_node("Clip", name, {x}, {{"min", Attribute::make_float(0)}, {"max", Attribute::make_float(6)}});
    if (act == "hard_sigmoid") return add_node("HardSigmoid", name, {x});
    if (act == "softmax") return add_node("Softmax", name, {x}, {{"axis", Attribute::make_int(1)}});
    unsupported("layer '" + name + "': activation '" + act + "' is not supported");
  }

  // A Keras per-axis setting (strides, dilation_rate, pool_size): one number for every axis
  // or one per spatial axis, each at least 1 (a stride of 0 would divide by zero).
  std::vector<std::int64_t> axis_values(const std::string& layer, const json& cfg, const std::string& key,
                                        std::int64_t def, int ns) const {
    const json v = cfg.value(key, json());
    std::vector<std::int64_t> r;
    if (v.is_null())
      r.assign(static_cast<std::size_t>(ns), def);
    else if (v.is_number_integer())
      r.assign(static_cast<std::size_t>(ns), v.get<std::int64_t>());
    else if (v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_number_integer(); }))
      r = v.get<std::vector<std::int64_t>>();
    else
      bad("layer '" + layer + "': '" + key + "' must be an integer or a list of integers");
    if (static_cast<int>(r.size()) != ns)
      bad("layer '" + layer + "': '" + key + "' has " + std::to_string(r.size()) + " values, expected " +
          std::to_string(ns));
    for (const auto x : r)
      if (x < 1 || x > kMaxAxisValue)
        bad("layer '" + layer + "': '" + key + "' value " + std::to_string(x) + " must be in [1, 2^24]");
    return r;
  }
  static constexpr std::int64_t kMaxAxisValue = std::int64_t{1} << 24;

  // Kernel [k..., in, out] (channels_last) -> [out, in, k...].
  static Tensor to_oihw(const Tensor& k) {
    const int r = k.rank();
    std::vector<int> perm{r - 1, r - 2};
    for (int i = 0; i < r - 2; ++i) perm.push_back(i);
    return k.permute(perm).clone();
  }

  std::string convert_layer(const std::string& cls, const std::string& name, const json& cfg, const std::vector<std::string>& in,
                            const std::vector<int>& in_ranks, int& out_rank) {
    auto need_inputs = [&](std::size_t n) {
      if (in.size() != n) bad("layer '" + name + "' (" + cls + ") expects " + std::to_string(n) + " input(s), got " + std::to_string(in.size()));
    };
    const int r0 = in_ranks.empty() ? 0 : in_ranks[0];
    out_rank = r0;
    if (cfg.contains("data_format") && cfg["data_format"].is_string() && cfg["data_format"] != "channels_last")
      unsupported("layer '" + name + "': data_format " + cfg["data_format"].get<std::string>() + " (only channels_last)");
    if (cls == "Conv3D" || cls == "Conv2D" || cls == "Conv1D" || cls == "Conv3DTranspose" || cls == "Conv2DTranspose") {
      need_inputs(1);
      const bool transposed = cls.ends_with("Transpose");
      const int ns = cls[4] - '0';
      const Tensor& k = weight(name, "kernel");
      if (k.rank() != ns + 2) bad("layer '" + name + "': kernel rank " + std::to_string(k.rank()));
      std::vector<std::int64_t> ks(k.shape().dims().begin(), k.shape().dims().begin() + ns);
      const auto strides = axis_values(name, cfg, "strides", 1, ns);
      const auto dil = axis_values(name, cfg, "dilation_rate", 1, ns);
      const std::string padding = cfg.value("padding", "valid");
      const std::int64_t groups = cfg.value("groups", 1);
      if (groups < 1) bad("layer '" + name + "': groups " + std::to_string(groups) + " must be at least 1");
      std::map<std::string, Attribute> attrs{{"kernel_shape", Attribute::make_ints(ks)},
                                             {"strides", Attribute::make_ints(strides)},
                                             {"dilations", Attribute::make_ints(dil)},
                                             {"group", Attribute::make_int(groups)}};
      if (padding != "same" && padding != "valid") unsupported("layer '" + name + "': padding '" + padding + "'");
      Tensor w;
      if (!transposed) {
        attrs["auto_pad"] = Attribute::make_string(padding == "same" ? "SAME_UPPER" : "VALID");
        w = to_oihw(k);
      } else {
        // Keras transposed kernels are [k..., out, in]; ONNX wants [in, out, k...].
        const int r = k.rank();
        std::vector<int> perm{r - 1, r - 2};
        for (int i = 0; i < r - 2; ++i) perm.push_back(i);
        w = k.permute(perm).clone();
        std::vector<std::int64_t> pads(static_cast<std::size_t>(2 * ns), 0), out_pad(static_cast<std::size_t>(ns), 0);
        if (padding == "same") {
          for (int i = 0; i < ns; ++i) {
            const auto j = static_cast<std::size_t>(i);
            const std::int64_t total = (ks[j] - 1) * dil[j] + 1 - strides[j];
            if (total >= 0) {
              pads[j] = total / 2;
              pads[j + static_cast<std::size_t>(ns)] = total - total / 2;
            } else {
              out_pad[j] = -total;
            }
          }
        }
        attrs["pads"] = Attribute::make_ints(pads);
        attrs["output_padding"] = Attribute::make_ints(out_pad);
      }
      std::vector<std::string> inputs{in[0], add_const(name + "_W", w)};
      if (cfg.value("use_bias", true)) inputs.push_back(add_const(name + "_B", weight(name, "bias")));
      const std::string y = add_node(transposed ? "ConvTranspose" : "Conv", name, inputs, attrs);
      return activation(name, cfg.value("activation", "linear"), y);
    }
    if (cls == "Dense") {
      need_inputs(1);
      if (r0 != 2) unsupported("layer '" + name + "': Dense on a rank-" + std::to_string(r0) + " input (only after Flatten or global pooling)");
      std::vector<std::string> inputs{in[0], add_const(name + "_W", weight(name, "kernel"))};
      if (cfg.value("use_bias", true)) inputs.push_back(add_const(name + "_B", weight(name, "bias")));
      const std::string y = add_node("Gemm", name, inputs);
      return activation(name, cfg.value("activation", "linear"), y);
    }
    if (cls == "BatchNormalization") {
      need_inputs(1);
      const auto axis = cfg.value("axis", json(-1));
      const std::int64_t a = axis.is_array() ? axis[0].get<std::int64_t>() : axis.get<std::int64_t>();
      if (map_axis(a, r0) != 1) unsupported("layer '" + name + "': BatchNormalization over a non-channel axis");
      const Tensor& mean = weight(name, "moving_mean");
      const std::int64_t c = mean.numel();
      Tensor ones(Shape{c}, DType::f32), zeros(Shape{c}, DType::f32);
      for (std::int64_t i = 0; i < c; ++i) ones.data<float>()[i] = 1.f;
      const Tensor gamma = cfg.value("scale", true) ? weight(name, "gamma") : ones;
      const Tensor beta = cfg.value("center", true) ? weight(name, "beta") : zeros;
      return add_node("BatchNormalization", name,
                      {in[0], add_const(name + "_gamma", gamma), add_const(name + "_beta", beta), add_const(name + "_mean", mean),
                       add_const(name + "_var", weight(name, "moving_variance"))},
                      {{"epsilon", Attribute::make_float(cfg.value("epsilon", 1e-3f))}});
    }
    if (cls == "Activation") {
      need_inputs(1);
      return activation(name, cfg.value("activation", "linear"), in[0]);
    }
    if (cls == "ReLU") {
      need_inputs(1);
      if (!cfg.value("max_value", json()).is_null() || cfg.value("threshold", 0.0) != 0.0)
        unsupported("layer '" + name + "': ReLU with max_value or threshold");
      const float slope = cfg.value("negative_slope", 0.f);
      if (slope != 0.f) return add_node("LeakyRelu", name, {in[0]}, {{"alpha", Attribute::make_float(slope)}});
      return add_node("Relu", name, {in[0]});
    }
    if (cls == "LeakyReLU") {
      need_inputs(1);
      return add_node("LeakyRelu", name, {in[0]}, {{"alpha", Attribute::make_float(cfg.value("alpha", 0.3f))}});
    }
    if (cls == "ELU") return add_node("Elu", name, {in[0]}, {{"alpha", Attribute::make_float(cfg.value("alpha", 1.0f))}});
    if (cls == "Softmax") {
      const std::int64_t a = cfg.value("axis", -1);
      return add_node("Softmax", name, {in[0]}, {{"axis", Attribute::make_int(map_axis(a, r0))}});
    }
    if (cls == "MaxPooling3D" || cls == "AveragePooling3D" || cls == "MaxPooling2D" || cls == "AveragePooling2D") {
      need_inputs(1);
      const int ns = r0 - 2;
      if (ns != cls[cls.size() - 2] - '0')
        bad("layer '" + name + "' (" + cls + ") gets a rank-" + std::to_string(r0) + " input");
      const auto pool = axis_values(name, cfg, "pool_size", 2, ns);
      const auto strides = cfg.value("strides", json()).is_null() ? pool : axis_values(name, cfg, "strides", 1, ns);
      const std::string padding = cfg.value("padding", "valid");
      if (padding != "same" && padding != "valid") unsupported("layer '" + name + "': padding '" + padding + "'");
      return add_node(cls.starts_with("Max") ? "MaxPool" : "AveragePool", name, {in[0]},
                      {{"kernel_shape", Attribute::make_ints(pool)},
                       {"strides", Attribute::make_ints(strides)},
                       {"auto_pad", Attribute::make_string(padding == "same" ? "SAME_UPPER" : "VALID")}});
    }
    if (cls == "GlobalAveragePooling3D" || cls == "GlobalMaxPooling3D" || cls == "GlobalAveragePooling2D" || cls == "GlobalMaxPooling2D") {
      need_inputs(1);
      const std::string y = add_node(cls.starts_with("GlobalMax") ? "GlobalMaxPool" : "GlobalAveragePool", name, {in[0]});
      out_rank = 2;
      if (cfg.value("keepdims", false)) unsupported("layer '" + name + "': keepdims");
      return add_node("Flatten", name + "_flatten", {y}, {{"axis", Attribute::make_int(1)}});
    }
    if (cls == "UpSampling3D" || cls == "UpSampling2D") {
      need_inputs(1);
      const int ns = r0 - 2;
      if (ns != cls[cls.size() - 2] - '0')
        bad("layer '" + name + "' (" + cls + ") gets a rank-" + std::to_string(r0) + " input");
      const auto size = axis_values(name, cfg, "size", 2, ns);
      if (cfg.value("interpolation", "nearest") != "nearest") unsupported("layer '" + name + "': interpolation other than nearest");
      std::vector<float> scales{1.f, 1.f};
      for (auto s : size) scales.push_back(static_cast<float>(s));
      return add_node("Resize", name, {in[0], "", add_const(name + "_scales", Tensor::from_vector(Shape{static_cast<std::int64_t>(scales.size())}, scales))},
                      {{"mode", Attribute::make_string("nearest")},
                       {"coordinate_transformation_mode", Attribute::make_string("asymmetric")},
                       {"nearest_mode", Attribute::make_string("floor")}});
    }
    if (cls == "Concatenate") {
      if (in.size() < 2) bad("layer '" + name + "': Concatenate needs two or more inputs");
      return add_node("Concat", name, in, {{"axis", Attribute::make_int(map_axis(cfg.value("axis", -1), r0))}});
    }
    if (cls == "Add" || cls == "Multiply" || cls == "Subtract" || cls == "Maximum" || cls == "Minimum" || cls == "Average") {
      if (in.size() < 2) bad("layer '" + name + "': " + cls + " needs two or more inputs");
      const std::string op = cls == "Add" ? "Sum" : cls == "Multiply" ? "Mul" : cls == "Subtract" ? "Sub" : cls == "Maximum" ? "Max" : cls == "Minimum" ? "Min" : "Mean";
      if ((op == "Mul" || op == "Sub") && in.size() != 2) unsupported("layer '" + name + "': " + cls + " of more than two inputs");
      return add_node(op, name, in);
    }
    if (cls == "Dropout" || cls == "SpatialDropout3D" || cls == "SpatialDropout2D" || cls == "GaussianNoise" || cls == "GaussianDropout") {
      need_inputs(1);
      return in[0];
    }
    if (cls == "Flatten") {
      need_inputs(1);
      out_rank = 2;
      if (r0 <= 2) return in[0];
      // Keras flattens channels_last: move channels back to the end first.
      std::vector<std::int64_t> perm{0};
      for (int i = 2; i < r0; ++i) perm.push_back(i);
      perm.push_back(1);
      const std::string t = add_node("Transpose", name + "_to_channels_last", {in[0]}, {{"perm", Attribute::make_ints(perm)}});
      return add_node("Flatten", name, {t}, {{"axis", Attribute::make_int(1)}});
    }
    if (cls == "Reshape") {
      need_inputs(1);
      auto target = cfg.at("target_shape").get<std::vector<std::int64_t>>();
      std::vector<std::int64_t> full{0};
      std::string x = in[0];
      if (r0 > 2) {  // back to channels_last before reshaping
        std::vector<std::int64_t> perm{0};
        for (int i = 2; i < r0; ++i) perm.push_back(i);
        perm.push_back(1);
        x = add_node("Transpose", name + "_to_channels_last", {x}, {{"perm", Attribute::make_ints(perm)}});
      }
      for (auto t : target) full.push_back(t);
      std::string y = add_node("Reshape", name, {x, add_const(name + "_shape", Tensor::from_vector(Shape{static_cast<std::int64_t>(full.size())}, full))});
      out_rank = static_cast<int>(full.size());
      if (out_rank > 2) {
        std::vector<std::int64_t> perm{0, out_rank - 1};
        for (int i = 1; i < out_rank - 1; ++i) perm.push_back(i);
        y = add_node("Transpose", name + "_to_channels_first", {y}, {{"perm", Attribute::make_ints(perm)}});
      }
      return y;
    }
    unsupported("layer '" + name + "' of class " + cls + " is not supported");
  }

  static json layers_of(const json& model_config, std::string& cls) {
    cls = model_config.at("class_name").get<std::string>();
    const json& cfg = model_config.at("config");
    if (cfg.is_array()) return cfg;  // old Sequential
    return cfg.at("layers");
  }

  void add_input(const std::string& name, const json& cfg) {
    json shape = cfg.contains("batch_input_shape") ? cfg["batch_input_shape"] : cfg.value("batch_shape", json());
    if (!shape.is_array() || shape.size() < 2) bad("input layer '" + name + "' has no batch_input_shape");
    ValueInfo vi;
    vi.name = name;
    vi.dtype = DType::f32;
    vi.has_shape = true;
    const int r = static_cast<int>(shape.size());
    auto dim = [&](const json& v, const char* sym) {
      Dim d;
      if (v.is_null()) d.symbol = sym;
      else d.value = v.get<std::int64_t>();
      return d;
    };
    vi.dims.push_back(dim(shape[0], "N"));
    if (r > 2) vi.dims.push_back(dim(shape[static_cast<std::size_t>(r - 1)], "C"));
    static const char* kSyms[] = {"D", "H", "W", "S3", "S4"};
    for (int i = 1; i < (r > 2 ? r - 1 : r); ++i) vi.dims.push_back(dim(shape[static_cast<std::size_t>(i)], kSyms[std::min(i - 1, 4)]));
    g.inputs.push_back(vi);
    layer_output[name] = name;
    layer_rank[name] = r;
  }

  void run(const fs::path& path) {
    file = path.string();
    std::ifstream in(path);
    if (!in) throw Error(ErrorCode::io, file + ": cannot open");
    json j;
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {
      bad(std::string("not valid JSON: ") + e.what());
    }
    try {
      const json& topo = j.at("modelTopology");
      const json& mc = topo.contains("model_config") ? topo["model_config"] : topo;
      load_weights(j.at("weightsManifest"), path.parent_path());
      g.producer = j.value("convertedBy", json("")).is_string() ? j.value("convertedBy", "") : "";
      g.opset = 17;
      std::string cls;
      const json layers = layers_of(mc, cls);
      g.name = mc.at("config").is_object() ? mc["config"].value("name", "") : "";
      const bool sequential = cls == "Sequential";
      if (!sequential && cls != "Functional" && cls != "Model") unsupported("model class '" + cls + "'");
      std::string prev;
      int prev_rank = 0;
      for (std::size_t li = 0; li < layers.size(); ++li) {
        const json& L = layers[li];
        const std::string lcls = L.at("class_name").get<std::string>();
        const json& cfg = L.at("config");
        const std::string name = L.contains("name") ? L["name"].get<std::string>() : cfg.at("name").get<std::string>();
        if (lcls == "InputLayer") {
          add_input(name, cfg);
          prev = name;
          prev_rank = layer_rank[name];
          continue;
        }
        std::vector<std::string> ins;
        std::vector<int> ranks;
        if (sequential) {
          if (prev.empty()) {  // first layer carries the input shape
            add_input("input", cfg);
            prev = "input";
            prev_rank = layer_rank["input"];
          }
          ins.push_back(layer_output[prev]);
          ranks.push_back(prev_rank);
        } else {
          const json& inbound = L.at("inbound_nodes");
          if (inbound.size() != 1) unsupported("layer '" + name + "' is called " + std::to_string(inbound.size()) + " times (shared layers)");
          for (const auto& ref : inbound[0]) {
            const std::string src = ref.is_array() ? ref[0].get<std::string>() : ref.at("args")[0].at("config").at("keras_history")[0].get<std::string>();
            if (!layer_output.count(src)) bad("layer '" + name + "' refers to unknown layer '" + src + "'");
            ins.push_back(layer_output[src]);
            ranks.push_back(layer_rank[src]);
          }
        }
        int out_rank = 0;
        const std::string y = convert_layer(lcls, name, cfg, ins, ranks, out_rank);
        layer_output[name] = y;
        layer_rank[name] = out_rank;
        prev = name;
        prev_rank = out_rank;
      }
      std::vector<std::string> outs;
      if (sequential) {
        outs.push_back(prev);
      } else {
        for (const auto& o : mc.at("config").at("output_layers")) outs.push_back(o[0].get<std::string>());
      }
      for (const auto& o : outs) {
        if (!layer_output.count(o)) bad("output layer '" + o + "' is unknown");
        std::string v = layer_output[o];
        // Give the output the layer's name: rename the producing node's output (or add an
        // Identity when the output is an input).
        bool renamed = false;
        for (auto& n : g.nodes)
          for (auto& out : n.outputs)
            if (out == v && v != o) {
              out = o;
              renamed = true;
            }
        if (renamed) {
          for (auto& n : g.nodes)
            for (auto& i : n.inputs)
              if (i == v) i = o;
        } else if (v != o) {
          Node id;
          id.op_type = "Identity";
          id.name = o + "_output";
          id.inputs = {v};
          id.outputs = {o};
          g.nodes.push_back(id);
        }
        ValueInfo vi;
        vi.name = o;
        g.outputs.push_back(vi);
      }
    } catch (const json::exception& e) {
      bad(std::string("unexpected model.json structure: ") + e.what());
    }
    // Keras fixes the spatial size in batch_input_shape, but a fully convolutional network
    // runs on any size (sliding-window tiles): keep only batch and channels then.
    bool size_bound = false;
    for (const auto& n : g.nodes) size_bound = size_bound || n.op_type == "Flatten" || n.op_type == "Reshape" || n.op_type == "Gemm";
    if (!size_bound)
      for (auto& vi : g.inputs)
        for (std::size_t i = 2; i < vi.dims.size(); ++i) {
          vi.dims[i].value = -1;
          vi.dims[i].symbol = std::string(1, "DHW"[std::min<std::size_t>(i - 2, 2)]) + (i > 4 ? std::to_string(i) : "");
        }
    g.toposort();
  }
};

}  // namespace

Graph import_tfjs(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(ErrorCode::invalid_input, path + ": no such model file");
  Importer imp;
  imp.run(fs::path(path));
  return std::move(imp.g);
}

}  // namespace voxinfer::graph
