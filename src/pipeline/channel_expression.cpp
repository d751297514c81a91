// Element-wise channel expressions: a recursive-descent parser (Python's precedence) that emits
// a flat list of nodes, each with a fixed channel width and a slice of one scratch buffer, so
// evaluation is a loop over the nodes with no allocation.
#include "voxinfer/pipeline/channel_expression.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>

#include "voxinfer/core/error.h"

namespace voxinfer {

struct ChannelExpression::Node {
  enum class Op {
    input, constant, gather, neg, logical_not, bit_not, abs, sigmoid, exp, log, sqrt, floor, ceil, round, trunc,
    to_bool, isnan, add, sub, mul, div, floordiv, mod, pow, lt, le, gt, ge, eq, ne, bit_and, bit_or, bit_xor,
    minimum, maximum, where, cat, argmax, argmin, sum, max, min, mean, prod, any, all, softmax, nan_to_num, clamp
  };
  Op op = Op::input;
  std::vector<int> args;               // earlier nodes
  std::vector<std::int64_t> indices;   // gather
  std::vector<double> params;          // constant value; nan_to_num (nan, posinf, neginf); clamp (lo, hi)
  std::int64_t width = 1;
  std::size_t offset = 0;              // into scratch
  bool squeezed = false;               // no channel axis (x[0], a reduction without keepdim)
  bool boolean = false;
  bool scalar = false;                 // a Python number: broadcasts, has no channel axis
};

namespace {

using Node = ChannelExpression::Node;
using Op = Node::Op;

[[noreturn]] void refuse(const std::string& what) { fail(ErrorCode::unsupported, what); }

// A parsed term: a tensor node, a list [a, b], a dotted name (torch.where), or a method bound
// to a tensor (x.float).
struct Term {
  enum class Kind { node, list, name, method, none };
  Kind kind = Kind::none;
  int node = -1;
  std::vector<Term> items;
  std::string name;
  // a literal number, kept for indices and keyword arguments
  std::optional<double> number;
  bool is_bool_literal = false;
};

class Parser {
 public:
  Parser(std::string_view text, std::int64_t in) : s_(text), in_(in) {}

  std::vector<Node> run() {
    skip();
    if (word_at("lambda")) {
      pos_ += 6;
      skip();
      var_ = identifier();
      if (var_.empty()) refuse("a lambda of one argument is expected");
      skip();
      if (!eat(':')) refuse("a lambda of one argument is expected ('lambda x: ...')");
    } else {
      var_ = "x";
    }
    Term t = ternary();
    skip();
    if (pos_ != s_.size()) refuse("unexpected '" + std::string(s_.substr(pos_, 16)) + "'");
    const int result = as_node(t, "the result");
    // The result must be the last node.
    if (result != static_cast<int>(nodes_.size()) - 1) {
      Node copy;
      copy.op = Op::gather;
      copy.args = {result};
      copy.width = nodes_[static_cast<std::size_t>(result)].width;
      for (std::int64_t c = 0; c < copy.width; ++c) copy.indices.push_back(c);
      copy.squeezed = nodes_[static_cast<std::size_t>(result)].squeezed;
      copy.boolean = nodes_[static_cast<std::size_t>(result)].boolean;
      nodes_.push_back(copy);
    }
    return nodes_;
  }

