#include "voxinfer/app/batch.h"

#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <sstream>

#include "voxinfer/core/error.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/output_file.h"
#include "voxinfer/io/png.h"
#include "voxinfer/pipeline/preview.h"
#include "voxinfer/version.h"

namespace voxinfer::app {
namespace {

namespace fs = std::filesystem;

std::string strip_image_extension(std::string name) {
  for (const char* ext : {".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"}) {
    const std::size_t n = std::strlen(ext);
    if (name.size() > n && name.compare(name.size() - n, n, ext) == 0) return name.substr(0, name.size() - n);
  }
  return name;
}

// nnU-Net's channel file names: STEM_DDDD.ext with ext .nii.gz, .nii, .nrrd or .mha.
struct ChannelName {
  std::string stem, index, ext;
};
std::optional<ChannelName> channel_name(const std::string& name) {
  for (const char* ext : {".nii.gz", ".nii", ".nrrd", ".mha"}) {
    const std::size_t n = std::strlen(ext);
    if (name.size() < n + 5 || name.compare(name.size() - n, n, ext) != 0) continue;
    const std::string base = name.substr(0, name.size() - n);
    const std::string digits = base.substr(base.size() - 4);
    if (base[base.size() - 5] != '_' ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    return ChannelName{base.substr(0, base.size() - 5), digits, ext};
  }
  return std::nullopt;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;
}

bool safe_id(const std::string& id) {
  if (id.empty() || id.size() > 200 || id == "." || id == "..") return false;
  return std::none_of(id.begin(), id.end(),
                      [](char c) { return c == '/' || c == '\\' || static_cast<unsigned char>(c) < 32; });
}

// The files of one study: the input, or nnU-Net's CASE_0000 with CASE_0001... beside it.
std::vector<std::string> channel_files(const std::string& input, std::int64_t channels) {
  if (channels <= 1) return {input};
  const fs::path p(input);
  const auto m = channel_name(p.filename().string());
  if (!m || m->index != "0000")
    fail(ErrorCode::invalid_input, input + ": the model takes " + std::to_string(channels) +
                                       " channels; name the files CASE_0000" +
                                       ", CASE_0001 ... and list the _0000 file");
  std::vector<std::string> files{input};
  for (std::int64_t c = 1; c < channels; ++c) {
    char idx[32];
    std::snprintf(idx, sizeof idx, "_%04lld", static_cast<long long>(c));
    const fs::path f = p.parent_path() / (m->stem + idx + m->ext);
    std::error_code ec;
    if (!fs::exists(f, ec)) fail(ErrorCode::invalid_input, f.string() + ": missing channel file");
    files.push_back(f.string());
  }
  return files;
}

std::string manifest_name(const Shard& s) {
  return "manifest-" + std::to_string(s.index) + "-of-" + std::to_string(s.count) + ".jsonl";
}

// The last manifest line per case over every shard's manifest of `dir` (sorted by file name).
// A "skipped" line (a resumed run passing a finished case) does not hide the line of the run
// that made the output; a line cut by a kill is ignored.
std::map<std::string, nlohmann::json> last_manifest_lines(const fs::path& dir) {
  std::map<std::string, nlohmann::json> last;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("manifest-", 0) == 0 && e.path().extension() == ".jsonl") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("case") || !j["case"].is_string()) continue;
      const std::string id = j["case"].get<std::string>();
      if (j.value("status", "") == "skipped" && last.count(id)) continue;
      last[id] = std::move(j);
    }
  }
  return last;
}

// Case ids whose last manifest line says done.
std::set<std::string> done_cases(const fs::path& dir) {
  std::set<std::string> done;
  for (const auto& [id, j] : last_manifest_lines(dir))
    if (j.value("status", "") == "done") done.insert(id);
  return done;
}

struct Loaded {
  std::vector<Volume> channels;
  std::vector<std::string> files;
};

}  // namespace

