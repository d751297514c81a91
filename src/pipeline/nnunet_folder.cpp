// Reading an nnU-Net v2 results folder: dataset.json, plans.json (both schemas), folds and
// checkpoints, postprocessing.json; one network per fold.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "pipeline/nnunet_internal.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::nnunet {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // dataset.json label order is the heads' order for regions

namespace {

[[noreturn]] void bad(const std::string& file, const std::string& field, const std::string& what) {
  fail(ErrorCode::invalid_model, file + ": " + field + ": " + what);
}

json read_json(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec))
    fail(ErrorCode::invalid_model, p.string() + ": missing (an nnU-Net model folder needs it)");
  if (fs::file_size(p, ec) > (64u << 20))
    fail(ErrorCode::invalid_model, p.string() + ": larger than 64 MiB, not an nnU-Net JSON file");
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(ErrorCode::invalid_model, p.string() + ": not valid JSON (" + std::string(e.what()) + ")");
  }
}

const json& member(const json& j, const std::string& key, const std::string& file, const std::string& path) {
  if (!j.is_object() || !j.contains(key)) bad(file, path.empty() ? key : path + "." + key, "missing");
  return j.at(key);
}

std::int64_t as_int(const json& j, const std::string& file, const std::string& path) {
  if (j.is_number_integer() || j.is_number_unsigned()) return j.get<std::int64_t>();
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (d == static_cast<double>(static_cast<std::int64_t>(d)) && std::abs(d) < 1e15)
      return static_cast<std::int64_t>(d);
  }
  bad(file, path, "expected an integer");
}

double as_double(const json& j, const std::string& file, const std::string& path) {
  if (!j.is_number()) bad(file, path, "expected a number");
  const double d = j.get<double>();
  if (!std::isfinite(d)) bad(file, path, "expected a finite number");
  return d;
}

std::string as_string(const json& j, const std::string& file, const std::string& path) {
  if (!j.is_string()) bad(file, path, "expected a string");
  return j.get<std::string>();
}

std::vector<std::int64_t> int_list(const json& j, const std::string& file, const std::string& path) {
  if (!j.is_array() || j.size() > 64) bad(file, path, "expected a list of integers");
  std::vector<std::int64_t> v;
  for (std::size_t i = 0; i < j.size(); ++i) v.push_back(as_int(j[i], file, path + "[" + std::to_string(i) + "]"));
  return v;
}

std::vector<std::vector<std::int64_t>> int_lists(const json& j, const std::string& file, const std::string& path) {
  if (!j.is_array() || j.size() > 64) bad(file, path, "expected a list of lists of integers");
  std::vector<std::vector<std::int64_t>> v;
  for (std::size_t i = 0; i < j.size(); ++i) v.push_back(int_list(j[i], file, path + "[" + std::to_string(i) + "]"));
  return v;
}

// The class name after the last dot ("torch.nn.modules.conv.Conv3d" -> "Conv3d").
std::string short_name(const std::string& s) {
  const auto dot = s.rfind('.');
  return dot == std::string::npos ? s : s.substr(dot + 1);
}

// nnU-Net's PlansManager.get_configuration: a configuration may inherit from another one.
json resolve_configuration(const json& configs, const std::string& name, const std::string& file, int depth = 0) {
  if (depth > 16) bad(file, "configurations." + name, "inherits_from chain too long (a loop?)");
  if (!configs.is_object() || !configs.contains(name)) {
    std::string have;
    if (configs.is_object())
      for (const auto& [k, v] : configs.items()) have += (have.empty() ? "" : ", ") + k;
    bad(file, "configurations", "no configuration '" + name + "' (plans.json has: " + have + ")");
  }
  json c = configs.at(name);
  if (!c.is_object()) bad(file, "configurations." + name, "expected an object");
  if (c.contains("inherits_from")) {
    json parent = resolve_configuration(
        configs, as_string(c.at("inherits_from"), file, "configurations." + name + ".inherits_from"), file, depth + 1);
    for (const auto& [k, v] : c.items()) parent[k] = v;
    parent.erase("inherits_from");
    return parent;
  }
  return c;
}