 private:
  // ---- lexing
  void skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool eat(std::string_view op) {
    skip();
    if (s_.substr(pos_, op.size()) == op) {
      pos_ += op.size();
      return true;
    }
    return false;
  }
  bool word_at(std::string_view w) const {
    if (s_.substr(pos_, w.size()) != w) return false;
    const std::size_t e = pos_ + w.size();
    return e >= s_.size() || !(std::isalnum(static_cast<unsigned char>(s_[e])) || s_[e] == '_');
  }
  bool eat_word(std::string_view w) {
    skip();
    if (!word_at(w)) return false;
    pos_ += w.size();
    return true;
  }
  std::string identifier() {
    skip();
    const std::size_t b = pos_;
    if (pos_ < s_.size() && (std::isalpha(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_'))
      while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
    return std::string(s_.substr(b, pos_ - b));
  }
  void expect(char c, const char* what) {
    if (!eat(c)) refuse(std::string("expected '") + c + "' " + what);
  }

  // ---- nodes
  int add(Node n) {
    nodes_.push_back(std::move(n));
    return static_cast<int>(nodes_.size()) - 1;
  }
  const Node& at(int i) const { return nodes_[static_cast<std::size_t>(i)]; }
  int constant(double v, bool boolean = false) {
    Node n;
    n.op = Op::constant;
    n.params = {v};
    n.scalar = true;
    n.squeezed = true;
    n.boolean = boolean;
    return add(n);
  }
  int as_node(const Term& t, const std::string& what) {
    if (t.kind == Term::Kind::node) return t.node;
    if (t.kind == Term::Kind::list) refuse(what + ": a list is not a tensor here");
    if (t.kind == Term::Kind::name) refuse(what + ": '" + t.name + "' is not supported");
    if (t.kind == Term::Kind::method) refuse(what + ": the method '" + t.name + "' must be called");
    refuse(what + ": missing value");
  }
  Term node_term(int n) {
    Term t;
    t.kind = Term::Kind::node;
    t.node = n;
    return t;
  }
  // Broadcast width of two operands.
  std::int64_t broadcast(int a, int b, const char* op) const {
    const std::int64_t wa = at(a).width, wb = at(b).width;
    if (wa == wb || wa == 1 || wb == 1) return std::max(wa, wb);
    refuse(std::string("'") + op + "' of " + std::to_string(wa) + " and " + std::to_string(wb) +
           " channels does not broadcast");
  }
  int binary(Op op, int a, int b, const char* name) {
    Node n;
    n.op = op;
    n.args = {a, b};
    n.width = broadcast(a, b, name);
    n.squeezed = at(a).squeezed && at(b).squeezed;
    n.scalar = at(a).scalar && at(b).scalar;
    const bool cmp = op == Op::lt || op == Op::le || op == Op::gt || op == Op::ge || op == Op::eq || op == Op::ne;
    const bool logic = op == Op::bit_and || op == Op::bit_or || op == Op::bit_xor;
    n.boolean = cmp || (logic && at(a).boolean && at(b).boolean);
    return add(n);
  }
  int unary(Op op, int a) {
    Node n;
    n.op = op;
    n.args = {a};
    n.width = at(a).width;
    n.squeezed = at(a).squeezed;
    n.scalar = at(a).scalar;
    n.boolean = op == Op::logical_not || op == Op::to_bool || op == Op::isnan || (op == Op::gather && at(a).boolean);
    return add(n);
  }

  // ---- grammar (lowest precedence first)
  Term ternary() {
    Term a = comparison();
    if (eat_word("if")) {
      const Term c = comparison();
      if (!eat_word("else")) refuse("expected 'else' in a conditional expression");
      const Term b = ternary();
      // `a if c else b` on a tensor condition is an error in Python unless it has one element:
      // only a plain number or True/False condition is accepted.
      if (c.kind != Term::Kind::node || !at(c.node).scalar)
        refuse("a conditional expression needs a constant condition (use torch.where for voxels)");
      return at(c.node).params[0] != 0 ? a : b;
    }
    if (word_at("and") || word_at("or") || word_at("not"))
      refuse("'and', 'or' and 'not' are not element-wise on tensors (use &, | and ~)");
    return a;
  }
  Term comparison() {
    Term a = bit_or();
    struct C {
      const char* text;
      Op op;
    };
    static const C ops[] = {{"<=", Op::le}, {">=", Op::ge}, {"==", Op::eq}, {"!=", Op::ne}, {"<", Op::lt}, {">", Op::gt}};
    for (const auto& c : ops)
      if (eat(std::string_view(c.text))) {
        const Term b = bit_or();
        const Term r = node_term(binary(c.op, as_node(a, c.text), as_node(b, c.text), c.text));
        skip();
        for (const auto& c2 : ops)
          if (s_.substr(pos_, std::string_view(c2.text).size()) == c2.text)
            refuse("chained comparisons are not element-wise on tensors");
        return r;
      }
    return a;
  }
  Term bit_or() {
    Term a = bit_xor();
    while (true) {
      skip();
      if (s_.substr(pos_, 1) == "|" ) {
        ++pos_;
        const Term b = bit_xor();
        a = node_term(binary(Op::bit_or, as_node(a, "|"), as_node(b, "|"), "|"));
      } else {
        return a;
      }
    }
  }
  Term bit_xor() {
    Term a = bit_and();
    while (eat('^')) {
      const Term b = bit_and();
      a = node_term(binary(Op::bit_xor, as_node(a, "^"), as_node(b, "^"), "^"));
    }
    return a;
  }
  Term bit_and() {
    Term a = arith();
    while (eat('&')) {
      const Term b = arith();
      a = node_term(binary(Op::bit_and, as_node(a, "&"), as_node(b, "&"), "&"));
    }
    return a;
  }
  Term arith() {
    Term a = term();
    while (true) {
      skip();
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) {
        const char c = s_[pos_++];
        const Term b = term();
        a = node_term(c == '+' ? binary(Op::add, as_node(a, "+"), as_node(b, "+"), "+")
                               : binary(Op::sub, as_node(a, "-"), as_node(b, "-"), "-"));
      } else {
        return a;
      }
    }
  }
  Term term() {
    Term a = unary_term();
    while (true) {
      skip();
      if (eat(std::string_view("//"))) {
        const Term b = unary_term();
        a = node_term(binary(Op::floordiv, as_node(a, "//"), as_node(b, "//"), "//"));
      } else if (pos_ < s_.size() && s_[pos_] == '*' && s_.substr(pos_, 2) != "**") {
        ++pos_;
        const Term b = unary_term();
        a = node_term(binary(Op::mul, as_node(a, "*"), as_node(b, "*"), "*"));
      } else if (eat('/')) {
        const Term b = unary_term();
        a = node_term(binary(Op::div, as_node(a, "/"), as_node(b, "/"), "/"));
      } else if (eat('%')) {
        const Term b = unary_term();
        a = node_term(binary(Op::mod, as_node(a, "%"), as_node(b, "%"), "%"));
      } else {
        return a;
      }
    }
  }
  Term unary_term() {
    if (eat('-')) {
      const Term a = unary_term();
      const int n = as_node(a, "-");
      if (at(n).op == Op::constant) return node_term(constant(-at(n).params[0]));
      return node_term(unary(Op::neg, n));
    }
    if (eat('+')) return unary_term();
    if (eat('~')) {
      const int n = as_node(unary_term(), "~");
      return node_term(unary(at(n).boolean ? Op::logical_not : Op::bit_not, n));
    }
    return power();
  }
  Term power() {
    Term a = postfix();
    if (eat(std::string_view("**"))) {
      const Term b = unary_term();
      return node_term(binary(Op::pow, as_node(a, "**"), as_node(b, "**"), "**"));
    }
    return a;
  }

  struct Args {
    std::vector<Term> positional;
    std::vector<std::pair<std::string, Term>> keyword;
  };
  Args call_args() {
    Args out;
    if (eat(')')) return out;
    while (true) {
      skip();
      const std::size_t save = pos_;
      const std::string name = identifier();
      skip();
      if (!name.empty() && pos_ < s_.size() && s_[pos_] == '=' && s_.substr(pos_, 2) != "==") {
        ++pos_;
        out.keyword.emplace_back(name, ternary());
      } else {
        pos_ = save;
        out.positional.push_back(ternary());
      }
      if (eat(')')) return out;
      expect(',', "between arguments");
    }
  }

  Term postfix() {
    Term t = atom();
    while (true) {
      skip();
      if (eat('[')) {
        t = node_term(subscript(as_node(t, "indexing")));
      } else if (eat('(')) {
        Args a = call_args();
        t = call(t, a);
      } else if (pos_ < s_.size() && s_[pos_] == '.' &&
                 !(pos_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1])))) {
        ++pos_;
        const std::string attr = identifier();
        if (attr.empty()) refuse("a name is expected after '.'");
        if (t.kind == Term::Kind::name) {
          t.name += "." + attr;
        } else if (t.kind == Term::Kind::node) {
          Term m;
          m.kind = Term::Kind::method;
          m.node = t.node;
          m.name = attr;
          t = m;
        } else {
          refuse("'." + attr + "' is not supported here");
        }
      } else {
        return t;
      }
    }
  }

