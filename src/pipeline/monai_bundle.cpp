// A MONAI bundle translated into a PipelineSpec (see monai_bundle.h and docs/pipeline.md).
#include "voxinfer/pipeline/monai_bundle.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "voxinfer/core/error.h"
#include "voxinfer/core/geometry.h"

#include "pipeline/monai_config.h"
#include "voxinfer/pipeline/channel_expression.h"

namespace voxinfer::monai {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(ErrorCode::invalid_model, p.string() + ": cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& text, const std::string& name) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorCode::invalid_model, name + ": not valid JSON (" + e.what() + ")");
  }
}

// Python's truth value (the zoo writes "nonzero": "True" in places, which Python reads as true).
bool truthy(const json& j) {
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number()) return j.get<double>() != 0;
  return !j.empty();
}

std::string fmt(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

// The class name without its module path ("monai.transforms.Spacingd" -> "Spacingd").
std::string class_name(const std::string& target) {
  const std::size_t dot = target.rfind('.');
  return dot == std::string::npos ? target : target.substr(dot + 1);
}

// The arguments of one transform. Every argument must be read, checked or declared
// harmless; what is left is an error naming it, so no argument is ignored by accident.
class Args {
 public:
  Args(json obj, std::string where) : obj_(std::move(obj)), where_(std::move(where)) {
    for (const char* k : {"_target_", "_desc_", "_requires_", "_disabled_", "_mode_"}) used_.insert(k);
  }
  const std::string& where() const { return where_; }
  bool has(const std::string& k) const { return obj_.contains(k); }
  const json* get(const std::string& k) {
    used_.insert(k);
    auto it = obj_.find(k);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  const json& need(const std::string& k) {
    const json* v = get(k);
    if (!v) fail(ErrorCode::invalid_model, where_ + ": the argument '" + k + "' is required");
    return *v;
  }
  double number(const std::string& k, double fallback) {
    const json* v = get(k);
    if (!v) return fallback;
    if (!v->is_number()) fail(ErrorCode::invalid_model, where_ + ": " + k + " must be a number, got " + v->dump());
    return v->get<double>();
  }
  bool flag(const std::string& k, bool fallback) {
    const json* v = get(k);
    return v ? truthy(*v) : fallback;
  }
  std::string string(const std::string& k, const std::string& fallback) {
    const json* v = get(k);
    if (!v) return fallback;
    if (!v->is_string()) fail(ErrorCode::invalid_model, where_ + ": " + k + " must be a string, got " + v->dump());
    return v->get<std::string>();
  }
  // An argument that may only take its default (or one of the listed values).
  void only(const std::string& k, const std::vector<json>& allowed, const std::string& why = {}) {
    const json* v = get(k);
    if (!v) return;
    for (const auto& a : allowed)
      if (*v == a) return;
    fail(ErrorCode::unsupported,
         where_ + ": " + k + " = " + v->dump() + " is not supported" + (why.empty() ? "" : " (" + why + ")"));
  }
  void harmless(std::initializer_list<const char*> keys) {
    for (const char* k : keys) used_.insert(k);
  }
  void finish() const {
    for (auto it = obj_.begin(); it != obj_.end(); ++it)
      if (!used_.count(it.key()))
        fail(ErrorCode::unsupported,
             where_ + ": the argument '" + it.key() + "' (" + it.value().dump() + ") is not supported");
  }

 private:
  json obj_;
  std::string where_;
  std::set<std::string> used_;
};

// `keys` as a list of strings.
std::vector<std::string> key_list(Args& a) {
  const json* k = a.get("keys");
  if (!k) fail(ErrorCode::invalid_model, a.where() + ": the argument 'keys' is required");
  std::vector<std::string> out;
  if (k->is_string())
    out.push_back(k->get<std::string>());
  else if (k->is_array())
    for (const auto& e : *k) {
      if (!e.is_string()) fail(ErrorCode::invalid_model, a.where() + ": keys must be strings, got " + k->dump());
      out.push_back(e.get<std::string>());
    }
  else
    fail(ErrorCode::invalid_model, a.where() + ": keys must be a string or a list of strings, got " + k->dump());
  return out;
}

// A per-key argument (a value, or a list with one value per key) for key number `index`.
json per_key(const json& v, std::size_t index, std::size_t nkeys) {
  if (v.is_array() && (v.size() == nkeys || v.size() == 1) && !v.empty() && !v[0].is_number())
    return v[v.size() == 1 ? 0 : index];
  return v;
}

std::string mode_name(const json& m, const std::string& where) {
  if (m.is_string()) return m.get<std::string>();
  if (m.is_number_integer()) return std::to_string(m.get<std::int64_t>());
  fail(ErrorCode::invalid_model, where + ": mode must be a string, got " + m.dump());
}

std::array<double, 3> triple(const json& v, const std::string& where, const char* what) {
  std::array<double, 3> out{};
  if (v.is_number()) {
    out.fill(v.get<double>());
    return out;
  }
  if (!v.is_array() || v.size() != 3 || !std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_number(); }))
    fail(ErrorCode::unsupported, where + ": " + what + " must be three numbers (3D), got " + v.dump());
  for (std::size_t i = 0; i < 3; ++i) out[i] = v[i].get<double>();
  return out;
}

class Translator {
 public:
  // `collect`: record what cannot be translated in Bundle::problems (and as steps) and go on,
  // for `voxinfer info`; otherwise the first problem is thrown.
  Translator(Config& config, const json& metadata, Bundle& out, bool collect)
      : c_(config), meta_(metadata), b_(out), collect_(collect) {}

  void run() {
    b_.name = meta_.value("name", std::string());
    b_.version = meta_.value("version", std::string());
    PipelineSpec& s = b_.spec;
    s.task = Task::segmentation;
    s.axes = AxisOrder::xyz;  // MONAI's arrays are nibabel's [C, X, Y, Z]
    s.name = b_.name;
    s.version = b_.version;
    s.description = meta_.value("description", std::string());
    s.preprocess = {};
    s.postprocess = {};
    if (c_.has("image_key")) {
      const json k = c_.resolve("image_key");
      if (k.is_string()) b_.image_key = k.get<std::string>();
    }
    read_metadata();
    preprocessing();
    try {
      inferer();
    } catch (const Error& e) {
      if (!collect_) throw;
      step("inferer", 0, "?", std::string("cannot run: ") + e.what());
      b_.problems.push_back(e.what());
    }
    postprocessing();
  }

 private:
  void step(const std::string& section, std::size_t pos, const std::string& target, std::string text) {
    b_.steps.push_back({section, pos, target, std::move(text)});
  }