std::vector<BatchCase> read_case_list(const fs::path& src, bool skip_channel_files) {
  std::vector<BatchCase> cases;
  std::error_code ec;
  const auto id_of = [&](const fs::path& p) {
    std::string id = strip_image_extension(p.filename().string());
    if (id.empty()) id = p.parent_path().filename().string();
    const auto m = channel_name(p.filename().string());
    if (skip_channel_files && m && m->index == "0000") id = m->stem;
    return id;
  };
  if (fs::is_directory(src, ec)) {
    for (const auto& e : fs::directory_iterator(src, ec)) {
      const std::string name = e.path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      const auto m = channel_name(name);
      if (skip_channel_files && m && m->index != "0000") continue;
      cases.push_back(BatchCase{id_of(e.path()), e.path().string()});
    }
  } else if (fs::is_regular_file(src, ec)) {
    std::ifstream in(src);
    std::string line;
    std::int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (n > 10'000'000) fail(ErrorCode::invalid_input, src.string() + ": more than 10 million lines");
      const std::string t = trim(line);
      if (t.empty() || t[0] == '#') continue;
      BatchCase c;
      const auto tab = t.find('\t');
      std::string path = tab == std::string::npos ? t : trim(t.substr(tab + 1));
      fs::path p(path);
      if (p.is_relative()) p = src.parent_path() / p;
      c.input = p.string();
      c.id = tab == std::string::npos ? id_of(p) : trim(t.substr(0, tab));
      cases.push_back(std::move(c));
    }
  } else {
    fail(ErrorCode::invalid_input, src.string() + ": no such list file or folder");
  }
  std::sort(cases.begin(), cases.end(), [](const BatchCase& a, const BatchCase& b) { return a.id < b.id; });
  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (!safe_id(cases[i].id))
      fail(ErrorCode::invalid_input, src.string() + ": case id '" + cases[i].id + "' cannot name a file");
    if (i > 0 && cases[i].id == cases[i - 1].id)
      fail(ErrorCode::invalid_input, src.string() + ": case id '" + cases[i].id + "' appears twice");
  }
  if (cases.empty()) fail(ErrorCode::invalid_input, src.string() + ": no inputs");
  return cases;
}

Shard parse_shard(const std::string& spec, std::optional<std::int64_t> count_hint,
                  const std::function<const char*(const char*)>& getenv_fn) {
  const auto env = [&](const char* k) -> const char* { return getenv_fn ? getenv_fn(k) : std::getenv(k); };
  const auto num = [&](const char* v, const std::string& what) {
    try {
      std::size_t used = 0;
      const long long x = std::stoll(v, &used);
      if (used != std::strlen(v) || x < 0 || x > 10'000'000) throw std::invalid_argument(v);
      return static_cast<std::int64_t>(x);
    } catch (const std::exception&) {
      fail(ErrorCode::invalid_input, what + ": '" + std::string(v) + "' is not a shard number");
    }
  };
  Shard s;
  if (spec == "auto") {
    if (const char* id = env("SLURM_ARRAY_TASK_ID")) {
      const std::int64_t task = num(id, "SLURM_ARRAY_TASK_ID");
      std::int64_t lo = 0;
      if (const char* mn = env("SLURM_ARRAY_TASK_MIN")) lo = num(mn, "SLURM_ARRAY_TASK_MIN");
      if (const char* cnt = env("SLURM_ARRAY_TASK_COUNT")) {
        s.count = num(cnt, "SLURM_ARRAY_TASK_COUNT");
      } else if (const char* mx = env("SLURM_ARRAY_TASK_MAX")) {
        s.count = num(mx, "SLURM_ARRAY_TASK_MAX") - lo + 1;
      } else {
        fail(ErrorCode::invalid_input,
             "--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor _MAX");
      }
      s.index = task - lo;
    } else if (const char* k = env("JOB_COMPLETION_INDEX")) {
      if (!count_hint)
        fail(ErrorCode::invalid_input,
             "--shard auto with JOB_COMPLETION_INDEX needs --shard-count (the Job's completions)");
      s.index = num(k, "JOB_COMPLETION_INDEX");
      s.count = *count_hint;
    } else {
      fail(ErrorCode::invalid_input, "--shard auto: no SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX in the environment");
    }
  } else {
    const auto slash = spec.find('/');
    if (slash == std::string::npos) fail(ErrorCode::invalid_input, "--shard: expected I/N or auto, got '" + spec + "'");
    s.index = num(spec.substr(0, slash).c_str(), "--shard");
    s.count = num(spec.substr(slash + 1).c_str(), "--shard");
  }
  if (s.count < 1 || s.index >= s.count)
    fail(ErrorCode::invalid_input,
         "--shard: index " + std::to_string(s.index) + " is not below the count " + std::to_string(s.count));
  return s;
}

std::vector<BatchCase> shard_cases(const std::vector<BatchCase>& cases, const Shard& shard) {
  std::vector<BatchCase> out;
  for (std::size_t i = 0; i < cases.size(); ++i)
    if (static_cast<std::int64_t>(i) % shard.count == shard.index) out.push_back(cases[i]);
  return out;
}