  std::optional<std::int64_t> literal_int(const Term& t) const {
    if (t.kind != Term::Kind::node || at(t.node).op != Op::constant) return std::nullopt;
    const double v = at(t.node).params[0];
    if (v != std::floor(v)) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }

  std::int64_t channel_index(std::int64_t i, std::int64_t width) const {
    const std::int64_t j = i < 0 ? i + width : i;
    if (j < 0 || j >= width)
      refuse("the channel index " + std::to_string(i) + " is out of range for " + std::to_string(width) + " channel(s)");
    return j;
  }

  // x[i], x[[i, j]], x[a:b], x[a:b:c] over the channel axis.
  int subscript(int base) {
    const Node& b = at(base);
    if (b.squeezed || b.scalar) refuse("indexing a value without a channel axis is not supported");
    const std::int64_t w = b.width;
    Node n;
    n.op = Op::gather;
    n.args = {base};
    n.boolean = b.boolean;
    skip();
    if (pos_ < s_.size() && s_[pos_] == '[') {  // a list of channels
      ++pos_;
      while (true) {
        const auto v = literal_int(ternary());
        if (!v) refuse("a channel list must hold integer constants");
        n.indices.push_back(channel_index(*v, w));
        if (eat(']')) break;
        expect(',', "between channel indices");
      }
      expect(']', "after a channel list");
      n.width = static_cast<std::int64_t>(n.indices.size());
      return add(n);
    }
    // an integer or a slice
    std::optional<std::int64_t> lo, hi, step;
    bool slice = false;
    auto bound = [&]() -> std::optional<std::int64_t> {
      skip();
      if (pos_ < s_.size() && (s_[pos_] == ':' || s_[pos_] == ']')) return std::nullopt;
      const auto v = literal_int(ternary());
      if (!v) refuse("channel indices and slice bounds must be integer constants");
      return v;
    };
    lo = bound();
    if (eat(':')) {
      slice = true;
      hi = bound();
      if (eat(':')) step = bound();
    }
    skip();
    if (pos_ < s_.size() && s_[pos_] == ',') refuse("indexing beyond the channel axis is not supported");
    expect(']', "after an index");
    if (!slice) {
      if (!lo) refuse("an empty index");
      n.indices = {channel_index(*lo, w)};
      n.width = 1;
      n.squeezed = true;
      return add(n);
    }
    const std::int64_t st = step.value_or(1);
    if (st <= 0) refuse("only positive slice steps are supported");
    auto clampi = [&](std::int64_t v) { return std::clamp(v < 0 ? v + w : v, std::int64_t{0}, w); };
    const std::int64_t a = lo ? clampi(*lo) : 0, e = hi ? clampi(*hi) : w;
    for (std::int64_t i = a; i < e; i += st) n.indices.push_back(i);
    if (n.indices.empty()) refuse("the slice selects no channel");
    n.width = static_cast<std::int64_t>(n.indices.size());
    return add(n);
  }

