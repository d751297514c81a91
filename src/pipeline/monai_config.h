// MONAI bundle config files (configs/inference.json) read the way MONAI's ConfigParser reads
// them: "#"-separated ids, "@id" references (also relative: "@#sibling"), "%file#id" macros
// (a copy of the raw text) and "$" expressions in the small forms the model zoo uses (paths,
// constants, dtypes, devices, arithmetic, comparisons), evaluated by a tiny evaluator that
// never runs Python. Values are resolved lazily: only what the translation asks for is
// evaluated, so a config's training or runtime entries (datalists, evaluators) never are.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace voxinfer::monai {

class Config {
 public:
  // `root`: the parsed config; `file`: its name in messages; `bundle_dir`: the folder that
  // macros naming another file ("%configs/common.json#key") are looked up from.
  Config(nlohmann::json root, std::string file, std::filesystem::path bundle_dir);

  // Whether the id ("a#b#0") names an entry.
  bool has(std::string_view id) const;
  // The entry as written (macros expanded). Throws Error(invalid_model) naming the id when it is absent.
  const nlohmann::json& raw(std::string_view id) const;
  // The entry with every reference, macro and expression inside it resolved; entries of
  // lists whose "_disabled_" is true are dropped, as MONAI does.
  nlohmann::json resolve(std::string_view id);

  // Evaluates one expression (the text after "$") found at `id`. Throws Error(invalid_model)
  // naming `id` and the expression when it uses anything outside the supported forms.
  nlohmann::json evaluate(std::string_view expression, std::string_view id);

  const std::string& file() const { return file_; }

 private:
  nlohmann::json resolve_value(const nlohmann::json& v, const std::string& id);
  nlohmann::json resolve_through(const std::string& id);
  void expand_macros(nlohmann::json& node, const std::string& id, int depth);
  nlohmann::json macro(const std::string& text, const std::string& id);

  nlohmann::json root_;
  std::string file_;
  std::filesystem::path bundle_dir_;
  std::map<std::string, nlohmann::json> cache_;
  std::set<std::string> resolving_;
};

// "@#x" seen at id "a#b" is "@a#x" (each extra '#' goes one level further up), as MONAI's
// ConfigParser.resolve_relative_ids; ids that are not relative are returned unchanged.
std::string absolute_id(std::string_view reference, std::string_view at);

}  // namespace voxinfer::monai