  void problem(const std::string& section, const std::pair<std::string, json>& item, const Error& e) {
    if (!collect_) throw e;
    const std::string& id = item.first;
    const std::size_t pos = std::stoul(id.substr(id.rfind('#') + 1));
    const json& t = item.second;
    const std::string target = t.is_object() && t.contains("_target_") && t["_target_"].is_string()
                                   ? class_name(t["_target_"].get<std::string>())
                                   : "?";
    step(section, pos, target, std::string("cannot run: ") + e.what());
    b_.problems.push_back(e.what());
  }

  void check(bool ok, ErrorCode code, const std::string& message) {
    if (ok) return;
    if (!collect_) fail(code, message);
    b_.problems.push_back(message);
  }

  void read_metadata() {
    const json* fmt_ = meta_.contains("network_data_format") ? &meta_["network_data_format"] : nullptr;
    PipelineSpec& s = b_.spec;
    s.input.channels = 1;
    std::int64_t out_channels = 0;
    json channel_def;
    if (fmt_ && fmt_->contains("inputs") && (*fmt_)["inputs"].is_object() && !(*fmt_)["inputs"].empty()) {
      const json& inputs = (*fmt_)["inputs"];
      const json& in = inputs.contains(b_.image_key) ? inputs[b_.image_key] : inputs.begin().value();
      if (in.contains("num_channels") && in["num_channels"].is_number_integer())
        s.input.channels = in["num_channels"].get<std::int64_t>();
      if (in.contains("modality") && in["modality"].is_string()) s.input.modality = {in["modality"].get<std::string>()};
      if (in.contains("channel_def") && in["channel_def"].is_object())
        for (std::int64_t c = 0; c < s.input.channels; ++c) {
          const std::string key = std::to_string(c);
          const json& def = in["channel_def"];
          b_.channel_names.push_back(def.contains(key) && def[key].is_string() ? def[key].get<std::string>()
                                                                                : "channel " + key);
        }
    }
    if (fmt_ && fmt_->contains("outputs") && (*fmt_)["outputs"].is_object() && !(*fmt_)["outputs"].empty()) {
      const json& outputs = (*fmt_)["outputs"];
      const json& o = outputs.contains("pred") ? outputs["pred"] : outputs.begin().value();
      if (o.contains("num_channels") && o["num_channels"].is_number_integer())
        out_channels = o["num_channels"].get<std::int64_t>();
      if (o.contains("channel_def") && o["channel_def"].is_object()) channel_def = o["channel_def"];
    }
    if (out_channels < 1)
      fail(ErrorCode::invalid_model,
           "metadata.json: network_data_format.outputs: the number of output channels (num_channels) is missing");
    if (s.input.channels < 1)
      fail(ErrorCode::invalid_model, "metadata.json: network_data_format.inputs: num_channels must be >= 1");
    out_channels_ = out_channels;
    channel_def_ = channel_def;
  }

  // Labels from the output channels: softmax/argmax channel k is label k (0 = background);
  // sigmoid channel i is label i + 1.
  void make_labels(bool sigmoid, std::int64_t width) {
    PipelineSpec& s = b_.spec;
    const PostprocessSpec& post = s.postprocess;
    s.labels.clear();
    auto name_of = [&](std::int64_t ch, std::int64_t value) {
      const std::string key = std::to_string(ch);
      if (channel_def_.is_object() && channel_def_.contains(key) && channel_def_[key].is_string())
        return channel_def_[key].get<std::string>();
      return "label " + std::to_string(value);
    };
    if (!post.lambdas.empty() && post.lambdas_before.empty() && width == 1) {
      // Lambdad after the discretisation: its label values are found by running it over every
      // discrete input (each channel on alone names the value it gives).
      std::vector<ChannelExpression> chain;
      const bool argmax = post.discretize == Discretize::argmax ||
                          (post.discretize == Discretize::by_activation && !sigmoid);
      std::int64_t w = argmax ? 1 : out_channels_;
      for (const auto& t : post.lambdas) {
        chain.push_back(ChannelExpression::compile(t, w));
        w = chain.back().out_channels();
      }
      auto run = [&](std::vector<float> v) {
        for (const auto& e : chain) {
          std::vector<float> scratch(e.scratch_size()), out(static_cast<std::size_t>(e.out_channels()));
          e.evaluate(v.data(), scratch.data(), out.data());
          v = std::move(out);
        }
        return v[0];
      };
      std::map<int, std::string> found;
      auto note = [&](float v, const std::string& name) {
        if (v == 0.f || !std::isfinite(v) || v != std::floor(v)) return;
        const int value = static_cast<int>(v);
        if (!found.count(value) || (found[value].rfind("label ", 0) == 0 && name.rfind("label ", 0) != 0))
          found[value] = name;
      };
      if (argmax) {
        for (std::int64_t k = 0; k < out_channels_; ++k) note(run({static_cast<float>(k)}), k ? name_of(k, k) : "");
      } else if (out_channels_ <= 12) {
        for (std::int64_t m = 1; m < (std::int64_t{1} << out_channels_); ++m) {
          std::vector<float> v(static_cast<std::size_t>(out_channels_));
          int on = 0;
          std::int64_t only = 0;
          for (std::int64_t k = 0; k < out_channels_; ++k)
            if (m >> k & 1) {
              v[static_cast<std::size_t>(k)] = 1.f;
              ++on;
              only = k;
            }
          const float r = run(v);
          note(r, on == 1 ? name_of(only, static_cast<std::int64_t>(r)) : "label " + std::to_string(static_cast<int>(r)));
        }
      }
      for (auto& [value, name] : found) {
        if (name.empty()) name = "label " + std::to_string(value);
        s.labels.push_back({value, name, {}, {}});
      }
      if (s.labels.empty())
        fail(ErrorCode::invalid_model, c_.file() + ": postprocessing: the Lambdad expressions give no label value");
      return;
    }
    if (width > 1 || sigmoid) {
      // One label per final channel, overlapping where channels overlap.
      const bool named = post.lambdas.empty() && post.lambdas_before.empty();
      for (std::int64_t k = 0; k < width; ++k)
        s.labels.push_back({static_cast<int>(k + 1), named ? name_of(k, k + 1) : "label " + std::to_string(k + 1), {}, {}});
      return;
    }
    const std::int64_t classes = post.lambdas_before.empty() ? out_channels_ : 0;
    for (std::int64_t k = 1; k < classes; ++k) s.labels.push_back({static_cast<int>(k), name_of(k, k), {}, {}});
    if (s.labels.empty())
      fail(ErrorCode::invalid_model,
           "metadata.json: an argmax over " + std::to_string(out_channels_) + " channel gives no label");
  }