  Term atom() {
    skip();
    if (pos_ >= s_.size()) refuse("the expression ends early");
    const char c = s_[pos_];
    if (c == '(') {
      ++pos_;
      Term t = ternary();
      if (eat(',')) refuse("tuples are not supported");
      expect(')', "to close '('");
      return t;
    }
    if (c == '[') {
      ++pos_;
      Term list;
      list.kind = Term::Kind::list;
      if (eat(']')) return list;
      while (true) {
        list.items.push_back(ternary());
        if (eat(']')) break;
        expect(',', "between list items");
      }
      return list;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      const char* begin = s_.data() + pos_;
      char* end = nullptr;
      const double v = std::strtod(begin, &end);
      if (end == begin) refuse("a number is expected");
      pos_ += static_cast<std::size_t>(end - begin);
      return node_term(constant(v));
    }
    const std::string name = identifier();
    if (name.empty()) refuse("unexpected '" + std::string(s_.substr(pos_, 16)) + "'");
    if (name == var_) return node_term(input());
    if (name == "True" || name == "False") return node_term(constant(name == "True" ? 1 : 0, true));
    if (name == "torch" || name == "np" || name == "numpy" || name == "F") {
      Term t;
      t.kind = Term::Kind::name;
      t.name = name;
      return t;
    }
    refuse("the name '" + name + "' is not supported");
  }

  int input() {
    if (input_ < 0) {
      Node n;
      n.op = Op::input;
      n.width = in_;
      input_ = add(n);
    }
    return input_;
  }

  // dim= must be the channel axis (0, or -4 for [C, X, Y, Z]).
  void channel_dim(const Term* dim, const std::string& fn, bool required) {
    if (!dim) {
      if (required) refuse(fn + " needs dim=0 (the channel axis) to act on each voxel");
      return;
    }
    const auto d = literal_int(*dim);
    if (!d || !(*d == 0 || *d == -4)) refuse(fn + ": only dim=0 (the channel axis) is supported");
  }