ResamplingRule resampling_rule(const json& c, const std::string& key, const std::string& file,
                               const std::string& path) {
  ResamplingRule r;
  if (!c.contains(key)) return r;
  const json& k = c.at(key);
  const std::string p = path + "." + key;
  if (!k.is_object()) bad(file, p, "expected an object");
  if (k.contains("order")) r.order = static_cast<int>(as_int(k.at("order"), file, p + ".order"));
  if (k.contains("order_z")) r.order_z = static_cast<int>(as_int(k.at("order_z"), file, p + ".order_z"));
  if (k.contains("force_separate_z") && !k.at("force_separate_z").is_null()) {
    if (!k.at("force_separate_z").is_boolean()) bad(file, p + ".force_separate_z", "expected true, false or null");
    r.force_separate_z = k.at("force_separate_z").get<bool>();
  }
  if (r.order < 0 || r.order > 5 || r.order_z < 0 || r.order_z > 5) bad(file, p, "orders must be 0..5");
  return r;
}

void set_norm_op(graph::NnunetArchitecture& a, const json& kw, const std::string& file, const std::string& path) {
  if (!kw.contains("norm_op") || kw.at("norm_op").is_null()) {
    a.norm = graph::NnunetArchitecture::Norm::none;
    return;
  }
  const std::string n = short_name(as_string(kw.at("norm_op"), file, path + ".norm_op"));
  if (n == "InstanceNorm3d" || n == "InstanceNorm2d" || n == "InstanceNorm1d")
    a.norm = graph::NnunetArchitecture::Norm::instance;
  else if (n == "BatchNorm3d" || n == "BatchNorm2d" || n == "BatchNorm1d")
    a.norm = graph::NnunetArchitecture::Norm::batch;
  else
    fail(ErrorCode::unsupported,
         file + ": " + path + ".norm_op: '" + n + "' is not supported (InstanceNorm and BatchNorm are)");
  a.norm_eps = 1e-5;
  a.norm_affine = a.norm == graph::NnunetArchitecture::Norm::batch;  // torch defaults
  if (a.norm == graph::NnunetArchitecture::Norm::instance) a.norm_affine = false;
  if (kw.contains("norm_op_kwargs") && kw.at("norm_op_kwargs").is_object()) {
    const json& k = kw.at("norm_op_kwargs");
    if (k.contains("eps")) a.norm_eps = as_double(k.at("eps"), file, path + ".norm_op_kwargs.eps");
    if (k.contains("affine")) a.norm_affine = k.at("affine").get<bool>();
    if (k.contains("track_running_stats") && k.at("track_running_stats").is_boolean() &&
        k.at("track_running_stats").get<bool>() && a.norm == graph::NnunetArchitecture::Norm::instance)
      fail(ErrorCode::unsupported,
           file + ": " + path +
               ".norm_op_kwargs.track_running_stats: instance norm with running statistics is not supported");
  }
}

void set_nonlin(graph::NnunetArchitecture& a, const json& kw, const std::string& file, const std::string& path) {
  if (!kw.contains("nonlin") || kw.at("nonlin").is_null()) {
    a.nonlin = graph::NnunetArchitecture::Nonlin::none;
    return;
  }
  const std::string n = short_name(as_string(kw.at("nonlin"), file, path + ".nonlin"));
  if (n == "LeakyReLU") {
    a.nonlin = graph::NnunetArchitecture::Nonlin::leaky_relu;
    a.negative_slope = 0.01;
    if (kw.contains("nonlin_kwargs") && kw.at("nonlin_kwargs").is_object() &&
        kw.at("nonlin_kwargs").contains("negative_slope"))
      a.negative_slope =
          as_double(kw.at("nonlin_kwargs").at("negative_slope"), file, path + ".nonlin_kwargs.negative_slope");
  } else if (n == "ReLU") {
    a.nonlin = graph::NnunetArchitecture::Nonlin::relu;
  } else {
    fail(ErrorCode::unsupported, file + ": " + path + ".nonlin: '" + n + "' is not supported (LeakyReLU and ReLU are)");
  }
}

int conv_dims(const std::string& conv_op, const std::string& file, const std::string& path) {
  const std::string n = short_name(conv_op);
  if (n == "Conv3d") return 3;
  if (n == "Conv2d") return 2;
  fail(ErrorCode::unsupported, file + ": " + path + ": '" + n + "' is not supported (Conv2d and Conv3d are)");
}