  // The transforms of a Compose (or a list), each with its id in the file: a disabled entry
  // is dropped but keeps its place in the numbering, so messages name the entry as written.
  std::vector<std::pair<std::string, json>> compose(const std::string& id) {
    if (!c_.has(id)) fail(ErrorCode::invalid_model, c_.file() + ": '" + id + "' is not defined");
    std::string list_id = id;
    const json& raw = c_.raw(id);
    if (raw.is_object()) {
      if (!raw.contains("_target_") || !raw["_target_"].is_string() ||
          class_name(raw["_target_"].get<std::string>()) != "Compose")
        fail(ErrorCode::unsupported, c_.file() + ": " + id + ": expected a Compose of transforms");
      list_id = id + "#transforms";
    }
    std::vector<std::pair<std::string, json>> out;
    if (c_.has(list_id) && c_.raw(list_id).is_array()) {
      for (std::size_t i = 0; i < c_.raw(list_id).size(); ++i) {
        const std::string item = list_id + "#" + std::to_string(i);
        json t = c_.resolve(item);
        if (t.is_object() && t.contains("_disabled_") && truthy(t["_disabled_"])) continue;
        out.emplace_back(item, std::move(t));
      }
      return out;
    }
    // A reference or an expression: number the resolved list.
    json v = c_.resolve(list_id);
    if (v.is_object() && v.contains("transforms")) v = v["transforms"];
    if (!v.is_array())
      fail(ErrorCode::invalid_model, c_.file() + ": " + id + ": expected a Compose or a list of transforms");
    for (std::size_t i = 0; i < v.size(); ++i) out.emplace_back(list_id + "#" + std::to_string(i), v[i]);
    return out;
  }

  static std::string target_of(const json& t, const std::string& where) {
    if (!t.is_object() || !t.contains("_target_") || !t["_target_"].is_string())
      fail(ErrorCode::invalid_model, where + ": expected a transform with a \"_target_\"");
    return class_name(t["_target_"].get<std::string>());
  }

  // The index of the image key in `keys`, or npos when the transform does not touch it.
  std::size_t image_index(const std::vector<std::string>& keys, const std::string& key) const {
    const auto it = std::find(keys.begin(), keys.end(), key);
    return it == keys.end() ? std::string::npos : static_cast<std::size_t>(it - keys.begin());
  }