  Term call(const Term& f, Args& a) {
    auto kw = [&](const std::string& k) -> const Term* {
      for (const auto& [name, t] : a.keyword)
        if (name == k) return &t;
      return nullptr;
    };
    auto check_keywords = [&](std::initializer_list<const char*> allowed, const std::string& fn) {
      for (const auto& entry : a.keyword) {
        const std::string& name = entry.first;  // a named variable: clang 14 cannot capture a structured binding
        if (std::find_if(allowed.begin(), allowed.end(), [&](const char* x) { return name == x; }) == allowed.end())
          refuse(fn + ": the argument '" + name + "' is not supported");
      }
    };
    auto arg = [&](std::size_t i, const char* k, const std::string& fn) -> const Term* {
      if (i < a.positional.size()) return &a.positional[i];
      if (k) return kw(k);
      (void)fn;
      return nullptr;
    };
    auto number = [&](const Term* t, const std::string& what) -> double {
      if (!t || t->kind != Term::Kind::node || at(t->node).op != Op::constant) refuse(what + " must be a constant");
      return at(t->node).params[0];
    };
    std::string fn;
    std::optional<int> self;
    if (f.kind == Term::Kind::method) {
      fn = f.name;
      self = f.node;
    } else if (f.kind == Term::Kind::name) {
      fn = f.name;
      for (const char* prefix : {"torch.nn.functional.", "torch.", "numpy.", "np.", "F."})
        if (fn.rfind(prefix, 0) == 0) {
          fn = fn.substr(std::string(prefix).size());
          break;
        }
    } else {
      refuse("calling this value is not supported");
    }
    // The tensor an operation acts on: the object of a method, else the first argument.
    auto subject = [&]() -> int {
      if (self) return *self;
      const Term* t = arg(0, "input", fn);
      if (!t) refuse(fn + ": the tensor argument is missing");
      return as_node(*t, fn);
    };
    auto param = [&](std::size_t i, const char* k) -> const Term* {  // i-th argument after the tensor
      return arg(self ? i : i + 1, k, fn);
    };
    static const std::pair<const char*, Op> elementwise[] = {
        {"abs", Op::abs},   {"sigmoid", Op::sigmoid}, {"exp", Op::exp},     {"log", Op::log},
        {"sqrt", Op::sqrt}, {"floor", Op::floor},     {"ceil", Op::ceil},   {"round", Op::round},
        {"trunc", Op::trunc}, {"isnan", Op::isnan},   {"logical_not", Op::logical_not}};
    for (const auto& [name, op] : elementwise)
      if (fn == name) {
        check_keywords({}, fn);
        return node_term(unary(op, subject()));
      }
    if (fn == "float" || fn == "double" || fn == "half" || fn == "int" || fn == "long" || fn == "short" ||
        fn == "byte" || fn == "bool" || fn == "clone" || fn == "detach" || fn == "contiguous") {
      if (!self) refuse("'" + fn + "' is supported only as a tensor method");
      check_keywords({}, fn);
      if (!a.positional.empty()) refuse(fn + "() takes no arguments here");
      if (fn == "bool") return node_term(unary(Op::to_bool, *self));
      if (fn == "int" || fn == "long" || fn == "short" || fn == "byte") {
        const int n = unary(Op::trunc, *self);
        return node_term(n);
      }
      return node_term(*self);
    }
    if (fn == "where") {
      if (self) refuse("where is supported as torch.where(condition, a, b)");
      check_keywords({}, fn);
      if (a.positional.size() != 3) refuse("torch.where needs three arguments (condition, a, b)");
      const int c = as_node(a.positional[0], "where"), x = as_node(a.positional[1], "where"),
                y = as_node(a.positional[2], "where");
      Node n;
      n.op = Op::where;
      n.args = {c, x, y};
      const std::int64_t wxy = broadcast(x, y, "where");
      const std::int64_t wc = at(c).width;
      if (!(wc == wxy || wc == 1 || wxy == 1)) refuse("torch.where: the condition's channels do not broadcast");
      n.width = std::max(wc, wxy);
      n.squeezed = at(c).squeezed && at(x).squeezed && at(y).squeezed;
      n.scalar = at(c).scalar && at(x).scalar && at(y).scalar;
      n.boolean = at(x).boolean && at(y).boolean;
      return node_term(add(n));
    }
    static const std::pair<const char*, Op> binaries[] = {{"logical_and", Op::bit_and}, {"logical_or", Op::bit_or},
                                                          {"logical_xor", Op::bit_xor}, {"maximum", Op::maximum},
                                                          {"minimum", Op::minimum},     {"eq", Op::eq},
                                                          {"gt", Op::gt},               {"ge", Op::ge},
                                                          {"lt", Op::lt},               {"le", Op::le},
                                                          {"ne", Op::ne}};
    for (const auto& [name, op] : binaries)
      if (fn == name) {
        check_keywords({}, fn);
        const Term* other = param(0, nullptr);
        if (!other) refuse(fn + " needs two arguments");
        int x = subject(), y = as_node(*other, fn);
        if (op == Op::bit_and || op == Op::bit_or || op == Op::bit_xor) {  // logical_*: operands read as booleans
          x = unary(Op::to_bool, x);
          y = unary(Op::to_bool, y);
        }
        const int n = binary(op, x, y, name);
        return node_term(n);
      }
    if (fn == "cat" || fn == "concatenate" || fn == "concat") {
      if (self) refuse(fn + " is supported as torch.cat([a, b, ...], dim=0)");
      check_keywords({"dim", "axis"}, fn);
      const Term* list = arg(0, "tensors", fn);
      if (!list || list->kind != Term::Kind::list || list->items.empty()) refuse(fn + " needs a list of tensors");
      const Term* d = param(0, "dim");
      if (!d) d = kw("axis");
      if (d) channel_dim(d, fn, false);
      Node n;
      n.op = Op::cat;
      n.width = 0;
      for (const auto& t : list->items) {
        const int x = as_node(t, fn);
        if (at(x).squeezed || at(x).scalar)
          refuse(fn + ": every tensor needs a channel axis (x[[i]] or x[i:j], not x[i])");
        n.args.push_back(x);
        n.width += at(x).width;
      }
      return node_term(add(n));
    }
    static const std::pair<const char*, Op> reductions[] = {{"argmax", Op::argmax}, {"argmin", Op::argmin},
                                                            {"sum", Op::sum},       {"amax", Op::max},
                                                            {"amin", Op::min},      {"max", Op::max},
                                                            {"min", Op::min},       {"mean", Op::mean},
                                                            {"prod", Op::prod},     {"any", Op::any},
                                                            {"all", Op::all}};
    for (const auto& [name, op] : reductions)
      if (fn == name) {
        check_keywords({"dim", "keepdim", "axis", "keepdims"}, fn);
        const int x = subject();
        const Term* d = param(0, "dim");
        if (!d) d = kw("axis");
        if ((op == Op::max || op == Op::min) && d && std::string(name).find('a') != 0)
          refuse(std::string("torch.") + name + " with dim returns (values, indices); use torch.amax/amin");
        channel_dim(d, fn, true);
        if (at(x).squeezed || at(x).scalar) refuse(fn + ": the value has no channel axis");
        const Term* keep = param(1, "keepdim");
        if (!keep) keep = kw("keepdims");
        Node n;
        n.op = op;
        n.args = {x};
        n.width = 1;
        n.squeezed = !(keep && number(keep, "keepdim") != 0);
        n.boolean = op == Op::any || op == Op::all;
        return node_term(add(n));
      }
    if (fn == "softmax") {
      check_keywords({"dim"}, fn);
      const int x = subject();
      channel_dim(param(0, "dim"), fn, true);
      if (at(x).squeezed || at(x).scalar) refuse(fn + ": the value has no channel axis");
      Node n;
      n.op = Op::softmax;
      n.args = {x};
      n.width = at(x).width;
      return node_term(add(n));
    }
    if (fn == "nan_to_num") {
      check_keywords({"nan", "posinf", "neginf"}, fn);
      const int x = subject();
      Node n;
      n.op = Op::nan_to_num;
      n.args = {x};
      n.width = at(x).width;
      n.squeezed = at(x).squeezed;
      const double big = std::numeric_limits<float>::max();
      const Term* pn = param(0, "nan");
      const Term* pp = param(1, "posinf");
      const Term* pg = param(2, "neginf");
      n.params = {pn ? number(pn, "nan") : 0.0, pp ? number(pp, "posinf") : big, pg ? number(pg, "neginf") : -big};
      return node_term(add(n));
    }
    if (fn == "clamp" || fn == "clip") {
      check_keywords({"min", "max", "a_min", "a_max"}, fn);
      const int x = subject();
      const Term* lo = param(0, "min");
      if (!lo) lo = kw("a_min");
      const Term* hi = param(1, "max");
      if (!hi) hi = kw("a_max");
      auto is_none = [&](const Term* t) { return !t; };
      Node n;
      n.op = Op::clamp;
      n.args = {x};
      n.width = at(x).width;
      n.squeezed = at(x).squeezed;
      n.params = {is_none(lo) ? -HUGE_VAL : number(lo, "min"), is_none(hi) ? HUGE_VAL : number(hi, "max")};
      return node_term(add(n));
    }
    if (fn == "zeros_like" || fn == "ones_like") {
      check_keywords({"dtype"}, fn);
      const int x = subject();
      const int zero = constant(fn == "ones_like" ? 1 : 0);
      // 0 * x + c keeps x's channels.
      const int shaped = binary(Op::mul, x, constant(0), "*");
      return node_term(binary(Op::add, shaped, zero, "+"));
    }
    refuse("the function '" + f.name + "' is not supported");
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::int64_t in_;
  std::string var_;
  std::vector<Node> nodes_;
  int input_ = -1;
};

inline float as_bool(float v) { return v != 0.f ? 1.f : 0.f; }

}  // namespace

ChannelExpression ChannelExpression::compile(std::string_view text, std::int64_t in_channels) {
  VOXINFER_CHECK(in_channels >= 1, internal, "channel expression: no input channels");
  Parser p(text, in_channels);
  std::vector<Node> nodes = p.run();
  ChannelExpression e;
  e.in_ = in_channels;
  std::size_t off = 0;
  for (auto& n : nodes) {
    n.offset = off;
    off += static_cast<std::size_t>(n.width);
  }
  e.scratch_ = off;
  e.nodes_ = std::make_shared<const std::vector<Node>>(std::move(nodes));
  return e;
}

std::int64_t ChannelExpression::out_channels() const { return nodes_->back().width; }

void ChannelExpression::evaluate(const float* in, float* scratch, float* out) const {
  const std::vector<Node>& nodes = *nodes_;
  for (const Node& n : nodes) {
    float* dst = scratch + n.offset;
    const std::int64_t w = n.width;
    auto src = [&](std::size_t i) { return scratch + nodes[static_cast<std::size_t>(n.args[i])].offset; };
    auto width_of = [&](std::size_t i) { return nodes[static_cast<std::size_t>(n.args[i])].width; };
    // Broadcast read of argument i at channel c.
    auto rd = [&](std::size_t i, std::int64_t c) { return width_of(i) == 1 ? src(i)[0] : src(i)[c]; };
    switch (n.op) {
      case Op::input:
        std::copy_n(in, w, dst);
        break;
      case Op::constant:
        dst[0] = static_cast<float>(n.params[0]);
        break;
      case Op::gather:
        for (std::int64_t c = 0; c < w; ++c) dst[c] = src(0)[n.indices[static_cast<std::size_t>(c)]];
        break;
      case Op::neg: for (std::int64_t c = 0; c < w; ++c) dst[c] = -src(0)[c]; break;
      case Op::logical_not: for (std::int64_t c = 0; c < w; ++c) dst[c] = src(0)[c] == 0.f ? 1.f : 0.f; break;
      case Op::bit_not:
        for (std::int64_t c = 0; c < w; ++c) dst[c] = static_cast<float>(~static_cast<std::int64_t>(src(0)[c]));
        break;
      case Op::abs: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::abs(src(0)[c]); break;
      case Op::sigmoid: for (std::int64_t c = 0; c < w; ++c) dst[c] = 1.f / (1.f + std::exp(-src(0)[c])); break;
      case Op::exp: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::exp(src(0)[c]); break;
      case Op::log: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::log(src(0)[c]); break;
      case Op::sqrt: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::sqrt(src(0)[c]); break;
      case Op::floor: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::floor(src(0)[c]); break;
      case Op::ceil: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::ceil(src(0)[c]); break;
      case Op::round: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::nearbyint(src(0)[c]); break;  // half to even
      case Op::trunc: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::trunc(src(0)[c]); break;
      case Op::to_bool: for (std::int64_t c = 0; c < w; ++c) dst[c] = as_bool(src(0)[c]); break;
      case Op::isnan: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::isnan(src(0)[c]) ? 1.f : 0.f; break;
      case Op::add: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) + rd(1, c); break;
      case Op::sub: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) - rd(1, c); break;
      case Op::mul: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) * rd(1, c); break;
      case Op::div: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) / rd(1, c); break;
      case Op::floordiv: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::floor(rd(0, c) / rd(1, c)); break;
      case Op::mod:
        for (std::int64_t c = 0; c < w; ++c) {
          const float a = rd(0, c), b = rd(1, c);
          dst[c] = a - std::floor(a / b) * b;  // Python's sign: that of the divisor
        }
        break;
      case Op::pow: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::pow(rd(0, c), rd(1, c)); break;
      case Op::lt: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) < rd(1, c) ? 1.f : 0.f; break;
      case Op::le: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) <= rd(1, c) ? 1.f : 0.f; break;
      case Op::gt: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) > rd(1, c) ? 1.f : 0.f; break;
      case Op::ge: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) >= rd(1, c) ? 1.f : 0.f; break;
      case Op::eq: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) == rd(1, c) ? 1.f : 0.f; break;
      case Op::ne: for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) != rd(1, c) ? 1.f : 0.f; break;
      case Op::bit_and:
        for (std::int64_t c = 0; c < w; ++c)
          dst[c] = static_cast<float>(static_cast<std::int64_t>(rd(0, c)) & static_cast<std::int64_t>(rd(1, c)));
        break;
      case Op::bit_or:
        for (std::int64_t c = 0; c < w; ++c)
          dst[c] = static_cast<float>(static_cast<std::int64_t>(rd(0, c)) | static_cast<std::int64_t>(rd(1, c)));
        break;
      case Op::bit_xor:
        for (std::int64_t c = 0; c < w; ++c)
          dst[c] = static_cast<float>(static_cast<std::int64_t>(rd(0, c)) ^ static_cast<std::int64_t>(rd(1, c)));
        break;
      case Op::minimum: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::min(rd(0, c), rd(1, c)); break;
      case Op::maximum: for (std::int64_t c = 0; c < w; ++c) dst[c] = std::max(rd(0, c), rd(1, c)); break;
      case Op::where:
        for (std::int64_t c = 0; c < w; ++c) dst[c] = rd(0, c) != 0.f ? rd(1, c) : rd(2, c);
        break;
      case Op::cat: {
        float* p = dst;
        for (std::size_t i = 0; i < n.args.size(); ++i) p = std::copy_n(src(i), width_of(i), p);
        break;
      }
      case Op::argmax:
      case Op::argmin: {
        const float* x = src(0);
        std::int64_t best = 0;
        for (std::int64_t c = 1; c < width_of(0); ++c)
          // The first extreme wins, and a NaN counts as the extreme, as in torch.
          if (!std::isnan(x[best]) && (std::isnan(x[c]) || (n.op == Op::argmax ? x[c] > x[best] : x[c] < x[best]))) best = c;
        dst[0] = static_cast<float>(best);
        break;
      }
      case Op::sum:
      case Op::mean:
      case Op::prod:
      case Op::max:
      case Op::min:
      case Op::any:
      case Op::all: {
        const float* x = src(0);
        const std::int64_t k = width_of(0);
        float r = x[0];
        for (std::int64_t c = 1; c < k; ++c) {
          switch (n.op) {
            case Op::sum: case Op::mean: r += x[c]; break;
            case Op::prod: r *= x[c]; break;
            case Op::max: r = std::max(r, x[c]); break;
            case Op::min: r = std::min(r, x[c]); break;
            case Op::any: r = (r != 0.f || x[c] != 0.f) ? 1.f : 0.f; break;
            case Op::all: r = (r != 0.f && x[c] != 0.f) ? 1.f : 0.f; break;
            default: break;
          }
        }
        if (n.op == Op::mean) r /= static_cast<float>(k);
        if (n.op == Op::any || n.op == Op::all) r = as_bool(r);
        dst[0] = r;
        break;
      }
      case Op::softmax: {
        const float* x = src(0);
        float m = x[0];
        for (std::int64_t c = 1; c < w; ++c) m = std::max(m, x[c]);
        float s = 0;
        for (std::int64_t c = 0; c < w; ++c) s += (dst[c] = std::exp(x[c] - m));
        for (std::int64_t c = 0; c < w; ++c) dst[c] /= s;
        break;
      }
      case Op::nan_to_num:
        for (std::int64_t c = 0; c < w; ++c) {
          const float v = src(0)[c];
          dst[c] = std::isnan(v) ? static_cast<float>(n.params[0])
                   : std::isinf(v) ? static_cast<float>(v > 0 ? n.params[1] : n.params[2])
                                   : v;
        }
        break;
      case Op::clamp:
        for (std::int64_t c = 0; c < w; ++c) {
          float v = src(0)[c];
          if (v < n.params[0]) v = static_cast<float>(n.params[0]);
          if (v > n.params[1]) v = static_cast<float>(n.params[1]);
          dst[c] = v;
        }
        break;
    }
  }
  const Node& last = nodes.back();
  std::copy_n(scratch + last.offset, last.width, out);
}