// The current schema: architecture {network_class_name, arch_kwargs, _kw_requires_import}.
graph::NnunetArchitecture architecture_from_kwargs(const json& arch, const std::string& file, const std::string& path) {
  graph::NnunetArchitecture a;
  const std::string cls =
      short_name(as_string(member(arch, "network_class_name", file, path), file, path + ".network_class_name"));
  if (cls == "PlainConvUNet")
    a.kind = graph::NnunetArchitecture::Kind::plain_conv_unet;
  else if (cls == "ResidualEncoderUNet")
    a.kind = graph::NnunetArchitecture::Kind::residual_encoder_unet;
  else
    fail(ErrorCode::unsupported,
         file + ": " + path + ".network_class_name: '" + cls +
             "' is not supported (PlainConvUNet and ResidualEncoderUNet, incl. the ResEnc presets, are)");
  const std::string kp = path + ".arch_kwargs";
  const json& kw = member(arch, "arch_kwargs", file, path);
  if (!kw.is_object()) bad(file, kp, "expected an object");
  static const char* kKnown[] = {"n_stages",
                                 "features_per_stage",
                                 "conv_op",
                                 "kernel_sizes",
                                 "strides",
                                 "n_conv_per_stage",
                                 "n_blocks_per_stage",
                                 "n_conv_per_stage_decoder",
                                 "conv_bias",
                                 "norm_op",
                                 "norm_op_kwargs",
                                 "dropout_op",
                                 "dropout_op_kwargs",
                                 "nonlin",
                                 "nonlin_kwargs",
                                 "deep_supervision",
                                 "nonlin_first",
                                 "stem_channels",
                                 "block",
                                 "bottleneck_channels"};
  for (const auto& [k, v] : kw.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown))
      fail(ErrorCode::unsupported, file + ": " + kp + "." + k + ": an architecture argument voxinfer does not know");
  }
  a.dims = conv_dims(as_string(member(kw, "conv_op", file, kp), file, kp + ".conv_op"), file, kp + ".conv_op");
  const std::int64_t n = as_int(member(kw, "n_stages", file, kp), file, kp + ".n_stages");
  if (n < 2 || n > 16) bad(file, kp + ".n_stages", "must be 2..16");
  const auto per_stage = [&](const std::string& key, std::size_t count) {
    const json& v = member(kw, key, file, kp);
    if (v.is_number()) return std::vector<std::int64_t>(count, as_int(v, file, kp + "." + key));
    auto l = int_list(v, file, kp + "." + key);
    if (l.size() != count) bad(file, kp + "." + key, "expected " + std::to_string(count) + " entries");
    return l;
  };
  const auto per_stage_lists = [&](const std::string& key) {
    const json& v = member(kw, key, file, kp);
    std::vector<std::vector<std::int64_t>> out;
    if (v.is_number()) {
      out.assign(static_cast<std::size_t>(n),
                 std::vector<std::int64_t>(static_cast<std::size_t>(a.dims), as_int(v, file, kp + "." + key)));
      return out;
    }
    if (!v.is_array() || v.size() != static_cast<std::size_t>(n))
      bad(file, kp + "." + key, "expected " + std::to_string(n) + " entries");
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i].is_number())
        out.emplace_back(static_cast<std::size_t>(a.dims), as_int(v[i], file, kp + "." + key));
      else
        out.push_back(int_list(v[i], file, kp + "." + key + "[" + std::to_string(i) + "]"));
    }
    return out;
  };
  const auto un = static_cast<std::size_t>(n);
  a.features = per_stage("features_per_stage", un);
  a.kernel_sizes = per_stage_lists("kernel_sizes");
  a.strides = per_stage_lists("strides");
  if (a.kind == graph::NnunetArchitecture::Kind::plain_conv_unet)
    a.n_conv_per_stage = per_stage("n_conv_per_stage", un);
  else
    a.n_conv_per_stage = per_stage("n_blocks_per_stage", un);
  a.n_conv_per_stage_decoder = per_stage("n_conv_per_stage_decoder", un - 1);
  a.conv_bias = kw.contains("conv_bias") && kw.at("conv_bias").is_boolean() && kw.at("conv_bias").get<bool>();
  set_norm_op(a, kw, file, kp);
  set_nonlin(a, kw, file, kp);
  if (kw.contains("nonlin_first") && kw.at("nonlin_first").is_boolean())
    a.nonlin_first = kw.at("nonlin_first").get<bool>();
  if (kw.contains("stem_channels") && !kw.at("stem_channels").is_null())
    a.stem_channels = as_int(kw.at("stem_channels"), file, kp + ".stem_channels");
  if (kw.contains("block") && !kw.at("block").is_null()) {
    const std::string blk = short_name(as_string(kw.at("block"), file, kp + ".block"));
    if (blk != "BasicBlockD")
      fail(ErrorCode::unsupported, file + ": " + kp + ".block: '" + blk + "' is not supported (BasicBlockD is)");
  }
  return a;
}