  void preprocessing() {
    const auto list = compose("preprocessing");
    PipelineSpec& s = b_.spec;
    bool loaded = false, intensity_seen = false;
    // A ConcatItemsd that builds the image key: the keys it stacks are the channels, one
    // input file each, in its order; until it runs, a transform of those keys must treat
    // them all alike (voxinfer preprocesses every channel the same way).
    std::vector<std::string> channel_keys;
    for (const auto& item : list)
      if (item.second.is_object() && item.second.contains("_target_") && item.second["_target_"].is_string() &&
          class_name(item.second["_target_"].get<std::string>()) == "ConcatItemsd" && item.second.contains("name") &&
          item.second["name"] == json(b_.image_key) && item.second.contains("keys")) {
        const json& k = item.second["keys"];
        if (k.is_array())
          for (const auto& e : k)
            if (e.is_string()) channel_keys.push_back(e.get<std::string>());
      }
    bool concatenated = false;
    for (std::size_t i = 0; i < list.size(); ++i) {
      try {
        const std::string where = c_.file() + ": " + list[i].first;
        const std::string t = target_of(list[i].second, where);
        const std::string w = where + " (" + t + ")";
        Args a(list[i].second, w);
        const std::size_t pos = std::stoul(list[i].first.substr(list[i].first.rfind('#') + 1));
        if (t == "Compose") fail(ErrorCode::unsupported, w + ": nested Compose is not supported");
        const auto keys = key_list(a);
        a.harmless({"allow_missing_keys", "meta_keys", "meta_key_postfix"});
        if (t == "ConcatItemsd") {
          const std::string name = a.string("name", "");
          if (name != b_.image_key)
            fail(ErrorCode::unsupported,
                 w + ": a ConcatItemsd into \"" + name + "\" is not supported (only into the image key '" + b_.image_key + "')");
          if (concatenated) fail(ErrorCode::unsupported, w + ": a second ConcatItemsd is not supported");
          a.only("dim", {json(0)}, "only along the channels");
          concatenated = true;
          b_.channel_keys = keys;
          std::string order;
          for (const auto& k : keys) order += (order.empty() ? "" : ", ") + k;
          step("preprocessing", pos, t,
               "stack " + std::to_string(keys.size()) + " images as channels (" + order +
                   "): one -i per key, in this order");
          a.finish();
          continue;
        }
        std::size_t ki = image_index(keys, b_.image_key);
        if (!concatenated && !channel_keys.empty()) {
          std::size_t found = 0, first = std::string::npos;
          for (std::size_t k = 0; k < keys.size(); ++k)
            if (std::find(channel_keys.begin(), channel_keys.end(), keys[k]) != channel_keys.end()) {
              ++found;
              if (first == std::string::npos) first = k;
            }
          if (found != 0 && found != channel_keys.size())
            fail(ErrorCode::unsupported, w + ": it transforms only some of the channels that ConcatItemsd stacks (" +
                                             json(keys).dump() + " of " + json(channel_keys).dump() +
                                             "); voxinfer preprocesses every channel alike");
          if (found != 0) ki = first;
        }
        if (ki == std::string::npos) {
          // Another key (a label in a shared config): it never reaches the network.
          step("preprocessing", pos, t, "not applied: it transforms only " + json(keys).dump() + ", not the image");
          continue;
        }
        auto arg = [&](const std::string& k) -> const json* {
          const json* v = a.get(k);
          if (!v) return nullptr;
          return v;
        };
        const bool type_only = t == "EnsureTyped" || t == "CastToTyped" || t == "ToTensord";
        const bool pad = t == "SpatialPadd" || t == "DivisiblePadd";
        if (s.preprocess.pad && !type_only)
          fail(ErrorCode::unsupported, w + ": " + t + " after SpatialPadd/DivisiblePadd is not supported (voxinfer pads last)");
        if (s.preprocess.crop_foreground && !type_only && !pad)
          fail(ErrorCode::unsupported, w + ": " + t + " after CropForegroundd is not supported (voxinfer crops last)");
        if (t == "LoadImaged") {
          a.harmless({"image_only", "reader", "ensure_channel_first", "simple_keys", "prune_meta_pattern",
                      "prune_meta_sep", "expanduser", "overwriting"});
          if (const json* d = arg("dtype"); d && !(d->is_string() && (*d == "float32" || *d == "float")))
            fail(ErrorCode::unsupported,
                 w + ": dtype " + d->dump() + " is not supported (voxinfer reads images as float32)");
          loaded = true;
          step("preprocessing", pos, t, "read the image (DICOM, NIfTI, NRRD, MHA) as float32 in its own geometry");
        } else if (t == "EnsureChannelFirstd") {
          a.only("channel_dim", {json(nullptr), json("no_channel"), json(0), json(-1)});
          a.harmless({"strict_check"});
          step("preprocessing", pos, t, "channels first (voxinfer's volumes always are)");
        } else if (t == "EnsureTyped" || t == "CastToTyped" || t == "ToTensord") {
          if (const json* d = arg("dtype"); d && !(d->is_string() && (*d == "float32" || *d == "float")))
            fail(ErrorCode::unsupported,
                 w + ": dtype " + d->dump() + " is not supported (the network runs in float32)");
          a.harmless({"data_type", "device", "wrap_sequence", "track_meta"});
          step("preprocessing", pos, t, "float32 tensor (nothing to do)");
        } else if (t == "CropForegroundd") {
          if (s.preprocess.crop_foreground)
            fail(ErrorCode::unsupported, w + ": a second CropForegroundd is not supported");
          const std::string source = a.string("source_key", "");
          if (source != b_.image_key)
            fail(ErrorCode::unsupported, w + ": source_key \"" + source + "\" is not supported (only the image key)");
          a.only("select_fn", {}, "only MONAI's default, voxels > 0");
          a.only("channel_indices", {json(nullptr)});
          a.only("allow_smaller", {json(true)}, "only a box clamped to the image");
          std::array<std::int64_t, 3> k_divisible{1, 1, 1};
          if (const json* kd = a.get("k_divisible")) {
            const json l = kd->is_array() ? *kd : json::array({*kd, *kd, *kd});
            if (l.size() != 3 || !std::all_of(l.begin(), l.end(), [](const json& e) { return e.is_number_integer(); }))
              fail(ErrorCode::unsupported, w + ": k_divisible must be an integer or three (3D), got " + kd->dump());
            for (std::size_t i = 0; i < 3; ++i) k_divisible[i] = std::max<std::int64_t>(1, l[i].get<std::int64_t>());
          }
          std::int64_t margin = 0;
          if (const json* m = a.get("margin")) {
            const json first = m->is_array() && !m->empty() ? (*m)[0] : *m;
            const bool same =
                !m->is_array() || std::all_of(m->begin(), m->end(), [&](const json& e) { return e == first; });
            if (!first.is_number_integer() || first.get<std::int64_t>() < 0 || !same)
              fail(ErrorCode::unsupported,
                   w + ": margin " + m->dump() + " is not supported (one non-negative integer for all axes)");
            margin = first.get<std::int64_t>();
          }
          a.harmless({"mode", "start_coord_key", "end_coord_key", "lazy"});
          s.preprocess.crop_foreground = ForegroundCropSpec{margin};
          s.preprocess.crop_foreground->k_divisible = k_divisible;
          step("preprocessing", pos, t,
               "crop to the bounding box of voxels > 0 grown by " + std::to_string(margin) + " voxels (clamped)" +
                   (k_divisible == std::array<std::int64_t, 3>{1, 1, 1}
                        ? std::string()
                        : ", then about its centre to multiples of " + json(k_divisible).dump() + " (zero-padded)") +
                   "; the prediction is padded back with zeros");
        } else if (pad) {
          PadSpec p;
          auto ints = [&](const json& v, const char* what, std::int64_t lowest) {
            std::array<std::int64_t, 3> out{};
            const json l = v.is_array() ? v : json::array({v, v, v});
            if (l.size() != 3 || !std::all_of(l.begin(), l.end(), [](const json& e) { return e.is_number_integer(); }))
              fail(ErrorCode::unsupported, w + ": " + what + " must be an integer or three (3D), got " + v.dump());
            for (std::size_t i = 0; i < 3; ++i) out[i] = std::max(lowest, l[i].get<std::int64_t>());
            return out;
          };
          if (t == "SpatialPadd")
            p.size = ints(a.need("spatial_size"), "spatial_size", 0);  // non-positive: the image's own size
          else
            p.divisible = ints(a.need("k"), "k", 1);  // non-positive: no padding
          const std::string method = a.string("method", "symmetric");
          if (method != "symmetric" && method != "end")
            fail(ErrorCode::unsupported, w + ": method \"" + method + "\" is not supported (symmetric or end)");
          p.at_end = method == "end";
          if (const json* m = arg("mode")) {
            const std::string mode = mode_name(per_key(*m, ki, keys.size()), w);
            if (mode != "constant")
              fail(ErrorCode::unsupported, w + ": mode \"" + mode + "\" is not supported (only constant padding)");
          }
          p.value = a.number("value", 0.0);
          a.harmless({"lazy"});
          s.preprocess.pad = p;
          intensity_seen = true;  // nothing may be resampled after it either
          step("preprocessing", pos, t,
               (t == "SpatialPadd" ? "pad to at least " + json(p.size).dump() : "pad to multiples of " + json(p.divisible).dump()) +
                   (p.at_end ? " at the end" : " symmetrically") + " with " + fmt(p.value) +
                   "; the prediction is cropped back (its inversion)");
        } else if (t == "Orientationd") {
          if (s.preprocess.spacing) fail(ErrorCode::unsupported, w + ": Orientationd after Spacingd is not supported");
          const std::string code = a.string("axcodes", "");
          if (code.size() != 3)
            fail(ErrorCode::unsupported,
                 w + ": axcodes must be a three-letter code such as \"RAS\", got \"" + code + "\"");
          try {
            (void)direction_from_code(code);
          } catch (const Error&) {
            fail(ErrorCode::invalid_model, w + ": axcodes \"" + code + "\" is not an orientation code");
          }
          a.only("as_closest_canonical", {json(false)});
          a.only("labels", {json::array({json::array({"L", "R"}), json::array({"P", "A"}), json::array({"I", "S"})})},
                 "only nibabel's default labels");
          s.preprocess.orientation = code;
          step("preprocessing", pos, t, "reorient to " + code + " (axis permutation and flips, no interpolation)");
        } else if (t == "Spacingd") {
          if (intensity_seen)
            fail(ErrorCode::unsupported,
                 w + ": resampling after an intensity transform is not supported (voxinfer resamples first)");
          const auto pix = triple(a.need("pixdim"), w, "pixdim");
          for (double p : pix)
            if (!(p > 0))
              fail(ErrorCode::unsupported, w + ": pixdim " + fmt(p) + " (keep the input's spacing) is not supported");
          if (const json* m = arg("mode")) {
            const std::string mode = mode_name(per_key(*m, ki, keys.size()), w);
            if (mode != "bilinear" && mode != "1")
              fail(ErrorCode::unsupported,
                   w + ": mode \"" + mode + "\" for the image is not supported (only bilinear)");
          }
          if (const json* p = arg("padding_mode")) {
            const std::string pm = mode_name(per_key(*p, ki, keys.size()), w);
            if (pm != "border")
              fail(ErrorCode::unsupported, w + ": padding_mode \"" + pm + "\" is not supported (only border)");
          }
          if (const json* ac = arg("align_corners"); ac && truthy(per_key(*ac, ki, keys.size())))
            fail(ErrorCode::unsupported, w + ": align_corners true is not supported");
          a.only("diagonal", {json(false)});
          a.only("scale_extent", {json(false)});
          a.only("recompute_affine", {json(false)});
          a.only("min_pixdim", {json(nullptr)});
          a.only("max_pixdim", {json(nullptr)});
          a.harmless({"dtype", "ensure_same_shape"});
          s.preprocess.spacing = pix;
          s.preprocess.size_rule = SizeRule::centres;
          step("preprocessing", pos, t,
               "resample to " + fmt(pix[0]) + " x " + fmt(pix[1]) + " x " + fmt(pix[2]) +
                   " mm, trilinear, border padding; first voxel centre kept, size round((n - 1) x old / new + 1)");
        } else if (t == "ScaleIntensityRanged") {
          IntensityOp op;
          op.kind = IntensityOp::Kind::scale;
          const double a_min = a.number("a_min", NAN), a_max = a.number("a_max", NAN);
          const json* bmin = a.get("b_min");
          const json* bmax = a.get("b_max");
          if (std::isnan(a_min) || std::isnan(a_max))
            fail(ErrorCode::invalid_model, w + ": a_min and a_max are required");
          if (a_min == a_max) fail(ErrorCode::unsupported, w + ": a_min == a_max is not supported");
          if (!bmin || !bmax || !bmin->is_number() || !bmax->is_number())
            fail(ErrorCode::unsupported, w + ": b_min and b_max must both be numbers");
          op.from = {a_min, a_max};
          op.to = {bmin->get<double>(), bmax->get<double>()};
          op.clip_output = a.flag("clip", false);
          a.harmless({"dtype"});
          s.preprocess.intensity.push_back(op);
          intensity_seen = true;
          step("preprocessing", pos, t,
               "scale [" + fmt(a_min) + ", " + fmt(a_max) + "] -> [" + fmt(op.to[0]) + ", " + fmt(op.to[1]) + "]" +
                   (op.clip_output ? ", clipped" : ", not clipped"));
        } else if (t == "ScaleIntensityd") {
          const json* minv = a.get("minv");
          const json* maxv = a.get("maxv");
          const double lo = minv ? minv->get<double>() : 0.0, hi = maxv ? maxv->get<double>() : 1.0;
          if (a.get("factor")) fail(ErrorCode::unsupported, w + ": factor is not supported");
          const bool channel_wise = a.flag("channel_wise", false);
          a.harmless({"dtype"});
          IntensityOp op;
          op.kind = IntensityOp::Kind::minmax;
          op.channel_wise = channel_wise;
          s.preprocess.intensity.push_back(op);
          if (lo != 0 || hi != 1) {
            IntensityOp sc;
            sc.kind = IntensityOp::Kind::scale;
            sc.from = {0, 1};
            sc.to = {lo, hi};
            s.preprocess.intensity.push_back(sc);
          }
          intensity_seen = true;
          step(
              "preprocessing", pos, t,
              "min-max to [" + fmt(lo) + ", " + fmt(hi) + "]" + (channel_wise ? " per channel" : " over all channels"));
        } else if (t == "NormalizeIntensityd") {
          IntensityOp op;
          op.kind = IntensityOp::Kind::zscore;
          op.nonzero = a.flag("nonzero", false);
          op.channel_wise = a.flag("channel_wise", false);
          const json* sub = a.get("subtrahend");
          const json* div = a.get("divisor");
          if ((sub == nullptr) != (div == nullptr))
            fail(ErrorCode::unsupported, w + ": subtrahend without divisor (or the reverse) is not supported");
          if (sub) {
            if (!sub->is_number() || !div->is_number() || !(div->get<double>() > 0))
              fail(ErrorCode::unsupported,
                   w + ": subtrahend and divisor must be numbers (divisor > 0); per-channel lists are not supported");
            if (op.nonzero)
              fail(ErrorCode::unsupported, w + ": fixed subtrahend/divisor with nonzero is not supported");
            op.mean = sub->get<double>();
            op.std = div->get<double>();
          }
          a.harmless({"dtype"});
          s.preprocess.intensity.push_back(op);
          intensity_seen = true;
          step("preprocessing", pos, t,
               sub ? "(x - " + fmt(*op.mean) + ") / " + fmt(*op.std)
                   : std::string("z-score with the image's mean and population std") +
                         (op.nonzero ? ", non-zero voxels only" : "") +
                         (op.channel_wise ? ", per channel" : ", over all channels"));
        } else {
          fail(ErrorCode::unsupported,
               w + ": the transform " + t + " is not supported (docs/pipeline.md lists those that are)");
        }
        a.finish();
      } catch (const Error& e) {
        problem("preprocessing", list[i], e);
      }
    }
    check(loaded, ErrorCode::unsupported,
          c_.file() + ": preprocessing: no LoadImaged (voxinfer reads the image itself)");
    if (!channel_keys.empty() && channel_keys.size() != static_cast<std::size_t>(s.input.channels))
      check(false, ErrorCode::invalid_model,
            c_.file() + ": preprocessing: ConcatItemsd stacks " + std::to_string(channel_keys.size()) +
                " images but metadata.json's network_data_format gives the network " +
                std::to_string(s.input.channels) + " input channel(s)");
  }