VoxelRule::VoxelRule(const PostprocessSpec& post, std::int64_t channels, std::vector<int> label_values)
    : activation_(post.activation),
      discretize_(post.discretize),
      threshold_(static_cast<float>(post.threshold)),
      k_(channels),
      values_(std::move(label_values)) {
  if (discretize_ == Discretize::by_activation)
    discretize_ = activation_ == Activation::sigmoid ? Discretize::threshold : Discretize::argmax;
  std::int64_t w = k_;
  auto chain = [&](const std::vector<std::string>& texts, std::vector<ChannelExpression>& out) {
    for (const auto& t : texts) {
      out.push_back(ChannelExpression::compile(t, w));
      w = out.back().out_channels();
      widest_ = std::max(widest_, static_cast<std::size_t>(w));
      expression_scratch_ = std::max(expression_scratch_, out.back().scratch_size());
    }
  };
  widest_ = static_cast<std::size_t>(k_);
  chain(post.lambdas_before, before_);
  if (discretize_ == Discretize::argmax) w = 1;
  chain(post.lambdas, after_);
  out_ = w;
  // Layout: two ping-pong buffers of the widest value, the expressions' scratch, the result.
  scratch_ = 2 * widest_ + expression_scratch_ + static_cast<std::size_t>(out_);
}