// The older schema (nnU-Net 2.0-2.2): UNet_class_name, UNet_base_num_features, ...
graph::NnunetArchitecture architecture_from_old_schema(const json& c, const std::string& file,
                                                       const std::string& path) {
  graph::NnunetArchitecture a;
  const std::string cls = as_string(member(c, "UNet_class_name", file, path), file, path + ".UNet_class_name");
  if (cls == "PlainConvUNet")
    a.kind = graph::NnunetArchitecture::Kind::plain_conv_unet;
  else if (cls == "ResidualEncoderUNet")
    a.kind = graph::NnunetArchitecture::Kind::residual_encoder_unet;
  else
    fail(ErrorCode::unsupported, file + ": " + path + ".UNet_class_name: '" + cls + "' is not supported");
  a.kernel_sizes = int_lists(member(c, "conv_kernel_sizes", file, path), file, path + ".conv_kernel_sizes");
  a.strides = int_lists(member(c, "pool_op_kernel_sizes", file, path), file, path + ".pool_op_kernel_sizes");
  const std::size_t n = a.kernel_sizes.size();
  if (n < 2 || n > 16) bad(file, path + ".conv_kernel_sizes", "expected 2..16 stages");
  a.dims = static_cast<int>(a.kernel_sizes[0].size());
  const std::int64_t base =
      as_int(member(c, "UNet_base_num_features", file, path), file, path + ".UNet_base_num_features");
  const std::int64_t maxf =
      as_int(member(c, "unet_max_num_features", file, path), file, path + ".unet_max_num_features");
  if (base < 1 || base > 4096 || maxf < 1 || maxf > 65536)
    bad(file, path + ".UNet_base_num_features", "impossible feature counts");
  for (std::size_t i = 0; i < n; ++i) a.features.push_back(std::min(base << std::min<std::size_t>(i, 20), maxf));
  a.n_conv_per_stage =
      int_list(member(c, "n_conv_per_stage_encoder", file, path), file, path + ".n_conv_per_stage_encoder");
  a.n_conv_per_stage_decoder =
      int_list(member(c, "n_conv_per_stage_decoder", file, path), file, path + ".n_conv_per_stage_decoder");
  // get_network_from_plans of those versions: bias, affine InstanceNorm eps 1e-5, LeakyReLU 0.01.
  a.conv_bias = true;
  a.norm = graph::NnunetArchitecture::Norm::instance;
  a.norm_eps = 1e-5;
  a.norm_affine = true;
  a.nonlin = graph::NnunetArchitecture::Nonlin::leaky_relu;
  a.negative_slope = 0.01;
  return a;
}

Normalization normalization(const std::string& scheme, bool use_mask, const json& plans, std::size_t channel,
                            const std::string& file, const std::string& path) {
  Normalization n;
  n.name = scheme;
  n.use_mask_for_norm = use_mask;
  const std::string s = short_name(scheme);
  if (s == "CTNormalization") {
    n.scheme = Normalization::Scheme::ct;
    const std::string fp = "foreground_intensity_properties_per_channel";
    const json& all = member(plans, fp, file, "");
    const std::string key = std::to_string(channel);
    const json& p = member(all, key, file, fp);
    const std::string pp = fp + "." + key;
    n.mean = as_double(member(p, "mean", file, pp), file, pp + ".mean");
    n.std = as_double(member(p, "std", file, pp), file, pp + ".std");
    n.lower = as_double(member(p, "percentile_00_5", file, pp), file, pp + ".percentile_00_5");
    n.upper = as_double(member(p, "percentile_99_5", file, pp), file, pp + ".percentile_99_5");
  } else if (s == "ZScoreNormalization") {
    n.scheme = Normalization::Scheme::zscore;
  } else if (s == "NoNormalization") {
    n.scheme = Normalization::Scheme::none;
  } else if (s == "RescaleTo01Normalization") {
    n.scheme = Normalization::Scheme::rescale_to_01;
  } else if (s == "RGBTo01Normalization") {
    n.scheme = Normalization::Scheme::rgb_to_01;
  } else {
    fail(ErrorCode::unsupported, file + ": " + path + ": normalization '" + scheme + "' is not supported");
  }
  return n;
}