  void inferer() {
    if (!c_.has("inferer")) fail(ErrorCode::invalid_model, c_.file() + ": 'inferer' is not defined");
    const json v = c_.resolve("inferer");
    const std::string where = c_.file() + ": inferer";
    const std::string t = target_of(v, where);
    const std::string w = where + " (" + t + ")";
    Args a(v, w);
    InferenceSpec& inf = b_.spec.inference;
    inf.style = WindowStyle::monai;
    inf.average = AverageSpace::logits;
    if (t == "SimpleInferer") {
      a.finish();
      inf.single_tile = true;
      inf.roi_size = {1, 1, 1};  // replaced by the image's size at run time
      inf.overlap = {0, 0, 0};
      inf.blend = BlendMode::constant;
      inf.batch = 1;
      step("inferer", 0, t, "the network once on the whole preprocessed image");
      return;
    }
    if (t != "SlidingWindowInferer")
      fail(ErrorCode::unsupported,
           w + ": the inferer " + t + " is not supported (SlidingWindowInferer and SimpleInferer are)");
    const json& roi = a.need("roi_size");
    if (!roi.is_array() || roi.size() != 3 || !std::all_of(roi.begin(), roi.end(), [](const json& e) {
          return e.is_number_integer() && e.get<std::int64_t>() > 0;
        }))
      fail(ErrorCode::unsupported,
           w + ": roi_size must be three positive integers (3D; -1 entries are not supported), got " + roi.dump());
    for (std::size_t i = 0; i < 3; ++i) inf.roi_size[i] = roi[i].get<std::int64_t>();
    const json* bs = a.get("sw_batch_size");
    inf.batch = 1;
    if (bs) {
      if (!bs->is_number_integer() || bs->get<std::int64_t>() < 1)
        fail(ErrorCode::invalid_model, w + ": sw_batch_size must be a positive integer");
      inf.batch = bs->get<std::int64_t>();
    }
    if (const json* o = a.get("overlap")) {
      const auto ov = triple(*o, w, "overlap");
      for (std::size_t i = 0; i < 3; ++i) {
        if (!(ov[i] >= 0 && ov[i] < 1))
          fail(ErrorCode::invalid_model, w + ": overlap must be in [0, 1), got " + o->dump());
        inf.overlap[i] = ov[i];
      }
    } else {
      inf.overlap = {0.25, 0.25, 0.25};  // MONAI's default
    }
    const std::string mode = a.string("mode", "constant");
    if (mode == "constant")
      inf.blend = BlendMode::constant;
    else if (mode == "gaussian")
      inf.blend = BlendMode::gaussian;
    else
      fail(ErrorCode::unsupported, w + ": mode \"" + mode + "\" is not supported (constant or gaussian)");
    const json* sigma = a.get("sigma_scale");
    inf.sigma_scale = 0.125;
    if (sigma) {
      if (!sigma->is_number()) fail(ErrorCode::unsupported, w + ": sigma_scale per axis is not supported");
      inf.sigma_scale = sigma->get<double>();
    }
    const std::string pm = a.string("padding_mode", "constant");
    if (pm == "replicate" || pm == "edge")
      inf.pad_replicate = true;
    else if (pm != "constant")
      fail(ErrorCode::unsupported, w + ": padding_mode \"" + pm + "\" is not supported (constant or replicate)");
    inf.pad_value = a.number("cval", 0.0);
    a.harmless({"sw_device", "device", "progress", "cache_roi_weight_map", "cpu_thresh", "buffer_steps", "buffer_dim",
                "with_coord"});
    a.finish();
    step("inferer", 0, t,
         "sliding window (MONAI tiles), roi " + std::to_string(inf.roi_size[0]) + "x" +
             std::to_string(inf.roi_size[1]) + "x" + std::to_string(inf.roi_size[2]) + ", overlap " +
             fmt(inf.overlap[0]) + ", " + mode +
             (inf.blend == BlendMode::gaussian ? " (sigma_scale " + fmt(inf.sigma_scale) + ")"
                                               : std::string(" (plain average)")) +
             ", batch " + std::to_string(inf.batch) +
             (inf.pad_replicate ? std::string(", replicate padding") : ", padding with " + fmt(inf.pad_value)));
  }

