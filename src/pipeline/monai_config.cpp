// MONAI's config syntax: ids, references, macros, and a small safe expression evaluator.
#include "pipeline/monai_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <vector>

#include "voxinfer/core/error.h"

namespace voxinfer::monai {
namespace {

using nlohmann::json;

constexpr char kSep = '#';

std::vector<std::string> split_id(std::string_view id) {
  std::vector<std::string> parts;
  if (id.empty()) return parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t p = id.find(kSep, start);
    parts.emplace_back(id.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return parts;
}

// The entry at `id` inside `root`, or nullptr.
const json* find(const json& root, std::string_view id) {
  const json* node = &root;
  for (const auto& part : split_id(id)) {
    if (node->is_object()) {
      auto it = node->find(part);
      if (it == node->end()) return nullptr;
      node = &*it;
    } else if (node->is_array()) {
      if (part.empty() || part.size() > 9 ||
          !std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
        return nullptr;
      const auto i = static_cast<std::size_t>(std::stoul(part));
      if (i >= node->size()) return nullptr;
      node = &(*node)[i];
    } else {
      return nullptr;
    }
  }
  return node;
}

bool is_id_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == kSep;
}

// ---- the expression evaluator ----------------------------------------------------------

// Raised inside the evaluator; the Config turns it into Error(invalid_model) with the context.
struct EvalError {
  std::string what;
};

// A value: plain data, or a dotted name of a module or function not called yet (`torch.float32`).
struct Value {
  json data;
  std::string symbol;
};

// Constants of the modules the zoo's configs name: dtypes become their names.
std::optional<json> module_constant(const std::string& name) {
  static const char* const kDtypes[] = {"float16", "float32", "float64", "bfloat16", "int8", "int16",
                                        "int32",   "int64",   "uint8",   "uint16",   "bool", "float",
                                        "double",  "half",    "long",    "int"};
  for (const char* module : {"numpy.", "np.", "torch."}) {
    if (name.rfind(module, 0) != 0) continue;
    const std::string rest = name.substr(std::string(module).size());
    for (const char* d : kDtypes)
      if (rest == d) return json(rest == "float" && std::string(module) == "torch." ? "float32" : rest);
  }
  return std::nullopt;
}

bool is_module_root(const std::string& name) {
  return name == "numpy" || name == "np" || name == "torch" || name == "os" || name == "monai";
}

class Evaluator {
 public:
  Evaluator(std::string_view text, std::function<json(const std::string&)> reference)
      : s_(text), reference_(std::move(reference)) {}

  json run() {
    skip_space();
    if (starts_word("lambda")) throw EvalError{"lambda functions are not supported"};
    Value v = expression();
    skip_space();
    if (pos_ != s_.size()) throw EvalError{"unexpected '" + std::string(s_.substr(pos_, 12)) + "'"};
    return finish(v);
  }

 private:
  // ---- lexing helpers
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool starts_word(std::string_view w) const {
    if (s_.substr(pos_, w.size()) != w) return false;
    const std::size_t e = pos_ + w.size();
    return e >= s_.size() || !(std::isalnum(static_cast<unsigned char>(s_[e])) || s_[e] == '_');
  }
  bool accept_word(std::string_view w) {
    skip_space();
    if (!starts_word(w)) return false;
    pos_ += w.size();
    return true;
  }
  bool accept(std::string_view op) {
    skip_space();
    if (s_.substr(pos_, op.size()) != op) return false;
    // "=" alone is not "==", "/" not "//", "<" not "<=".
    if ((op == "<" || op == ">" || op == "/" || op == "*") && pos_ + 1 < s_.size() &&
        (s_[pos_ + 1] == '=' || (op == "/" && s_[pos_ + 1] == '/') || (op == "*" && s_[pos_ + 1] == '*')))
      return false;
    pos_ += op.size();
    return true;
  }
  void expect(std::string_view op) {
    if (!accept(op)) throw EvalError{"expected '" + std::string(op) + "'"};
  }

  // A symbol that must be a value by now.
  json finish(const Value& v) const {
    if (v.symbol.empty()) return v.data;
    if (auto c = module_constant(v.symbol)) return *c;
    throw EvalError{"'" + v.symbol + "' is not supported"};
  }

  static double num(const json& j, const char* op) {
    if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
    if (!j.is_number()) throw EvalError{std::string("'") + op + "' needs numbers, got " + j.dump()};
    return j.get<double>();
  }
  static json number(double x, bool integral) {
    if (integral && std::abs(x) < 9e15) return json(static_cast<std::int64_t>(x));
    return json(x);
  }
  static bool truthy(const json& j) {
    if (j.is_null()) return false;
    if (j.is_boolean()) return j.get<bool>();
    if (j.is_number()) return j.get<double>() != 0;
    if (j.is_string() || j.is_array() || j.is_object()) return !j.empty();
    return true;
  }

  // ---- grammar (Python's precedence): ternary < or < and < not < comparison < + - < * / // % < unary < postfix
  Value expression() {
    Value a = disjunction();
    if (accept_word("if")) {
      const json cond = finish(disjunction());
      if (!accept_word("else")) throw EvalError{"expected 'else'"};
      Value b = expression();
      return truthy(cond) ? a : b;
    }
    return a;
  }
  Value disjunction() {
    Value a = conjunction();
    while (accept_word("or")) {
      Value b = conjunction();
      a = truthy(finish(a)) ? a : b;
    }
    return a;
  }
  Value conjunction() {
    Value a = negation();
    while (accept_word("and")) {
      Value b = negation();
      a = truthy(finish(a)) ? b : a;
    }
    return a;
  }
  Value negation() {
    if (accept_word("not")) return Value{json(!truthy(finish(negation()))), {}};
    return comparison();
  }
  Value comparison() {
    Value a = sum();
    for (const char* op : {"==", "!=", "<=", ">=", "<", ">"}) {
      if (!accept(op)) continue;
      const json l = finish(a), r = finish(sum());
      const std::string o = op;
      if (o == "==") return Value{json(l == r), {}};
      if (o == "!=") return Value{json(l != r), {}};
      const double x = num(l, op), y = num(r, op);
      const bool res = o == "<=" ? x <= y : o == ">=" ? x >= y : o == "<" ? x < y : x > y;
      return Value{json(res), {}};
    }
    return a;
  }
  Value sum() {
    Value a = product();
    while (true) {
      if (accept("+")) {
        const json l = finish(a), r = finish(product());
        if (l.is_string() && r.is_string())
          a = Value{json(l.get<std::string>() + r.get<std::string>()), {}};
        else if (l.is_array() && r.is_array()) {
          json c = l;
          for (const auto& e : r) c.push_back(e);
          a = Value{c, {}};
        } else {
          a = Value{number(num(l, "+") + num(r, "+"), !l.is_number_float() && !r.is_number_float()), {}};
        }
      } else if (accept("-")) {
        const json l = finish(a), r = finish(product());
        a = Value{number(num(l, "-") - num(r, "-"), !l.is_number_float() && !r.is_number_float()), {}};
      } else {
        return a;
      }
    }
  }
  Value product() {
    Value a = unary();
    while (true) {
      if (accept("*")) {
        const json l = finish(a), r = finish(unary());
        a = Value{number(num(l, "*") * num(r, "*"), !l.is_number_float() && !r.is_number_float()), {}};
      } else if (accept("//")) {
        const json l = finish(a), r = finish(unary());
        const double d = num(r, "//");
        if (d == 0) throw EvalError{"division by zero"};
        a = Value{number(std::floor(num(l, "//") / d), !l.is_number_float() && !r.is_number_float()), {}};
      } else if (accept("/")) {
        const json l = finish(a), r = finish(unary());
        const double d = num(r, "/");
        if (d == 0) throw EvalError{"division by zero"};
        a = Value{json(num(l, "/") / d), {}};
      } else if (accept("%")) {
        const json l = finish(a), r = finish(unary());
        const double d = num(r, "%");
        if (d == 0) throw EvalError{"division by zero"};
        const double x = num(l, "%");
        a = Value{number(x - std::floor(x / d) * d, !l.is_number_float() && !r.is_number_float()), {}};
      } else {
        return a;
      }
    }
  }
  Value unary() {
    if (accept("-")) {
      const json v = finish(unary());
      return Value{number(-num(v, "-"), !v.is_number_float()), {}};
    }
    if (accept("+")) return unary();
    return postfix();
  }
  Value postfix() {
    Value v = atom();
    while (true) {
      if (accept(".")) {
        skip_space();
        const std::string name = identifier();
        if (v.symbol.empty()) throw EvalError{"attribute '." + name + "' of a value is not supported"};
        v.symbol += "." + name;
      } else if (accept("(")) {
        std::vector<json> args;
        skip_space();
        if (!accept(")")) {
          do {
            skip_space();
            // Keyword arguments are not part of the supported calls.
            const std::size_t save = pos_;
            if (std::isalpha(static_cast<unsigned char>(s_[pos_])) != 0) {
              identifier();
              skip_space();
              if (pos_ + 1 < s_.size() && s_[pos_] == '=' && s_[pos_ + 1] != '=')
                throw EvalError{"keyword arguments are not supported"};
              pos_ = save;
            }
            args.push_back(finish(expression()));
          } while (accept(","));
          expect(")");
        }
        v = Value{call(v, args), {}};
      } else if (accept("[")) {
        const json index = finish(expression());
        expect("]");
        const json target = finish(v);
        if (target.is_array() && index.is_number_integer()) {
          auto i = index.get<std::int64_t>();
          const auto n = static_cast<std::int64_t>(target.size());
          if (i < 0) i += n;
          if (i < 0 || i >= n) throw EvalError{"index out of range"};
          v = Value{target[static_cast<std::size_t>(i)], {}};
        } else if (target.is_object() && index.is_string() && target.contains(index.get<std::string>())) {
          v = Value{target[index.get<std::string>()], {}};
        } else {
          throw EvalError{"indexing " + target.dump() + " with " + index.dump() + " is not supported"};
        }
      } else {
        return v;
      }
    }
  }
  json call(const Value& f, const std::vector<json>& args) {
    if (f.symbol.empty()) throw EvalError{"calling a value is not supported"};
    const std::string& name = f.symbol;
    auto all_strings = [&] {
      return std::all_of(args.begin(), args.end(), [](const json& a) { return a.is_string(); });
    };
    if (name == "os.path.join" && !args.empty() && all_strings()) {
      std::string out;
      for (const auto& a : args) {
        const std::string p = a.get<std::string>();
        if (!p.empty() && p[0] == '/')
          out = p;
        else if (out.empty() || out.back() == '/')
          out += p;
        else
          out += "/" + p;
      }
      return out;
    }
    if (name == "torch.cuda.is_available" && args.empty()) return false;  // voxinfer runs on the CPU
    if (name == "torch.device" && args.size() == 1 && args[0].is_string()) return args[0];
    if (name == "str" && args.size() == 1) return args[0].is_string() ? args[0] : json(args[0].dump());
    if ((name == "int" || name == "float") && args.size() == 1) {
      double x = 0;
      if (args[0].is_string()) {
        try {
          x = std::stod(args[0].get<std::string>());
        } catch (const std::exception&) {
          throw EvalError{name + "() of " + args[0].dump()};
        }
      } else {
        x = num(args[0], name.c_str());
      }
      return name == "int" ? json(static_cast<std::int64_t>(std::trunc(x))) : json(x);
    }
    if (name == "len" && args.size() == 1 && (args[0].is_array() || args[0].is_string() || args[0].is_object()))
      return static_cast<std::int64_t>(args[0].is_string() ? args[0].get<std::string>().size() : args[0].size());
    if (name == "list" && args.size() == 1 && args[0].is_array()) return args[0];
    throw EvalError{"calling '" + name + "' is not supported"};
  }
  std::string identifier() {
    const std::size_t b = pos_;
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
    if (b == pos_) throw EvalError{"expected a name"};
    return std::string(s_.substr(b, pos_ - b));
  }
  json string_literal() {
    const char q = s_[pos_++];
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != q) {
      char c = s_[pos_++];
      if (c == '\\' && pos_ < s_.size()) {
        c = s_[pos_++];
        if (c == 'n')
          c = '\n';
        else if (c == 't')
          c = '\t';
      }
      out += c;
    }
    if (pos_ >= s_.size()) throw EvalError{"unterminated string"};
    ++pos_;
    return out;
  }
  json number_literal() {
    const std::size_t b = pos_;
    bool is_float = false;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (std::isdigit(static_cast<unsigned char>(c)) || c == '_')
        ++pos_;
      else if (c == '.' || c == 'e' || c == 'E') {
        is_float = true;
        ++pos_;
        if ((c == 'e' || c == 'E') && pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) ++pos_;
      } else {
        break;
      }
    }
    std::string t(s_.substr(b, pos_ - b));
    t.erase(std::remove(t.begin(), t.end(), '_'), t.end());
    try {
      if (is_float) return json(std::stod(t));
      return json(static_cast<std::int64_t>(std::stoll(t)));
    } catch (const std::exception&) {
      throw EvalError{"bad number '" + t + "'"};
    }
  }
  Value atom() {
    skip_space();
    if (pos_ >= s_.size()) throw EvalError{"unexpected end"};
    const char c = s_[pos_];
    if (c == '\'' || c == '"') {
      json str = string_literal();
      skip_space();
      // Adjacent literals concatenate, as in Python.
      while (pos_ < s_.size() && (s_[pos_] == '\'' || s_[pos_] == '"')) {
        str = str.get<std::string>() + string_literal().get<std::string>();
        skip_space();
      }
      return Value{str, {}};
    }
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c == '.' && pos_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1]))))
      return Value{number_literal(), {}};
    if (c == '@') {
      const std::size_t b = ++pos_;
      while (pos_ < s_.size() && is_id_char(s_[pos_])) ++pos_;
      return Value{reference_(std::string(s_.substr(b, pos_ - b))), {}};
    }
    if (c == '(' || c == '[') {
      ++pos_;
      const char close = c == '(' ? ')' : ']';
      json items = json::array();
      bool tuple = c == '[';
      skip_space();
      if (pos_ < s_.size() && s_[pos_] == close) {
        ++pos_;
        return Value{items, {}};
      }
      Value first = expression();
      if (c == '(' && !accept(",")) {
        expect(")");
        return first;
      }
      if (c == '[' && (accept_word("for"))) throw EvalError{"comprehensions are not supported"};
      items.push_back(finish(first));
      tuple = true;
      if (c == '[') accept(",");
      while (true) {
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == close) break;
        items.push_back(finish(expression()));
        if (!accept(",")) break;
      }
      expect(std::string(1, close));
      (void)tuple;
      return Value{items, {}};
    }
    if (c == '{') {
      ++pos_;
      json obj = json::object();
      skip_space();
      if (!accept("}")) {
        do {
          skip_space();
          if (pos_ < s_.size() && s_[pos_] == '}') break;
          const json key = finish(expression());
          if (!key.is_string()) throw EvalError{"only string keys are supported in dicts"};
          expect(":");
          obj[key.get<std::string>()] = finish(expression());
        } while (accept(","));
        expect("}");
      }
      return Value{obj, {}};
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      const std::string name = identifier();
      if (name == "True") return Value{json(true), {}};
      if (name == "False") return Value{json(false), {}};
      if (name == "None") return Value{json(nullptr), {}};
      if (name == "lambda") throw EvalError{"lambda functions are not supported"};
      if (is_module_root(name) || name == "str" || name == "int" || name == "float" || name == "len" || name == "list")
        return Value{json(), name};
      throw EvalError{"the name '" + name + "' is not supported"};
    }
    throw EvalError{"unexpected '" + std::string(1, c) + "'"};
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::function<json(const std::string&)> reference_;
};

}  // namespace