void VoxelRule::channels(const float* v, bool activated, float* scratch, float* out) const {
  float* a = scratch;
  float* b = scratch + widest_;
  float* e = scratch + 2 * widest_;
  std::int64_t w = k_;
  std::copy_n(v, k_, a);
  if (!activated) {
    if (activation_ == Activation::sigmoid) {
      for (std::int64_t c = 0; c < k_; ++c) a[c] = 1.f / (1.f + std::exp(-a[c]));
    } else if (activation_ == Activation::softmax) {
      float m = a[0];
      for (std::int64_t c = 1; c < k_; ++c) m = std::max(m, a[c]);
      float s = 0;
      for (std::int64_t c = 0; c < k_; ++c) s += (a[c] = std::exp(a[c] - m));
      for (std::int64_t c = 0; c < k_; ++c) a[c] /= s;
    }
  }
  auto run = [&](const std::vector<ChannelExpression>& list) {
    for (const auto& x : list) {
      x.evaluate(a, e, b);
      w = x.out_channels();
      std::swap(a, b);
    }
  };
  run(before_);
  if (discretize_ == Discretize::argmax) {
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < w; ++c)
      if (a[c] > a[best]) best = c;
    a[0] = static_cast<float>(best);
    w = 1;
  } else if (discretize_ == Discretize::threshold) {
    for (std::int64_t c = 0; c < w; ++c) a[c] = a[c] >= threshold_ ? 1.f : 0.f;
  }
  run(after_);
  std::copy_n(a, w, out);
}

float VoxelRule::label(const float* v, bool activated, float* scratch) const {
  float* out = scratch + 2 * widest_ + expression_scratch_;
  channels(v, activated, scratch, out);
  if (out_ == 1) return out[0];
  float label = 0;
  for (std::int64_t c = 0; c < out_; ++c)
    if (out[c] != 0.f)
      label = static_cast<float>(static_cast<std::size_t>(c) < values_.size() ? values_[static_cast<std::size_t>(c)]
                                                                              : static_cast<int>(c + 1));
  return label;
}

}  // namespace voxinfer