  // Whether the preprocessing moves voxels (reorientation, resampling, cropping): only then is
  // Invertd more than the identity, and element-wise steps must follow it.
  bool spatial_preprocessing() const {
    const PreprocessSpec& p = b_.spec.preprocess;
    return p.orientation || p.spacing || p.crop_foreground || p.pad;
  }

  // Compiles a Lambdad's function for `channels` input channels; the error names the key.
  std::int64_t lambda_channels(const json& func, const std::string& id, std::int64_t channels, std::string& text) {
    const std::string raw = func.is_string() ? func.get<std::string>() : func.dump();
    auto message = [&](const std::string& why) {
      return c_.file() + ": " + id + ": cannot evaluate the expression \"" + raw + "\" (" + why +
             "; voxinfer evaluates element-wise lambdas over channels, see docs/pipeline.md)";
    };
    if (!func.is_string() || raw.empty() || raw[0] != '$')
      fail(ErrorCode::unsupported, message("func must be a \"$lambda x: ...\" expression"));
    text = raw.substr(1);
    try {
      return ChannelExpression::compile(text, channels).out_channels();
    } catch (const Error& e) {
      fail(ErrorCode::unsupported, message(e.what()));
    }
  }

  void postprocessing() {
    const auto list = compose("postprocessing");
    PipelineSpec& s = b_.spec;
    bool activated = false, inverted = false, discrete = false, sigmoid = false, lambdas = false;
    bool onehot = false;
    std::int64_t width = out_channels_;  // channels of the value at this step
    for (std::size_t i = 0; i < list.size(); ++i) {
      try {
        const std::string where = c_.file() + ": " + list[i].first;
        const std::string t = target_of(list[i].second, where);
        const std::string w = where + " (" + t + ")";
        Args a(list[i].second, w);
        const std::size_t pos = std::stoul(list[i].first.substr(list[i].first.rfind('#') + 1));
        const auto keys = key_list(a);
        a.harmless({"allow_missing_keys", "meta_keys", "meta_key_postfix"});
        if (keys.size() != 1)
          fail(ErrorCode::unsupported,
               w + ": transforms of several keys " + json(keys).dump() + " are not supported in postprocessing");
        // Element-wise steps before Invertd commute with it only when it is the identity.
        const bool before_invert_ok = !spatial_preprocessing();
        if (t == "Activationsd") {
          if (activated) fail(ErrorCode::unsupported, w + ": a second activation is not supported");
          if (discrete || lambdas) fail(ErrorCode::unsupported, w + ": an activation after AsDiscreted or Lambdad is not supported");
          const bool sm = a.flag("softmax", false), sg = a.flag("sigmoid", false);
          if (a.get("other")) fail(ErrorCode::unsupported, w + ": other (a custom function) is not supported");
          if (sm == sg) fail(ErrorCode::unsupported, w + ": exactly one of softmax and sigmoid must be true");
          s.postprocess.activation = sm ? Activation::softmax : Activation::sigmoid;
          sigmoid = sg;
          activated = true;
          step("postprocessing", pos, t, sm ? "softmax over channels" : "sigmoid per channel");
        } else if (t == "Invertd") {
          if (inverted) fail(ErrorCode::unsupported, w + ": a second Invertd is not supported");
          const json* orig = a.get("orig_keys");
          if (orig && !(*orig == json(b_.image_key) || *orig == json::array({b_.image_key})))
            fail(ErrorCode::unsupported,
                 w + ": orig_keys " + orig->dump() + " is not the image key '" + b_.image_key + "'");
          a.get("transform");  // the preprocessing Compose: its inverse is the way back to the input grid
          const bool nearest = a.flag("nearest_interp", true);
          a.harmless({"to_tensor", "device", "post_func", "orig_meta_keys", "meta_key_postfix"});
          if (lambdas && !discrete && spatial_preprocessing())
            fail(ErrorCode::unsupported, w + ": Invertd after a Lambdad on continuous outputs is not supported");
          if (nearest && spatial_preprocessing() && !discrete)
            fail(ErrorCode::unsupported,
                 w + ": nearest_interp true on continuous outputs is not supported (voxinfer inverts them "
                     "trilinearly, as nearest_interp false)");
          s.postprocess.resample = activated ? ResampleSpace::probabilities : ResampleSpace::logits;
          inverted = true;
          if (discrete && spatial_preprocessing()) {
            s.postprocess.invert_nearest = nearest;
            step("postprocessing", pos, t,
                 std::string("the label map back onto the input's grid: ") +
                     (nearest ? "nearest neighbour" : "trilinear (label values blend at the edges, as MONAI's)") +
                     " resampling (Spacingd inverted), then the orientation undone");
          } else
          step("postprocessing", pos, t,
               spatial_preprocessing()
                   ? std::string("back onto the input's grid: trilinear resampling of the ") +
                         (activated ? "probabilities" : "logits") + " (Spacingd inverted), then the orientation undone"
                   : std::string("nothing to undo (the preprocessing keeps the input's grid)"));
        } else if (t == "AsDiscreted") {
          if (!inverted && !before_invert_ok) s.postprocess.labels_on_model_grid = true;
          if (discrete) fail(ErrorCode::unsupported, w + ": a second AsDiscreted is not supported");
          const bool argmax = a.flag("argmax", false);
          const json* thr = a.get("threshold");
          const json* oh = a.get("to_onehot");
          a.only("rounding", {json(nullptr)});
          a.harmless({"dim", "keepdim", "dtype"});
          if (argmax == (thr != nullptr))
            fail(ErrorCode::unsupported, w + ": exactly one of argmax and threshold must be set");
          if (argmax) {
            s.postprocess.discretize = Discretize::argmax;
            width = 1;
            std::string text = "argmax over channels: channel k is label k";
            if (oh) {
              if (!oh->is_number_integer() || oh->get<std::int64_t>() < 2)
                fail(ErrorCode::unsupported, w + ": to_onehot must be an integer >= 2");
              onehot = true;
              const std::int64_t n = oh->get<std::int64_t>();
              // One-hot channels for the expressions after it: x == 0, x == 1, ...
              std::string cat = "torch.cat([";
              for (std::int64_t k = 0; k < n; ++k) cat += (k ? ", x == " : "x == ") + std::to_string(k);
              s.postprocess.lambdas.push_back(cat + "], dim=0)");
              width = n;
              text += ", one-hot over " + std::to_string(n) + " channels (the label map holds the same labels)";
            }
            step("postprocessing", pos, t, text);
          } else {
            if (oh) fail(ErrorCode::unsupported, w + ": to_onehot with threshold is not supported");
            if (!thr->is_number()) fail(ErrorCode::unsupported, w + ": threshold must be a number");
            s.postprocess.threshold = thr->get<double>();
            s.postprocess.discretize = Discretize::threshold;
            step("postprocessing", pos, t,
                 "threshold " + fmt(s.postprocess.threshold) + " per channel (>= threshold is on)" +
                     (width > 1 ? "; overlapping labels, one per channel" : ""));
          }
          if (!lambdas && !activated && s.postprocess.discretize == Discretize::threshold)
            fail(ErrorCode::unsupported, w + ": threshold needs Activationsd before it");
          discrete = true;
        } else if (t == "Lambdad") {
          if (inverted && s.postprocess.labels_on_model_grid)
            fail(ErrorCode::unsupported, w + ": a Lambdad after Invertd of a discrete label map is not supported");
          a.harmless({"inv_func", "track_meta", "overwrite"});
          const json& func = a.need("func");
          std::string text;
          const std::int64_t out = lambda_channels(func, list[i].first + "#func", width, text);
          (discrete ? s.postprocess.lambdas : s.postprocess.lambdas_before).push_back(text);
          lambdas = true;
          step("postprocessing", pos, t,
               "element-wise per voxel: " + text + " (" + std::to_string(width) + " -> " + std::to_string(out) +
                   " channel" + (out > 1 ? "s" : "") + ")");
          width = out;
        } else if (t == "KeepLargestConnectedComponentd") {
          if (!discrete && !lambdas)
            fail(ErrorCode::unsupported, w + ": KeepLargestConnectedComponentd before AsDiscreted is not supported");
          if (!inverted && !before_invert_ok) s.postprocess.components_on_model_grid = true;
          const json* labels = a.get("applied_labels");
          const bool independent = a.flag("independent", true);
          a.only("is_onehot", {json(false), json(nullptr)});
          const json* conn = a.get("connectivity");
          int c = 26;
          if (conn) {
            if (*conn == json(1))
              c = 6;
            else if (!(*conn == json(3)))
              fail(ErrorCode::unsupported, w + ": connectivity " + conn->dump() + " is not supported (1 or 3)");
          }
          a.only("num_components", {json(1)});
          std::vector<int> values;
          if (labels) {
            const json l = labels->is_array() ? *labels : json::array({*labels});
            for (const auto& e : l) {
              if (!e.is_number_integer()) fail(ErrorCode::invalid_model, w + ": applied_labels must be integers");
              values.push_back(e.get<int>());
            }
          }
          s.postprocess.connectivity = c;
          const std::string grid = s.postprocess.components_on_model_grid ? " (on the network's grid, before Invertd)" : "";
          if (independent) {
            if (!labels)
              for (std::int64_t k = 1; k < out_channels_; ++k) values.push_back(static_cast<int>(k));
            s.postprocess.keep_largest_component = values;
            step("postprocessing", pos, t,
                 "keep the largest component of each of labels " + json(values).dump() + ", " + std::to_string(c) +
                     "-connected" + grid);
          } else {
            // All applied labels together: MONAI keeps the largest component of their union.
            if (labels) {
              std::vector<int> all;
              for (std::int64_t k = 1; k < out_channels_; ++k) all.push_back(static_cast<int>(k));
              std::vector<int> sorted = values;
              std::sort(sorted.begin(), sorted.end());
              if (sorted != all)
                fail(ErrorCode::unsupported,
                     w + ": independent false is supported for all foreground labels together only");
            }
            s.postprocess.keep_largest_foreground = true;
            step("postprocessing", pos, t,
                 "keep the largest component of all foreground labels together, " + std::to_string(c) + "-connected" + grid);
          }
        } else if (t == "SaveImaged") {
          if (const json* p = a.get("output_postfix"); p && p->is_string()) b_.output_postfix = p->get<std::string>();
          if (const json* e = a.get("output_ext"); e && e->is_string()) b_.output_ext = e->get<std::string>();
          a.only("resample", {json(false)});
          a.harmless({"output_dir", "output_dtype", "separate_folder", "squeeze_end_dims", "data_root_dir", "print_log",
                      "writer", "output_format", "mode", "padding_mode", "scale", "dtype", "channel_dim",
                      "savepath_in_metadict", "output_name_formatter", "folder_layout", "meta_key_postfix"});
          step("postprocessing", pos, t, "write the label map on the input's grid (the file given with -o)");
        } else if (t == "EnsureTyped" || t == "ToTensord" || t == "ToDeviced" || t == "CopyItemsd" ||
                   t == "CastToTyped" || t == "SqueezeDimd") {
          if (t == "SqueezeDimd") a.only("dim", {json(0)}, "only the channel axis");
          a.harmless({"dtype", "data_type", "device", "wrap_sequence", "track_meta", "times", "names",
                      "update_meta"});
          step("postprocessing", pos, t, "nothing to do");
        } else {
          fail(ErrorCode::unsupported,
               w + ": the transform " + t + " is not supported (docs/pipeline.md lists those that are)");
        }
        a.finish();
      } catch (const Error& e) {
        problem("postprocessing", list[i], e);
      }
    }
    if (!activated) {
      s.postprocess.activation = Activation::none;
      s.postprocess.resample = ResampleSpace::logits;
    }
    check(inverted || !spatial_preprocessing(), ErrorCode::unsupported,
          c_.file() +
              ": postprocessing: without Invertd MONAI writes the model grid; voxinfer "
              "supports only bundles that invert to the input's grid");
    check(discrete || lambdas, ErrorCode::unsupported,
          c_.file() + ": postprocessing: without AsDiscreted the result is not a label map; not supported");
    s.postprocess.out_channels = out_channels_;
    if (!lambdas && !onehot) {
      if (s.postprocess.discretize == Discretize::argmax && !sigmoid) s.postprocess.discretize = Discretize::by_activation;
      if (s.postprocess.discretize == Discretize::threshold && sigmoid) s.postprocess.discretize = Discretize::by_activation;
    }
    if (onehot && s.postprocess.lambdas.size() == 1) {
      // One-hot at the end: the label map is the argmax itself.
      s.postprocess.lambdas.clear();
    }
    make_labels(sigmoid, width);
  }