std::string absolute_id(std::string_view reference, std::string_view at) {
  std::size_t hashes = 0;
  while (hashes < reference.size() && reference[hashes] == kSep) ++hashes;
  if (hashes == 0) return std::string(reference);
  const std::vector<std::string> parts = split_id(at);
  if (hashes > parts.size())
    fail(ErrorCode::invalid_model, "the relative reference '" + std::string(reference) + "' at '" + std::string(at) +
                                       "' goes above the top level");
  std::string out;
  for (std::size_t i = 0; i + hashes < parts.size(); ++i) out += parts[i] + kSep;
  return out + std::string(reference.substr(hashes));
}

Config::Config(json root, std::string file, std::filesystem::path bundle_dir)
    : root_(std::move(root)), file_(std::move(file)), bundle_dir_(std::move(bundle_dir)) {
  // Macros are text copies: expand them all first, as MONAI's parser does, so that ids
  // inside a pasted copy exist like any other.
  expand_macros(root_, "", 0);
}

void Config::expand_macros(json& node, const std::string& id, int depth) {
  constexpr int kMaxDepth = 32;
  if (depth > kMaxDepth)
    fail(ErrorCode::invalid_model, file_ + ": " + id + ": macros nest too deep (a macro that includes itself?)");
  if (node.is_string()) {
    const std::string s = node.get<std::string>();
    if (s.empty() || s[0] != '%') return;
    node = macro(s, id);
    expand_macros(node, id, depth + 1);
  } else if (node.is_array()) {
    for (std::size_t i = 0; i < node.size(); ++i)
      expand_macros(node[i], id.empty() ? std::to_string(i) : id + kSep + std::to_string(i), depth);
  } else if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it)
      expand_macros(it.value(), id.empty() ? it.key() : id + kSep + it.key(), depth);
  }
}