BatchSummary run_batch(Segmenter& seg, const std::vector<BatchCase>& cases, const BatchOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (!fs::is_directory(o.output_dir, ec))
    fail(ErrorCode::io, o.output_dir.string() + ": cannot create the output folder");
  const std::set<std::string> done_before = o.resume ? done_cases(o.output_dir) : std::set<std::string>{};
  const fs::path manifest = o.output_dir / manifest_name(o.shard);
  std::FILE* mf = std::fopen(manifest.c_str(), "a");
  if (!mf) fail(ErrorCode::io, manifest.string() + ": cannot open for appending");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> mclose(mf, std::fclose);

  const std::int64_t channels = seg.channels();
  ReadOptions ro;
  ro.series_uid = o.series;
  const auto load = [channels, ro](const BatchCase& c) {
    Loaded l;
    l.files = channel_files(c.input, channels);
    for (const auto& f : l.files) l.channels.push_back(read_volume(f, ro));
    return l;
  };
  const auto label_path = [&](const BatchCase& c) { return o.output_dir / (c.id + ".nii.gz"); };
  const auto skip = [&](const BatchCase& c) {
    return o.resume && done_before.count(c.id) && fs::exists(label_path(c), ec);
  };

  BatchSummary sum;
  std::vector<std::size_t> todo;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (!skip(cases[i])) {
      todo.push_back(i);
      continue;
    }
    ++sum.skipped;
    nlohmann::json j = {
        {"case", cases[i].id}, {"input", cases[i].input}, {"status", "skipped"}, {"reason", "done before (--resume)"}};
    std::fprintf(mf, "%s\n", j.dump().c_str());
  }
  std::fflush(mf);
  std::future<Loaded> next;
  if (!todo.empty() && o.lookahead) next = std::async(std::launch::async, load, cases[todo[0]]);
  for (std::size_t k = 0; k < todo.size(); ++k) {
    const BatchCase& c = cases[todo[k]];
    const auto tc = std::chrono::steady_clock::now();
    nlohmann::json j = {{"case", c.id}, {"input", c.input}, {"shard", {o.shard.index, o.shard.count}}};
    try {
      Loaded l = o.lookahead ? next.get() : load(c);
      if (o.lookahead && k + 1 < todo.size()) next = std::async(std::launch::async, load, cases[todo[k + 1]]);
      SegmenterResult r = seg.run(l.channels);
      float max_label = 0;
      for (std::int64_t i = 0; i < r.labels.voxels(); ++i) max_label = std::max(max_label, r.labels.channel(0)[i]);
      WriteOptions wo;
      wo.pixel_type = max_label > 255 ? PixelType::uint16 : PixelType::uint8;
      write_image(label_path(c).string(), r.labels, wo);
      if (o.stats) {
        nlohmann::json st = nlohmann::json::parse(to_json(r.stats));
        st["case"] = c.id;
        st["model"] = {{"kind", seg.kind()}, {"name", seg.name()}, {"version", seg.version()}};
        write_file_atomic((o.output_dir / (c.id + "_stats.json")).string(), st.dump(2) + "\n");
      }
      if (o.preview) {
        const RgbImage img = render_preview(l.channels[0], r.labels, seg.labels());
        write_png((o.output_dir / (c.id + "_preview.png")).string(), img.width, img.height, 3, img.rgb.data());
      }
      j["status"] = "done";
      j["tiles"] = r.tiles;
      ++sum.done;
    } catch (const std::exception& e) {
      // The look-ahead goes on with the case after a failed one.
      if (o.lookahead && k + 1 < todo.size() && !next.valid())
        next = std::async(std::launch::async, load, cases[todo[k + 1]]);
      j["status"] = "failed";
      j["error"] = e.what();
      ++sum.failed;
    }
    j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    j["peak_rss_bytes"] = peak_rss_bytes();
    j["voxinfer"] = VOXINFER_VERSION_STRING;
    j["model"] = {{"kind", seg.kind()}, {"name", seg.name()}, {"version", seg.version()}};
    std::fprintf(mf, "%s\n", j.dump().c_str());
    std::fflush(mf);
    if (o.log) {
      char line[512];
      std::snprintf(line, sizeof line, "[%zu/%zu] %s %s (%.1f s)", k + 1, todo.size(), c.id.c_str(),
                    j["status"].get<std::string>().c_str(), j["seconds"].get<double>());
      std::string msg = line;
      if (j.contains("error")) msg += ": " + j["error"].get<std::string>();
      o.log(msg);
    }
  }
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

std::map<std::string, std::int64_t> summarize_manifests(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(ErrorCode::invalid_input, dir.string() + ": no such output folder");
  const auto last = last_manifest_lines(dir);
  std::string text;
  std::map<std::string, std::int64_t> counts;
  for (const auto& [id, j] : last) {
    text += j.dump() + "\n";
    ++counts[j.value("status", "unknown")];
  }
  write_file_atomic((dir / "manifest.jsonl").string(), text);
  return counts;
}

}  // namespace voxinfer::app