Dataset read_dataset(const fs::path& folder) {
  const fs::path p = folder / "dataset.json";
  const std::string file = p.string();
  const json j = read_json(p);
  Dataset d;
  const json* ch =
      j.contains("channel_names") ? &j.at("channel_names") : (j.contains("modality") ? &j.at("modality") : nullptr);
  if (!ch || !ch->is_object() || ch->empty()) bad(file, "channel_names", "missing or empty");
  d.channel_names.resize(ch->size());
  std::vector<bool> seen(ch->size(), false);
  for (const auto& [k, v] : ch->items()) {
    std::size_t idx = 0;
    try {
      std::size_t used = 0;
      idx = std::stoul(k, &used);
      if (used != k.size()) throw std::invalid_argument(k);
    } catch (const std::exception&) {
      bad(file, "channel_names." + k, "keys must be channel indices 0, 1, ...");
    }
    if (idx >= seen.size() || seen[idx]) bad(file, "channel_names." + k, "channel indices must be 0..N-1, each once");
    seen[idx] = true;
    d.channel_names[idx] = as_string(v, file, "channel_names." + k);
  }
  const json& labels = member(j, "labels", file, "");
  if (!labels.is_object() || labels.empty()) bad(file, "labels", "expected an object of name: value");
  bool has_background = false;
  for (const auto& [name, v] : labels.items()) {
    LabelEntry e;
    e.name = name;
    if (v.is_array()) {
      for (std::size_t i = 0; i < v.size(); ++i)
        e.values.push_back(static_cast<int>(as_int(v[i], file, "labels." + name)));
      if (e.values.empty()) bad(file, "labels." + name, "empty region");
    } else {
      e.values.push_back(static_cast<int>(as_int(v, file, "labels." + name)));
    }
    for (int x : e.values)
      if (x < 0 || x > 65535) bad(file, "labels." + name, "label values must be 0..65535");
    if (name == "ignore") {
      d.ignore_label = e.values[0];
      continue;
    }
    if (name == "background") {
      if (e.values.size() != 1 || e.values[0] != 0) bad(file, "labels.background", "must be 0");
      has_background = true;
    }
    if (e.values.size() > 1) d.has_regions = true;
    d.labels.push_back(std::move(e));
  }
  if (!has_background) bad(file, "labels", "no 'background' label (nnU-Net requires background = 0)");
  if (d.has_regions) {
    d.regions_class_order.clear();
    for (auto x : int_list(member(j, "regions_class_order", file, ""), file, "regions_class_order"))
      d.regions_class_order.push_back(static_cast<int>(x));
    if (static_cast<int>(d.regions_class_order.size()) != d.num_heads())
      bad(file, "regions_class_order", "needs one entry per foreground region (" + std::to_string(d.num_heads()) + ")");
  }
  if (j.contains("file_ending")) d.file_ending = as_string(j.at("file_ending"), file, "file_ending");
  d.reader.clear();
  if (j.contains("overwrite_image_reader_writer"))
    d.reader = as_string(j.at("overwrite_image_reader_writer"), file, "overwrite_image_reader_writer");
  return d;
}

std::vector<PostprocessingStep> read_postprocessing(const fs::path& folder) {
  std::vector<PostprocessingStep> steps;
  const fs::path p = folder / "postprocessing.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return steps;
  const std::string file = p.string();
  const json j = read_json(p);
  const json& fns = member(j, "postprocessing_fns", file, "");
  const json& kws = member(j, "postprocessing_kwargs", file, "");
  if (!fns.is_array() || !kws.is_array() || fns.size() != kws.size() || fns.size() > 1024)
    bad(file, "postprocessing_fns", "expected two lists of the same length");
  for (std::size_t i = 0; i < fns.size(); ++i) {
    const std::string path = "postprocessing_fns[" + std::to_string(i) + "]";
    const std::string fn = short_name(as_string(fns[i], file, path));
    if (fn != "remove_all_but_largest_component_from_segmentation")
      fail(ErrorCode::unsupported, file + ": " + path + ": '" + fn + "' is not supported");
    PostprocessingStep s;
    const json& kw = kws[i];
    const std::string kp = "postprocessing_kwargs[" + std::to_string(i) + "]";
    const json& lr = member(kw, "labels_or_regions", file, kp);
    if (lr.is_number()) {
      s.labels_or_regions.push_back({static_cast<int>(as_int(lr, file, kp + ".labels_or_regions"))});
    } else if (lr.is_array()) {
      for (const auto& e : lr) {
        if (e.is_array()) {
          std::vector<int> r;
          for (const auto& x : e) r.push_back(static_cast<int>(as_int(x, file, kp + ".labels_or_regions")));
          s.labels_or_regions.push_back(r);
        } else {
          s.labels_or_regions.push_back({static_cast<int>(as_int(e, file, kp + ".labels_or_regions"))});
        }
      }
    } else {
      bad(file, kp + ".labels_or_regions", "expected a label, a list of labels or a list of regions");
    }
    if (kw.contains("background_label"))
      s.background = static_cast<int>(as_int(kw.at("background_label"), file, kp + ".background_label"));
    steps.push_back(std::move(s));
  }
  return steps;
}

}  // namespace