bool Config::has(std::string_view id) const {
  return find(root_, id) != nullptr;
}

const json& Config::raw(std::string_view id) const {
  const json* node = find(root_, id);
  if (!node) fail(ErrorCode::invalid_model, file_ + ": '" + std::string(id) + "' is not defined");
  return *node;
}

json Config::resolve(std::string_view id_view) {
  const std::string id(id_view);
  if (auto it = cache_.find(id); it != cache_.end()) return it->second;
  if (!resolving_.insert(id).second) fail(ErrorCode::invalid_model, file_ + ": '" + id + "' refers to itself");
  json value;
  try {
    const json* node = find(root_, id);
    value = node ? resolve_value(*node, id) : resolve_through(id);
  } catch (...) {
    resolving_.erase(id);
    throw;
  }
  resolving_.erase(id);
  cache_[id] = value;
  return value;
}

json Config::resolve_through(const std::string& id) {
  // An id below an entry that is itself a reference, macro or expression ("copy#y" where
  // "copy" is "%nested"): resolve that entry, then look the rest up in its value.
  const std::vector<std::string> parts = split_id(id);
  for (std::size_t n = parts.size(); n-- > 1;) {
    std::string prefix;
    for (std::size_t i = 0; i < n; ++i) prefix += (i ? std::string(1, kSep) : std::string()) + parts[i];
    const json* node = find(root_, prefix);
    if (!node) continue;
    if (!node->is_string()) break;
    const json base = resolve(prefix);
    std::string rest;
    for (std::size_t i = n; i < parts.size(); ++i) rest += (i > n ? std::string(1, kSep) : std::string()) + parts[i];
    if (const json* sub = find(base, rest)) return *sub;
    break;
  }
  fail(ErrorCode::invalid_model, file_ + ": '" + id + "' is not defined");
}