  Config& c_;
  const json& meta_;
  Bundle& b_;
  bool collect_ = false;
  std::int64_t out_channels_ = 0;
  json channel_def_;
};

}  // namespace

bool is_bundle(const std::filesystem::path& dir) {
  std::error_code ec;
  const fs::path configs = dir / "configs";
  return fs::is_regular_file(configs / "metadata.json", ec) &&
         (fs::is_regular_file(configs / "inference.json", ec) || fs::is_regular_file(configs / "inference.yaml", ec));
}

Bundle translate_bundle(const std::string& metadata_json, const std::string& inference_json,
                        const std::filesystem::path& dir, const std::filesystem::path& network, bool collect_problems) {
  const json meta = parse_json(metadata_json, "metadata.json");
  if (!meta.is_object()) fail(ErrorCode::invalid_model, "metadata.json: expected an object");
  json inference = parse_json(inference_json, "inference.json");
  if (!inference.is_object()) fail(ErrorCode::invalid_model, "inference.json: expected an object");
  // Command-line style overrides a user might expect are not needed: the translation reads
  // only the preprocessing, inferer and postprocessing entries (and what they refer to).
  if (!inference.contains("bundle_root")) inference["bundle_root"] = dir.string();
  Config config(std::move(inference), "inference.json", dir);
  Bundle b;
  b.dir = dir;
  b.network = network;
  Translator(config, meta, b, collect_problems).run();
  b.spec.model = network.string();
  return b;
}