int Dataset::num_heads() const {
  if (!has_regions) {
    int n = 0;
    for (const auto& l : labels) n = std::max(n, l.values[0] + 1);
    return n;
  }
  int n = 0;
  for (const auto& l : labels)
    if (!(l.values.size() == 1 && l.values[0] == 0)) ++n;
  return n;
}

std::vector<std::string> Dataset::head_names() const {
  std::vector<std::string> names;
  if (has_regions) {
    for (const auto& l : labels)
      if (!(l.values.size() == 1 && l.values[0] == 0)) names.push_back(l.name);
    return names;
  }
  names.assign(static_cast<std::size_t>(num_heads()), "");
  for (const auto& l : labels) names[static_cast<std::size_t>(l.values[0])] = l.name;
  return names;
}

bool is_model_folder(const fs::path& folder) {
  std::error_code ec;
  return fs::is_directory(folder, ec) && fs::is_regular_file(folder / "plans.json", ec) &&
         fs::is_regular_file(folder / "dataset.json", ec);
}

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const fs::path& Model::folder() const {
  return impl_->folder;
}
const Dataset& Model::dataset() const {
  return impl_->dataset;
}
const Configuration& Model::configuration() const {
  return impl_->config;
}
const std::vector<int>& Model::folds() const {
  return impl_->folds;
}
const std::vector<int>& Model::mirror_axes() const {
  return impl_->mirror_axes;
}
const std::array<int, 3>& Model::transpose_forward() const {
  return impl_->transpose_forward;
}
const std::vector<PostprocessingStep>& Model::postprocessing() const {
  return impl_->postprocessing;
}
std::string Model::trainer_name() const {
  return impl_->trainer;
}
std::int64_t Model::parameter_count() const {
  return impl_->sessions.empty() ? 0 : impl_->sessions[0].graph().parameter_count();
}
graph::Session& Model::session(std::size_t i) {
  return impl_->sessions.at(i);
}
const graph::Graph& Model::graph(std::size_t i) const {
  return impl_->sessions.at(i).graph();
}