json Config::macro(const std::string& text, const std::string& id) {
  std::string body = text.substr(1);
  std::string target_file;
  const std::size_t sep = body.find(kSep);
  if (sep != std::string::npos && sep > 0 && body.find_first_of("./") < sep) {
    target_file = body.substr(0, sep);
    body = body.substr(sep + 1);
  } else {
    body = absolute_id(body, id);
  }
  if (target_file.empty()) return raw(body);
  const std::filesystem::path path = bundle_dir_ / target_file;
  std::ifstream in(path);
  if (!in)
    fail(ErrorCode::invalid_model,
         file_ + ": " + id + ": the macro '" + text + "' names a missing file " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  json other;
  try {
    other = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(ErrorCode::invalid_model, path.string() + ": not valid JSON (" + e.what() + ")");
  }
  const json* node = find(other, body);
  if (!node)
    fail(ErrorCode::invalid_model, file_ + ": " + id + ": the macro '" + text + "' names no entry of " + path.string());
  return *node;
}

json Config::resolve_value(const json& v, const std::string& id) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (!s.empty() && s[0] == '@' && std::all_of(s.begin() + 1, s.end(), is_id_char))
      return resolve(absolute_id(s.substr(1), id));
    if (!s.empty() && s[0] == '%') return resolve_value(macro(s, id), id);
    if (!s.empty() && s[0] == '$') {
      // A lambda is a function for a transform (Lambdad's func), compiled by its translation.
      std::size_t p = 1;
      while (p < s.size() && std::isspace(static_cast<unsigned char>(s[p]))) ++p;
      if (s.compare(p, 6, "lambda") == 0 && (p + 6 == s.size() || !(std::isalnum(static_cast<unsigned char>(s[p + 6])) || s[p + 6] == '_')))
        return v;
      return evaluate(std::string_view(s).substr(1), id);
    }
    return v;
  }
  if (v.is_array()) {
    json out = json::array();
    for (std::size_t i = 0; i < v.size(); ++i) {
      json item = resolve_value(v[i], id + kSep + std::to_string(i));
      if (item.is_object() && item.contains("_disabled_") && item["_disabled_"].is_boolean() &&
          item["_disabled_"].get<bool>())
        continue;
      out.push_back(std::move(item));
    }
    return out;
  }
  if (v.is_object()) {
    json out = json::object();
    for (auto it = v.begin(); it != v.end(); ++it)
      out[it.key()] = it.key() == "_desc_" ? it.value() : resolve_value(it.value(), id + kSep + it.key());
    return out;
  }
  return v;
}

json Config::evaluate(std::string_view expression, std::string_view id) {
  const std::string at(id);
  try {
    Evaluator e(expression, [&](const std::string& ref) { return resolve(absolute_id(ref, at)); });
    return e.run();
  } catch (const EvalError& err) {
    fail(ErrorCode::invalid_model, file_ + ": " + at + ": cannot evaluate the expression \"$" +
                                       std::string(expression) + "\" (" + err.what +
                                       "; voxinfer evaluates only constants, paths, dtypes and arithmetic)");
  }
}

}  // namespace voxinfer::monai