Bundle load_bundle(const std::filesystem::path& dir, const BundleOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(ErrorCode::invalid_input, dir.string() + ": bundle folder not found");
  const fs::path configs = dir / "configs";
  if (!fs::is_regular_file(configs / "inference.json", ec)) {
    if (fs::is_regular_file(configs / "inference.yaml", ec))
      fail(ErrorCode::unsupported, (configs / "inference.yaml").string() +
                                       ": YAML bundle configs are not supported yet (convert it to inference.json)");
    fail(ErrorCode::invalid_model,
         (configs / "inference.json").string() + ": missing (a MONAI bundle needs configs/inference.json)");
  }
  if (!fs::is_regular_file(configs / "metadata.json", ec))
    fail(ErrorCode::invalid_model,
         (configs / "metadata.json").string() + ": missing (a MONAI bundle needs configs/metadata.json)");
  const fs::path network = options.network ? *options.network : dir / "models" / "model.onnx";
  Bundle b;
  try {
    b = translate_bundle(read_text(configs / "metadata.json"), read_text(configs / "inference.json"), dir, network,
                         options.inspect);
  } catch (const Error& e) {
    // Name the folder: the messages name the file inside it.
    throw Error(e.code(), dir.filename().string() + "/configs/" + e.what());
  }
  for (auto& p : b.problems) p = dir.filename().string() + "/configs/" + p;
  if (!fs::is_regular_file(network, ec)) {
    const std::string msg = network.string() +
                            ": network file not found (a bundle runs models/model.onnx, or give --network FILE; "
                            "export one with python -m monai.bundle onnx_export)";
    if (!options.inspect) fail(ErrorCode::invalid_model, msg);
    b.problems.push_back(msg);
  }
  return b;
}

SegmentationPipeline open_segmentation(const std::filesystem::path& dir, const BundleOptions& options,
                                       SegmentationOptions segmentation) {
  Bundle b = load_bundle(dir, options);
  return SegmentationPipeline(dir, std::move(b.spec), b.network, std::move(segmentation));
}

std::string describe(const Bundle& b) {
  std::ostringstream os;
  os << "MONAI bundle   " << (b.name.empty() ? b.dir.filename().string() : b.name)
     << (b.version.empty() ? "" : " " + b.version) << "\n";
  os << "network        " << b.network.string() << " (axes xyz: [N, C, X, Y, Z])\n";
  os << "input          " << b.spec.input.channels << " channel(s)"
     << (b.spec.input.modality.empty() ? "" : ", " + b.spec.input.modality[0]);
  const auto& names = b.channel_keys.empty() ? b.channel_names : b.channel_keys;
  if (b.spec.input.channels > 1 && !names.empty()) {
    os << ":";
    for (std::size_t c = 0; c < names.size(); ++c) os << (c ? ", " : " ") << names[c];
    os << " (one -i each, in this order)";
  }
  os << "\n";
  std::string section;
  for (const auto& s : b.steps) {
    if (s.section != section) {
      os << s.section << ":\n";
      section = s.section;
    }
    os << "  "
       << (s.section == "inferer" ? std::string("  ") : std::to_string(s.position) + (s.position < 10 ? " " : ""))
       << " " << s.target << ": " << s.translation << "\n";
  }
  os << "labels        ";
  for (const auto& l : b.spec.labels) os << " " << l.value << "=" << l.name;
  os << "\n";
  if (!b.problems.empty()) {
    os << "cannot run (" << b.problems.size() << " problem" << (b.problems.size() > 1 ? "s" : "") << "):\n";
    for (const auto& p : b.problems) os << "  " << p << "\n";
  }
  return os.str();
}

}  // namespace voxinfer::monai