Model Model::open(const fs::path& folder, const CheckpointLoader& loader, const LoadOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) fail(ErrorCode::invalid_input, folder.string() + ": model folder not found");
  if (!fs::is_regular_file(folder / "plans.json", ec) || !fs::is_regular_file(folder / "dataset.json", ec))
    fail(ErrorCode::invalid_model,
         folder.string() +
             ": not an nnU-Net results folder (it needs plans.json, dataset.json and fold_N/ folders; "
             "give the <trainer>__<plans>__<configuration> folder)");
  Model m;
  Impl& im = *m.impl_;
  im.folder = folder;
  im.dataset = read_dataset(folder);
  const fs::path plans_path = folder / "plans.json";
  const std::string pf = plans_path.string();
  const json plans = read_json(plans_path);

  // transpose_forward / backward.
  for (const char* key : {"transpose_forward", "transpose_backward"}) {
    if (!plans.contains(key)) continue;
    auto v = int_list(plans.at(key), pf, key);
    std::array<int, 3> t{};
    std::vector<bool> seen(3, false);
    if (v.size() != 3) bad(pf, key, "expected a permutation of 0, 1, 2");
    for (std::size_t i = 0; i < 3; ++i) {
      if (v[i] < 0 || v[i] > 2 || seen[static_cast<std::size_t>(v[i])])
        bad(pf, key, "expected a permutation of 0, 1, 2");
      seen[static_cast<std::size_t>(v[i])] = true;
      t[i] = static_cast<int>(v[i]);
    }
    if (std::string(key) == "transpose_forward") im.transpose_forward = t;
  }
  // dataset.json's overwrite_image_reader_writer wins over the plans' reader.
  if (im.dataset.reader.empty())
    im.dataset.reader = plans.contains("image_reader_writer")
                            ? as_string(plans.at("image_reader_writer"), pf, "image_reader_writer")
                            : "SimpleITKIO";
  if (im.dataset.reader != "SimpleITKIO" && im.dataset.reader != "NibabelIO" &&
      im.dataset.reader != "NibabelIOWithReorient")
    fail(ErrorCode::unsupported, pf + ": image_reader_writer: '" + im.dataset.reader +
                                     "' is not supported (SimpleITKIO, NibabelIO, NibabelIOWithReorient are)");

  // The configuration: from the folder name <trainer>__<plans>__<configuration> (or the name
  // a link points to), else from the first checkpoint's init_args.
  const json& configs = member(plans, "configurations", pf, "");
  // Folds.
  if (!options.folds.empty()) {
    im.folds = options.folds;
  } else {
    for (const auto& e : fs::directory_iterator(folder, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("fold_", 0) != 0 || !e.is_directory()) continue;
      const std::string num = n.substr(5);
      if (num == "all") {
        im.folds.push_back(-1);
        continue;
      }
      if (num.empty() || num.size() > 3 ||
          !std::all_of(num.begin(), num.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        continue;
      if (fs::exists(e.path() / options.checkpoint, ec)) im.folds.push_back(std::stoi(num));
    }
    std::sort(im.folds.begin(), im.folds.end());
    if (im.folds.empty())
      fail(ErrorCode::invalid_model, folder.string() + ": no fold_N/" + options.checkpoint + " found");
  }
  std::optional<Checkpoint> first_checkpoint;
  const auto checkpoint_path = [&](int f) {
    return folder / (f < 0 ? std::string("fold_all") : "fold_" + std::to_string(f)) / options.checkpoint;
  };
  std::string config_name = options.configuration;
  if (config_name.empty()) {
    std::vector<std::string> names{folder.filename().string()};
    if (names[0].empty()) names[0] = folder.parent_path().filename().string();
    std::error_code cec;
    const fs::path real = fs::canonical(folder, cec);
    if (!cec) names.push_back(real.filename().string());
    for (const auto& n : names) {
      const auto last = n.rfind("__");
      if (last == std::string::npos) continue;
      if (configs.contains(n.substr(last + 2))) {
        config_name = n.substr(last + 2);
        im.trainer = n.substr(0, n.find("__"));
        break;
      }
    }
  }
  if (config_name.empty() && !im.folds.empty() && fs::is_regular_file(checkpoint_path(im.folds[0]), ec)) {
    first_checkpoint = loader(checkpoint_path(im.folds[0]));
    config_name = first_checkpoint->configuration;
  }
  if (config_name.empty() && configs.size() == 1) config_name = configs.begin().key();
  if (config_name.empty())
    fail(ErrorCode::invalid_model, pf + ": cannot tell which configuration this folder holds (name the folder "
                                        "<trainer>__<plans>__<configuration> as nnU-Net does)");
  const json c = resolve_configuration(configs, config_name, pf);
  const std::string cp = "configurations." + config_name;
  if (c.contains("previous_stage"))
    fail(ErrorCode::unsupported, pf + ": " + cp +
                                     ": a cascade stage needs the previous stage's segmentation as input; "
                                     "voxinfer runs 2d, 3d_lowres and 3d_fullres configurations");
  Configuration& cfg = im.config;
  cfg.name = config_name;
  auto patch = int_list(member(c, "patch_size", pf, cp), pf, cp + ".patch_size");
  if (patch.size() != 2 && patch.size() != 3) bad(pf, cp + ".patch_size", "expected 2 or 3 entries");
  for (auto p : patch)
    if (p < 1 || p > 4096) bad(pf, cp + ".patch_size", "entries must be 1..4096");
  cfg.dims = static_cast<int>(patch.size());
  cfg.patch_size = cfg.dims == 2 ? Index3{1, patch[0], patch[1]} : Index3{patch[0], patch[1], patch[2]};
  const json& sp = member(c, "spacing", pf, cp);
  if (!sp.is_array() || sp.size() != patch.size()) bad(pf, cp + ".spacing", "expected one entry per patch axis");
  for (std::size_t i = 0; i < sp.size(); ++i) {
    const double s = as_double(sp[i], pf, cp + ".spacing");
    if (!(s > 0) || s > 1e5) bad(pf, cp + ".spacing", "entries must be positive");
    cfg.spacing.push_back(s);
  }
  if (c.contains("batch_size"))
    cfg.batch_size = std::clamp<std::int64_t>(as_int(c.at("batch_size"), pf, cp + ".batch_size"), 1, 64);
  const json& schemes = member(c, "normalization_schemes", pf, cp);
  if (!schemes.is_array() || schemes.size() != im.dataset.channel_names.size())
    bad(pf, cp + ".normalization_schemes",
        "expected one entry per channel of dataset.json (" + std::to_string(im.dataset.channel_names.size()) + ")");
  const json* masks = c.contains("use_mask_for_norm") ? &c.at("use_mask_for_norm") : nullptr;
  for (std::size_t i = 0; i < schemes.size(); ++i) {
    bool use_mask = false;
    if (masks && masks->is_array() && i < masks->size() && (*masks)[i].is_boolean()) use_mask = (*masks)[i].get<bool>();
    cfg.normalization.push_back(normalization(as_string(schemes[i], pf, cp + ".normalization_schemes"), use_mask, plans,
                                              i, pf, cp + ".normalization_schemes[" + std::to_string(i) + "]"));
  }
  cfg.data_rule = resampling_rule(c, "resampling_fn_data_kwargs", pf, cp);
  cfg.probabilities_rule = resampling_rule(c, "resampling_fn_probabilities_kwargs", pf, cp);
  if (!c.contains("resampling_fn_probabilities_kwargs")) cfg.probabilities_rule.order = 1;
  for (const char* fn : {"resampling_fn_data", "resampling_fn_probabilities"}) {
    if (!c.contains(fn)) continue;
    const std::string name = as_string(c.at(fn), pf, cp + "." + fn);
    if (name != "resample_data_or_seg_to_shape")
      fail(ErrorCode::unsupported,
           pf + ": " + cp + "." + fn + ": '" + name + "' is not supported (resample_data_or_seg_to_shape is)");
  }
  cfg.architecture = c.contains("architecture")
                         ? architecture_from_kwargs(c.at("architecture"), pf, cp + ".architecture")
                         : architecture_from_old_schema(c, pf, cp);
  if (cfg.architecture.dims != cfg.dims) bad(pf, cp, "patch_size and the architecture disagree on 2D/3D");
  cfg.architecture.input_channels = static_cast<std::int64_t>(im.dataset.channel_names.size());
  cfg.architecture.num_classes = im.dataset.num_heads();

  if (options.threads > 0) set_num_threads(options.threads);
  bool first_ckpt = true;
  for (int f : im.folds) {
    const fs::path ck = checkpoint_path(f);
    if (!fs::is_regular_file(ck, ec))
      fail(ErrorCode::invalid_model,
           ck.string() + ": missing (fold " + (f < 0 ? std::string("all") : std::to_string(f)) + " was asked for)");
    Checkpoint k = first_checkpoint && f == im.folds[0] ? std::move(*first_checkpoint) : loader(ck);
    first_checkpoint.reset();
    if (first_ckpt) {
      im.mirror_axes.clear();
      if (k.mirror_axes) im.mirror_axes = *k.mirror_axes;
      for (int a : im.mirror_axes)
        if (a < 0 || a >= cfg.dims)
          fail(ErrorCode::invalid_model,
               ck.string() + ": inference_allowed_mirroring_axes holds axis " + std::to_string(a));
      if (cfg.dims == 2)
        for (int& a : im.mirror_axes) a += 1;  // 2D axes (h, w) are the tiles' axes 1 and 2
      if (!k.trainer_name.empty()) im.trainer = k.trainer_name;
      first_ckpt = false;
    }
    graph::Graph g = graph::build_nnunet_network(cfg.architecture, k.weights, ck.string());
    k.weights.clear();  // the graph holds its own copy; keep one set of weights per fold
    graph::SessionOptions so;
    so.threads = options.threads;
    so.profile = options.profile;
    im.sessions.emplace_back(std::move(g), so);
  }
  im.postprocessing = read_postprocessing(folder);
  return m;
}

}  // namespace voxinfer::nnunet
