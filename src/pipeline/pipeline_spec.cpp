// pipeline.json -> PipelineSpec. A small cursor over the JSON tree carries the field
// path so that every error names the field, and rejects keys nobody asked for.
#include "voxinfer/pipeline/pipeline_spec.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "voxinfer/core/error.h"
#include "voxinfer/core/geometry.h"

namespace voxinfer {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::invalid_model, "pipeline.json: " + path + ": " + what);
}

std::string type_of(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

std::string show(const json& j) {
  std::string s = j.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// A JSON value with its path. Objects remember which keys were read, so that
// finish() can reject the rest.
class Node {
 public:
  Node(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  const json& raw() const { return j_; }
  bool is_array() const { return j_.is_array(); }
  bool is_number() const { return j_.is_number(); }
  bool is_string() const { return j_.is_string(); }

  void expect_object() const {
    if (!j_.is_object()) bad(path_, "expected an object, got " + type_of(j_));
  }
  bool has(const std::string& key) {
    expect_object();
    allowed_.insert(key);
    return j_.contains(key);
  }
  Node get(const std::string& key) {
    if (!has(key)) bad(child_path(key), "is required");
    return Node(j_.at(key), child_path(key));
  }
  std::optional<Node> opt(const std::string& key) {
    if (!has(key)) return std::nullopt;
    return Node(j_.at(key), child_path(key));
  }
  // Rejects keys that were never asked for.
  void finish() const {
    expect_object();
    for (const auto& [key, value] : j_.items()) {
      if (!allowed_.count(key)) {
        std::string known;
        for (const auto& k : allowed_) known += (known.empty() ? "" : ", ") + k;
        bad(child_path(key), "unknown field (known fields here: " + known + ")");
      }
    }
  }

  std::string str() const {
    if (!j_.is_string()) bad(path_, "expected a string, got " + type_of(j_));
    return j_.get<std::string>();
  }
  std::string nonempty_str() const {
    std::string s = str();
    if (s.empty()) bad(path_, "expected a non-empty string");
    return s;
  }
  bool boolean() const {
    if (!j_.is_boolean()) bad(path_, "expected true or false, got " + type_of(j_));
    return j_.get<bool>();
  }
  double number() const {
    if (!j_.is_number()) bad(path_, "expected a number, got " + type_of(j_));
    const double v = j_.get<double>();
    if (!std::isfinite(v)) bad(path_, "expected a finite number");
    return v;
  }
  std::int64_t integer() const {
    if (j_.is_number_integer()) return j_.get<std::int64_t>();
    if (j_.is_number_float()) {
      const double v = j_.get<double>();
      if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9e15) return static_cast<std::int64_t>(v);
    }
    bad(path_, "expected an integer, got " + (j_.is_number() ? show(j_) : type_of(j_)));
  }
  std::vector<Node> array(std::optional<std::size_t> size = std::nullopt) const {
    if (!j_.is_array()) bad(path_, "expected an array, got " + type_of(j_));
    if (size && j_.size() != *size)
      bad(path_, "expected an array of " + std::to_string(*size) + " values, got " + std::to_string(j_.size()));
    std::vector<Node> out;
    for (std::size_t i = 0; i < j_.size(); ++i) out.emplace_back(j_[i], path_ + "[" + std::to_string(i) + "]");
    return out;
  }

 private:
  std::string child_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  const json& j_;
  std::string path_;
  std::set<std::string> allowed_;
};

template <typename E>
E one_of(const Node& n, std::initializer_list<std::pair<const char*, E>> choices) {
  const std::string s = n.str();
  std::string names;
  for (const auto& [name, value] : choices) {
    if (s == name) return value;
    names += std::string(names.empty() ? "" : ", ") + "\"" + name + "\"";
  }
  bad(n.path(), "expected one of " + names + ", got \"" + s + "\"");
}

std::array<double, 3> positive_triple(const Node& n) {
  std::array<double, 3> out{};
  const auto items = n.array(3);
  for (std::size_t i = 0; i < 3; ++i) {
    out[i] = items[i].number();
    if (!(out[i] > 0)) bad(items[i].path(), "expected a positive number, got " + show(items[i].raw()));
  }
  return out;
}

std::array<std::int64_t, 3> positive_int_triple(const Node& n) {
  std::array<std::int64_t, 3> out{};
  const auto items = n.array(3);
  for (std::size_t i = 0; i < 3; ++i) {
    out[i] = items[i].integer();
    if (out[i] <= 0) bad(items[i].path(), "expected a positive integer, got " + show(items[i].raw()));
  }
  return out;
}

std::array<double, 2> number_pair(const Node& n) {
  const auto items = n.array(2);
  return {items[0].number(), items[1].number()};
}

IntensityOp parse_intensity_op(Node n) {
  IntensityOp op;
  op.kind = one_of<IntensityOp::Kind>(n.get("op"), {{"clip", IntensityOp::Kind::clip},
                                                    {"scale", IntensityOp::Kind::scale},
                                                    {"minmax", IntensityOp::Kind::minmax},
                                                    {"zscore", IntensityOp::Kind::zscore},
                                                    {"percentile_clip", IntensityOp::Kind::percentile_clip},
                                                    {"quantile", IntensityOp::Kind::quantile}});
  const std::string& p = n.path();
  switch (op.kind) {
    case IntensityOp::Kind::clip:
      op.min = n.get("min").number();
      op.max = n.get("max").number();
      if (!(op.min <= op.max)) bad(p + ".max", "expected max >= min");
      break;
    case IntensityOp::Kind::scale:
      op.from = number_pair(n.get("from"));
      op.to = number_pair(n.get("to"));
      if (op.from[0] == op.from[1]) bad(p + ".from", "expected two different values");
      if (auto c = n.opt("clip")) op.clip_output = c->boolean();
      break;
    case IntensityOp::Kind::minmax:
      if (auto c = n.opt("channel_wise")) op.channel_wise = c->boolean();
      break;
    case IntensityOp::Kind::zscore: {
      auto mean = n.opt("mean");
      auto sd = n.opt("std");
      if (mean.has_value() != sd.has_value())
        bad(p + (mean ? ".std" : ".mean"), "expected both mean and std (fixed) or neither (per image)");
      if (mean) {
        op.mean = mean->number();
        op.std = sd->number();
        if (!(*op.std > 0)) bad(sd->path(), "expected a positive number, got " + show(sd->raw()));
        if (n.has("nonzero") || n.has("channel_wise"))
          bad(p + (n.raw().contains("nonzero") ? ".nonzero" : ".channel_wise"),
              "only applies to a per-image zscore (without mean and std)");
      } else {
        if (auto nz = n.opt("nonzero")) op.nonzero = nz->boolean();
        if (auto c = n.opt("channel_wise")) op.channel_wise = c->boolean();
      }
      break;
    }
    case IntensityOp::Kind::percentile_clip: {
      const Node lo = n.get("lo"), hi = n.get("hi");
      op.lo = lo.number();
      op.hi = hi.number();
      if (op.lo < 0 || op.lo > 100) bad(lo.path(), "expected a percentile in [0, 100]");
      if (op.hi < 0 || op.hi > 100) bad(hi.path(), "expected a percentile in [0, 100]");
      if (!(op.lo <= op.hi)) bad(hi.path(), "expected hi >= lo");
      if (auto nz = n.opt("nonzero")) op.nonzero = nz->boolean();
      if (auto c = n.opt("channel_wise")) op.channel_wise = c->boolean();
      break;
    }
    case IntensityOp::Kind::quantile: {
      const Node lo = n.get("lo"), hi = n.get("hi");
      op.lo = lo.number();
      op.hi = hi.number();
      if (op.lo < 0 || op.lo > 1) bad(lo.path(), "expected a fraction in [0, 1]");
      if (op.hi < 0 || op.hi > 1) bad(hi.path(), "expected a fraction in [0, 1]");
      if (!(op.lo < op.hi)) bad(hi.path(), "expected hi > lo");
      break;
    }
  }
  n.finish();
  return op;
}

void parse_input(Node n, PipelineSpec& spec) {
  const Node ch = n.get("channels");
  spec.input.channels = ch.integer();
  if (spec.input.channels < 1) bad(ch.path(), "expected a positive integer, got " + show(ch.raw()));
  if (auto m = n.opt("modality")) {
    if (m->is_array()) {
      const auto items = m->array(static_cast<std::size_t>(spec.input.channels));
      for (const auto& it : items) spec.input.modality.push_back(it.nonempty_str());
    } else if (m->is_string()) {
      const std::string s = m->nonempty_str();
      spec.input.modality.assign(static_cast<std::size_t>(spec.input.channels), s);
    } else {
      bad(m->path(), "expected a string or an array of one string per channel, got " + type_of(m->raw()));
    }
  }
  if (auto t = n.opt("tabular")) {
    const Node len = t->get("length");
    spec.input.tabular_length = len.integer();
    if (spec.input.tabular_length < 1) bad(len.path(), "expected a positive integer");
    if (auto names = t->opt("names")) {
      for (const auto& it : names->array(static_cast<std::size_t>(spec.input.tabular_length)))
        spec.input.tabular_names.push_back(it.nonempty_str());
    }
    t->finish();
  }
  n.finish();
}

void parse_preprocess(Node n, PipelineSpec& spec) {
  auto& pre = spec.preprocess;
  if (auto c = n.opt("conform")) {
    pre.conform = c->boolean();
    if (pre.conform && spec.task != Task::segmentation) bad(c->path(), "only applies to \"task\": \"segmentation\"");
    if (pre.conform && (n.has("orientation") || n.has("spacing")))
      bad(c->path(), "conform sets the orientation and spacing; leave out orientation and spacing");
  }
  if (auto o = n.opt("orientation")) {
    const std::string code = o->str();
    try {
      (void)direction_from_code(code);
    } catch (const Error&) {
      bad(o->path(), "expected a three-letter orientation code such as \"RAS\" or \"LPS\", got \"" + code + "\"");
    }
    pre.orientation = code;
  }
  if (auto s = n.opt("spacing")) pre.spacing = positive_triple(*s);
  if (auto r = n.opt("size_rule"))
    pre.size_rule = one_of<SizeRule>(*r, {{"extent", SizeRule::extent}, {"centres", SizeRule::centres}});
  if (auto in = n.opt("intensity")) {
    for (const auto& item : in->array()) pre.intensity.push_back(parse_intensity_op(item));
  }
  if (auto r = n.opt("resize")) {
    if (spec.task != Task::classification) bad(r->path(), "only applies to \"task\": \"classification\"");
    pre.resize = positive_int_triple(*r);
  }
  if (auto c = n.opt("crop")) {
    if (spec.task != Task::classification) bad(c->path(), "only applies to \"task\": \"classification\"");
    if (pre.resize) bad(c->path(), "expected either resize or crop, not both");
    CropSpec crop;
    if (auto m = c->opt("mode"))
      crop.mode = one_of<CropSpec::Mode>(*m, {{"center", CropSpec::Mode::center}, {"foreground", CropSpec::Mode::foreground}});
    crop.size = positive_int_triple(c->get("size"));
    if (auto mg = c->opt("margin")) {
      crop.margin = mg->integer();
      if (crop.margin < 0) bad(mg->path(), "expected a non-negative integer");
    }
    c->finish();
    pre.crop = crop;
  }
  if (auto c = n.opt("crop_foreground")) {
    if (spec.task != Task::segmentation) bad(c->path(), "only applies to \"task\": \"segmentation\" (use crop)");
    ForegroundCropSpec crop;
    if (auto mg = c->opt("margin")) {
      crop.margin = mg->integer();
      if (crop.margin < 0) bad(mg->path(), "expected a non-negative integer");
    }
    if (auto t = c->opt("threshold")) {
      crop.threshold = t->number();
      if (!(crop.threshold >= 0 && crop.threshold <= 1)) bad(t->path(), "expected a fraction of the maximum in [0, 1]");
    }
    if (auto m = c->opt("model")) {
      crop.model = m->nonempty_str();
      if (crop.threshold > 0) bad(m->path(), "expected either a threshold or a pre-model, not both");
    }
    c->finish();
    pre.crop_foreground = crop;
  }
  n.finish();
}

void parse_inference(Node n, PipelineSpec& spec) {
  auto& inf = spec.inference;
  const Node roi = n.get("roi_size");
  if (roi.is_string()) {
    if (roi.str() != "whole")
      bad(roi.path(), "expected three positive integers or \"whole\", got \"" + roi.str() + "\"");
    inf.whole_volume = true;
  } else {
    inf.roi_size = positive_int_triple(roi);
  }
  if (auto o = n.opt("overlap")) {
    auto check = [](const Node& v) {
      const double x = v.number();
      if (!(x >= 0 && x < 1)) bad(v.path(), "expected a number in [0, 1), got " + show(v.raw()));
      return x;
    };
    if (o->is_array()) {
      const auto items = o->array(3);
      for (std::size_t i = 0; i < 3; ++i) inf.overlap[i] = check(items[i]);
    } else if (o->is_number()) {
      inf.overlap.fill(check(*o));
    } else {
      bad(o->path(), "expected a number in [0, 1) or an array of three, got " + type_of(o->raw()));
    }
  }
  if (auto b = n.opt("blend"))
    inf.blend = one_of<BlendMode>(*b, {{"gaussian", BlendMode::gaussian}, {"constant", BlendMode::constant}});
  if (auto s = n.opt("sigma_scale")) {
    inf.sigma_scale = s->number();
    if (!(inf.sigma_scale > 0)) bad(s->path(), "expected a positive number, got " + show(s->raw()));
  }
  if (auto m = n.opt("mirror_axes")) {
    for (const auto& it : m->array()) {
      const std::int64_t a = it.integer();
      if (a < 0 || a > 2) bad(it.path(), "expected a spatial axis 0, 1 or 2, got " + show(it.raw()));
      if (std::find(inf.mirror_axes.begin(), inf.mirror_axes.end(), static_cast<int>(a)) != inf.mirror_axes.end())
        bad(it.path(), "axis " + std::to_string(a) + " is listed twice");
      inf.mirror_axes.push_back(static_cast<int>(a));
    }
  }
  if (auto b = n.opt("batch")) {
    inf.batch = b->integer();
    if (inf.batch < 1) bad(b->path(), "expected a positive integer, got " + show(b->raw()));
  }
  if (auto s = n.opt("style"))
    inf.style = one_of<WindowStyle>(*s, {{"nnunet", WindowStyle::nnunet}, {"monai", WindowStyle::monai}});
  if (auto a = n.opt("average"))
    inf.average = one_of<AverageSpace>(*a, {{"logits", AverageSpace::logits}, {"probabilities", AverageSpace::probabilities}});
  n.finish();
}

void parse_postprocess(Node n, PipelineSpec& spec) {
  auto& post = spec.postprocess;
  if (auto a = n.opt("activation"))
    post.activation = one_of<Activation>(
        *a, {{"softmax", Activation::softmax}, {"sigmoid", Activation::sigmoid}, {"none", Activation::none}});
  if (auto r = n.opt("resample"))
    post.resample = one_of<ResampleSpace>(*r, {{"logits", ResampleSpace::logits}, {"probabilities", ResampleSpace::probabilities}});
  if (auto t = n.opt("threshold")) {
    post.threshold = t->number();
    if (!(post.threshold > 0 && post.threshold < 1)) bad(t->path(), "expected a number in (0, 1)");
  }
  const bool seg = spec.task == Task::segmentation;
  if (auto k = n.opt("keep_largest_component")) {
    if (!seg) bad(k->path(), "only applies to \"task\": \"segmentation\"");
    for (const auto& it : k->array()) {
      const std::int64_t v = it.integer();
      if (v < 1 || v > 65535) bad(it.path(), "expected a label value in [1, 65535], got " + show(it.raw()));
      post.keep_largest_component.push_back(static_cast<int>(v));
    }
  }
  if (auto r = n.opt("remove_small_mm3")) {
    if (!seg) bad(r->path(), "only applies to \"task\": \"segmentation\"");
    post.remove_small_mm3 = r->number();
    if (post.remove_small_mm3 < 0) bad(r->path(), "expected a non-negative number of mm^3");
  }
  if (auto c = n.opt("connectivity")) {
    const std::int64_t v = c->integer();
    if (v != 6 && v != 26) bad(c->path(), "expected 6 or 26, got " + show(c->raw()));
    post.connectivity = static_cast<int>(v);
  }
  if (auto k = n.opt("keep_largest_foreground")) {
    if (!seg) bad(k->path(), "only applies to \"task\": \"segmentation\"");
    post.keep_largest_foreground = k->boolean();
  }
  if (auto b = n.opt("binarize")) {
    if (!seg) bad(b->path(), "only applies to \"task\": \"segmentation\"");
    post.binarize = b->boolean();
  }
  if (auto x = n.opt("extract")) {
    if (!seg) bad(x->path(), "only applies to \"task\": \"segmentation\"");
    post.extract = x->boolean();
  }
  n.finish();
}

void parse_labels(const Node& n, PipelineSpec& spec) {
  std::set<int> seen;
  for (Node item : n.array()) {
    LabelSpec l;
    const Node v = item.get("value");
    const std::int64_t value = v.integer();
    if (value < 1 || value > 65535) bad(v.path(), "expected a label value in [1, 65535] (0 is background), got " + show(v.raw()));
    l.value = static_cast<int>(value);
    if (!seen.insert(l.value).second) bad(v.path(), "label value " + std::to_string(value) + " is used twice");
    l.name = item.get("name").nonempty_str();
    if (auto c = item.opt("color")) {
      std::array<int, 3> rgb{};
      const auto items = c->array(3);
      for (std::size_t i = 0; i < 3; ++i) {
        const std::int64_t x = items[i].integer();
        if (x < 0 || x > 255) bad(items[i].path(), "expected an integer in [0, 255], got " + show(items[i].raw()));
        rgb[i] = static_cast<int>(x);
      }
      l.color = rgb;
    }
    if (auto c = item.opt("code")) {
      LabelCode code;
      code.scheme = c->get("scheme").nonempty_str();
      code.value = c->get("value").nonempty_str();
      code.meaning = c->get("meaning").nonempty_str();
      c->finish();
      l.code = code;
    }
    item.finish();
    spec.labels.push_back(std::move(l));
  }
}

}  // namespace

const LabelSpec* PipelineSpec::find_label(int value) const {
  for (const auto& l : labels)
    if (l.value == value) return &l;
  return nullptr;
}

PipelineSpec parse_pipeline_spec(std::string_view json_text) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {  // parse errors, and numbers out of range such as 1e400
    throw Error(ErrorCode::invalid_model, std::string("pipeline.json: not valid JSON: ") + e.what());
  }
  Node n(root, "");
  if (!root.is_object()) bad("(top level)", "expected an object, got " + type_of(root));

  PipelineSpec spec;
  spec.task = one_of<Task>(n.get("task"), {{"segmentation", Task::segmentation}, {"classification", Task::classification}});
  spec.model = n.get("model").nonempty_str();
  spec.axes = one_of<AxisOrder>(n.get("axes"), {{"xyz", AxisOrder::xyz}, {"zyx", AxisOrder::zyx}});
  if (auto v = n.opt("name")) spec.name = v->str();
  if (auto v = n.opt("version")) spec.version = v->str();
  if (auto v = n.opt("description")) spec.description = v->str();
  if (auto v = n.opt("license")) spec.license = v->str();
  parse_input(n.get("input"), spec);
  if (auto p = n.opt("preprocess")) parse_preprocess(*p, spec);
  const bool seg = spec.task == Task::segmentation;
  if (auto i = n.opt("inference")) {
    if (!seg) bad(i->path(), "only applies to \"task\": \"segmentation\"");
    parse_inference(*i, spec);
  } else if (seg) {
    bad("inference", "is required for a segmentation (it holds roi_size)");
  }
  if (auto p = n.opt("postprocess")) parse_postprocess(*p, spec);
  if (auto net = n.opt("network")) {
    NetworkEditSpec e;
    e.instance_norm_after = net->get("instance_norm_after").nonempty_str();
    if (auto eps = net->opt("epsilon")) {
      e.epsilon = eps->number();
      if (!(e.epsilon > 0)) bad(eps->path(), "expected a positive number");
    }
    net->finish();
    spec.network = e;
  }
  if (seg) {
    if (n.has("classes")) bad("classes", "only applies to \"task\": \"classification\"");
    parse_labels(n.get("labels"), spec);
    if (spec.labels.empty()) bad("labels", "expected at least one label");
    if (spec.inference.average == AverageSpace::probabilities && spec.postprocess.activation == Activation::none)
      bad("inference.average", "\"probabilities\" needs postprocess.activation \"softmax\" or \"sigmoid\"");
    if (spec.postprocess.resample == ResampleSpace::probabilities && spec.postprocess.activation == Activation::none)
      bad("postprocess.resample", "\"probabilities\" needs postprocess.activation \"softmax\" or \"sigmoid\"");
    if (const auto& c = spec.preprocess.crop_foreground;
        c && (c->threshold > 0 || !c->model.empty()) && !spec.inference.whole_volume)
      bad(c->threshold > 0 ? "preprocess.crop_foreground.threshold" : "preprocess.crop_foreground.model",
          "only applies with inference.roi_size \"whole\"");
    if (spec.postprocess.binarize && (spec.labels.size() != 1 || spec.labels[0].value != 1))
      bad("postprocess.binarize", "a binary mask needs exactly one label, of value 1");
    for (std::size_t i = 0; i < spec.postprocess.keep_largest_component.size(); ++i) {
      const int v = spec.postprocess.keep_largest_component[i];
      if (!spec.find_label(v))
        bad("postprocess.keep_largest_component[" + std::to_string(i) + "]",
            "label value " + std::to_string(v) + " is not in labels");
    }
  } else {
    if (n.has("labels")) bad("labels", "only applies to \"task\": \"segmentation\" (use classes)");
    const Node classes = n.get("classes");
    std::set<std::string> seen;
    for (const auto& c : classes.array()) {
      std::string name = c.nonempty_str();
      if (!seen.insert(name).second) bad(c.path(), "class name \"" + name + "\" is used twice");
      spec.classes.push_back(std::move(name));
    }
    if (spec.classes.empty()) bad("classes", "expected at least one class name");
  }
  n.finish();
  return spec;
}

PipelineSpec load_pipeline_spec(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::invalid_model, "cannot read " + file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse_pipeline_spec(ss.str());
  } catch (const Error& e) {
    // Name the file rather than the generic pipeline.json.
    std::string msg = e.what();
    const std::string prefix = "pipeline.json";
    if (msg.rfind(prefix, 0) == 0) msg = file.string() + msg.substr(prefix.size());
    throw Error(e.code(), msg);
  }
}

std::string_view task_name(Task t) noexcept { return t == Task::segmentation ? "segmentation" : "classification"; }
std::string_view axis_order_name(AxisOrder a) noexcept { return a == AxisOrder::xyz ? "xyz" : "zyx"; }
std::string_view activation_name(Activation a) noexcept {
  switch (a) {
    case Activation::softmax: return "softmax";
    case Activation::sigmoid: return "sigmoid";
    case Activation::none: return "none";
  }
  return "?";
}

}  // namespace voxinfer
