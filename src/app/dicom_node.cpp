// voxinfer as a DICOM node (see dicom_node.h and docs/dicom_node.md).
//
// Spool layout:
//   incoming/<key>/           instances of a series still arriving (<key>: hash of its UID)
//   incoming/<key>/series.json  the series' identifiers and routing fields
//   jobs/<id>/input/          a complete series; jobs/<id>/job.json its state:
//                             pending -> running -> ready (SEG written) -> sent, or failed
//   done/<id>/, failed/<id>/, unrouted/<id>/   finished, failed and unrouted jobs
// Every state change is a job.json written to a temporary name and renamed, so a crash leaves
// either the old or the new state; a job found "running" at start runs again.
#include "voxinfer/app/dicom_node.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "voxinfer/app/results.h"
#include "voxinfer/app/segmenter.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/version.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace voxinfer::app {

bool glob_match(const std::string& pattern, const std::string& text) {
  // Iterative wildcard match with one backtrack point: linear in practice, never recursive.
  std::size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  auto eq = [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  };
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || (pattern[p] != '*' && eq(pattern[p], text[t])))) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = t;
    } else if (star != std::string::npos) {
      p = star + 1, t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool route_matches(const NodeRoute& r, const SeriesInfo& s) {
  if (!r.modality.empty() && !glob_match(r.modality, s.modality)) return false;
  if (!r.body_part.empty() && !glob_match(r.body_part, s.body_part)) return false;
  if (!r.series_description.empty() && !glob_match(r.series_description, s.series_description)) return false;
  if (r.min_instances > 0 && s.instances < r.min_instances) return false;
  if (r.max_instances > 0 && s.instances > r.max_instances) return false;
  return true;
}

const NodeRoute* select_route(const std::vector<NodeRoute>& routes, const SeriesInfo& s) {
  for (const NodeRoute& r : routes)
    if (route_matches(r, s)) return &r;
  return nullptr;
}

namespace {

[[noreturn]] void bad(const fs::path& file, const std::string& what) {
  throw Error(ErrorCode::invalid_input, file.string() + ": " + what);
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string iso_time(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// JSON written to a temporary name, flushed to disk and renamed over `file`.
void write_json_atomic(const fs::path& file, const json& j) {
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << '\n';
    out.flush();
    if (!out) throw Error(ErrorCode::io, tmp.string() + ": cannot write");
  }
  if (FILE* f = std::fopen(tmp.c_str(), "r")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) throw Error(ErrorCode::io, file.string() + ": cannot replace: " + ec.message());
}

json read_json(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(ErrorCode::io, file.string() + ": cannot open");
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(ErrorCode::io, file.string() + ": not a JSON object");
  return j;
}

class Logger {
 public:
  explicit Logger(const NodeOptions& o) : o_(o) {}
  void operator()(const std::string& level, const std::string& event, const json& fields = json::object()) {
    std::string line;
    if (o_.log_json) {
      json j = {{"time", iso_time(unix_now())}, {"level", level}, {"event", event}};
      for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
      line = j.dump();
    } else {
      line = iso_time(unix_now()) + " " + level + " " + event;
      for (auto it = fields.begin(); it != fields.end(); ++it)
        line += " " + it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
    }
    std::lock_guard<std::mutex> lock(m_);
    if (o_.log_sink)
      o_.log_sink(line);
    else
      std::fprintf(stderr, "%s\n", line.c_str());
  }

 private:
  const NodeOptions& o_;
  std::mutex m_;
};

// A series whose instances are still arriving.
struct Arriving {
  std::chrono::steady_clock::time_point last;
  double last_unix = 0;
  int received = 0;
};

class Node {
 public:
  Node(const NodeOptions& o, const std::atomic<bool>& stop) : o_(o), stop_(stop), log_(o) {}

  void run() {
    prepare();
    std::atomic<bool> stop_provider{false};
    std::exception_ptr provider_error;
    dicomnet::StoreProviderOptions p;
    p.aet = o_.aet;
    p.port = o_.port;
    p.allowed_aets = o_.allow_aets;
    if (p.allowed_aets.empty())
      for (const auto& d : o_.destinations) p.allowed_aets.push_back(d.aet);
    p.allowed_hosts = o_.allow_hosts;
    p.timeout_seconds = o_.timeout_seconds;
    p.tls = o_.tls;
    p.place = [this](const dicomnet::ReceivedInstance& r) { return place(r); };
    p.stored = [this](const dicomnet::ReceivedInstance& r) { stored(r); };
    p.refused = [this](const std::string& event, const std::string& detail) {
      log_("warning", event, {{"reason", detail}});
    };
    std::thread provider([&] {
      try {
        dicomnet::run_store_provider(p, stop_provider);
      } catch (...) {
        provider_error = std::current_exception();
      }
      provider_done_ = true;
    });
    log_("info", "node_started", {{"aet", o_.aet}, {"port", o_.port}, {"version", VOXINFER_VERSION_STRING},
                                  {"routes", o_.routes.size()}, {"tls", o_.tls.enabled()}});
    try {
      while (!stop_.load() && !provider_done_.load()) {
        promote_stable();
        const bool ran = run_one_pending();
        send_due();
        if (!ran) sleep_a_little();
      }
    } catch (...) {
      stop_provider = true;
      provider.join();
      throw;
    }
    stop_provider = true;
    provider.join();
    if (provider_error) std::rethrow_exception(provider_error);
    log_("info", "node_stopped");
  }

 private:
  fs::path dir(const char* name) const { return o_.spool / name; }

  std::string series_name(const std::string& key, const std::string& uid) const { return o_.log_uids ? uid : key; }

  void prepare() {
    if (o_.spool.empty()) throw Error(ErrorCode::invalid_input, "serve: a spool folder is needed (--spool)");
    if (o_.destinations.empty()) throw Error(ErrorCode::invalid_input, "serve: no destination (--destination AET@HOST:PORT)");
    if (o_.routes.empty()) throw Error(ErrorCode::invalid_input, "serve: no model (--model DIR or routes in --config)");
    for (const char* d : {"incoming", "jobs", "done", "failed", "unrouted"}) {
      std::error_code ec;
      fs::create_directories(dir(d), ec);
      if (ec) throw Error(ErrorCode::io, (o_.spool / d).string() + ": cannot create: " + ec.message());
    }
    if (::access(o_.spool.c_str(), W_OK) != 0) throw Error(ErrorCode::io, o_.spool.string() + ": not writable");
    SegmenterOptions so;
    so.threads = o_.threads;
    for (const NodeRoute& r : o_.routes) {
      segmenters_[r.name] = open_segmenter(r.model, so);
      log_("info", "route_ready", {{"route", r.name}, {"model", segmenters_[r.name]->name()},
                                   {"kind", segmenters_[r.name]->kind()}});
    }
    // Series that were arriving when the node stopped wait a full stable period again.
    for (const auto& e : fs::directory_iterator(dir("incoming"))) {
      if (!e.is_directory()) continue;
      Arriving a;
      a.last = std::chrono::steady_clock::now();
      a.last_unix = unix_now();
      for (const auto& f : fs::directory_iterator(e.path()))
        if (f.path().extension() == ".dcm") ++a.received;
      arriving_[e.path().filename().string()] = a;
    }
    for (const auto& e : fs::directory_iterator(dir("jobs"))) {
      const fs::path jf = e.path() / "job.json";
      if (!fs::exists(jf)) continue;
      json j = read_json(jf);
      if (j.value("state", "") == "running") {
        j["state"] = "pending";
        j["restarts"] = j.value("restarts", 0) + 1;
        write_json_atomic(jf, j);
        log_("warning", "job_requeued", {{"job", j.value("id", "")}, {"reason", "the node stopped while it ran"}});
      }
    }
  }

  std::string place(const dicomnet::ReceivedInstance& r) {
    const std::string key = sha256_hex(r.series_uid).substr(0, 16);
    const fs::path folder = dir("incoming") / key;
    std::lock_guard<std::mutex> lock(m_);
    auto it = arriving_.find(key);
    if (it == arriving_.end() || !fs::exists(folder / "series.json")) {
      fs::create_directories(folder);
      write_json_atomic(folder / "series.json",
                        {{"series_uid", r.series_uid}, {"study_uid", r.study_uid}, {"modality", r.modality},
                         {"body_part", r.body_part}, {"series_description", r.series_description},
                         {"calling_aet", r.calling_aet}, {"first_unix", unix_now()}});
      if (it == arriving_.end())
        log_("info", "series_arriving", {{"series", series_name(key, r.series_uid)}, {"from", r.calling_aet}});
    }
    Arriving& a = arriving_[key];  // a later instance of a series already promoted starts anew
    a.last = std::chrono::steady_clock::now();
    a.last_unix = unix_now();
    return (folder / (r.sop_instance_uid + ".dcm")).string();
  }

  void stored(const dicomnet::ReceivedInstance& r) {
    const std::string key = sha256_hex(r.series_uid).substr(0, 16);
    std::lock_guard<std::mutex> lock(m_);
    Arriving& a = arriving_[key];
    a.last = std::chrono::steady_clock::now();
    a.last_unix = unix_now();
    ++a.received;
  }

  void promote_stable() {
    std::vector<std::pair<std::string, Arriving>> ready;
    {
      std::lock_guard<std::mutex> lock(m_);
      const auto now = std::chrono::steady_clock::now();
      for (auto it = arriving_.begin(); it != arriving_.end();) {
        if (std::chrono::duration<double>(now - it->second.last).count() < o_.stable_seconds) {
          ++it;
          continue;
        }
        // Under the lock, so that no instance is being placed into the folder as it moves.
        const fs::path from = dir("incoming") / it->first;
        const std::string id = job_id(it->first);
        std::error_code ec;
        fs::create_directories(dir("jobs") / id, ec);
        if (!ec) fs::rename(from, dir("jobs") / id / "input", ec);
        if (ec) {
          log_("error", "series_not_queued", {{"series", it->first}, {"reason", ec.message()}});
          it->second.last = now;  // try again after another stable period
          ++it;
          continue;
        }
        ready.emplace_back(id, it->second);
        it = arriving_.erase(it);
      }
    }
    for (const auto& [id, a] : ready) queue(id, a);
  }

  std::string job_id(const std::string& key) {
    const std::string stamp = iso_time(unix_now());
    std::string compact;
    for (char c : stamp)
      if (std::isdigit(static_cast<unsigned char>(c)) || c == 'T') compact += c;
    for (int n = 0;; ++n) {
      const std::string id = compact + "-" + key + (n ? "-" + std::to_string(n) : "");
      if (!fs::exists(dir("jobs") / id) && !fs::exists(dir("done") / id) && !fs::exists(dir("failed") / id) &&
          !fs::exists(dir("unrouted") / id))
        return id;
    }
  }

  void queue(const std::string& id, const Arriving& a) {
    const fs::path job = dir("jobs") / id;
    json s = json::object();
    try {
      s = read_json(job / "input" / "series.json");
    } catch (const Error&) {
    }
    int instances = 0;
    for (const auto& f : fs::directory_iterator(job / "input"))
      if (f.path().extension() == ".dcm") ++instances;
    SeriesInfo info{s.value("modality", ""), s.value("body_part", ""), s.value("series_description", ""), instances};
    const std::string key = id.substr(id.find('-') + 1, 16);
    json j = {{"id", id},
              {"series_key", key},
              {"series_uid", s.value("series_uid", "")},
              {"study_uid", s.value("study_uid", "")},
              {"modality", info.modality},
              {"body_part", info.body_part},
              {"instances", instances},
              {"last_instance_unix", a.last_unix},
              {"queued_unix", unix_now()},
              {"attempts", 0},
              {"sent_to", json::array()}};
    const NodeRoute* route = select_route(o_.routes, info);
    const std::string name = series_name(key, j["series_uid"].get<std::string>());
    if (!route) {
      j["state"] = "unrouted";
      write_json_atomic(job / "job.json", j);
      std::error_code ec;
      fs::rename(job, dir("unrouted") / id, ec);
      log_("warning", "series_unrouted", {{"job", id}, {"series", name}, {"modality", info.modality},
                                         {"instances", instances}, {"reason", "no route matches; kept, not processed"}});
      return;
    }
    j["state"] = "pending";
    j["route"] = route->name;
    write_json_atomic(job / "job.json", j);
    log_("info", "series_complete", {{"job", id}, {"series", name}, {"instances", instances}, {"route", route->name}});
  }

  std::vector<fs::path> jobs_in(const char* state) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir("jobs"))) {
      const fs::path jf = e.path() / "job.json";
      if (!fs::exists(jf)) continue;
      try {
        if (read_json(jf).value("state", "") == state) out.push_back(e.path());
      } catch (const Error&) {
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  bool run_one_pending() {
    const auto pending = jobs_in("pending");
    if (pending.empty()) return false;
    const fs::path job = pending.front();
    json j = read_json(job / "job.json");
    const std::string id = j.value("id", "");
    j["state"] = "running";
    j["started_unix"] = unix_now();
    write_json_atomic(job / "job.json", j);
    log_("info", "job_started", {{"job", id}, {"route", j.value("route", "")}});
    const auto t0 = std::chrono::steady_clock::now();
    try {
      auto it = segmenters_.find(j.value("route", ""));
      if (it == segmenters_.end())
        throw Error(ErrorCode::invalid_input, "route '" + j.value("route", "") + "' is no longer configured");
      Segmenter& seg = *it->second;
      ReadOptions ro;
      ro.series_uid = j.value("series_uid", "");
      const Volume input = read_volume((job / "input").string(), ro);
      const SegmenterResult r = seg.run({input});
      write_segmentation_dicom_seg((job / "seg.dcm").string(), r.labels, input.metadata, input.geometry, seg.labels(),
                                   {seg.name(), seg.version()}, false);
      if (o_.rtstruct)
        write_segmentation_rtstruct((job / "rtstruct.dcm").string(), r.labels, input.metadata, input.geometry, seg.labels(),
                                    {seg.name(), seg.version()});
      if (o_.write_nifti) {
        WriteOptions wo;
        wo.pixel_type = PixelType::automatic;
        write_volume((job / "labels.nii.gz").string(), r.labels, wo);
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      j["state"] = "ready";
      j["seconds_inference"] = secs;
      j["model"] = seg.name();
      j["model_version"] = seg.version();
      j["next_attempt_unix"] = 0.0;
      write_json_atomic(job / "job.json", j);
      log_("info", "job_segmented", {{"job", id}, {"seconds", std::round(secs * 1000) / 1000}});
    } catch (const std::exception& e) {
      j["state"] = "failed";
      j["error"] = e.what();
      write_json_atomic(job / "job.json", j);
      std::error_code ec;
      fs::rename(job, dir("failed") / id, ec);
      log_("error", "job_failed", {{"job", id}, {"reason", e.what()}});
    }
    return true;
  }

  void send_due() {
    for (const fs::path& job : jobs_in("ready")) {
      if (stop_.load()) return;
      json j = read_json(job / "job.json");
      if (j.value("next_attempt_unix", 0.0) > unix_now()) continue;
      const std::string id = j.value("id", "");
      std::vector<std::string> sent = j.value("sent_to", std::vector<std::string>{});
      std::string error;
      dicomnet::SendOptions so;
      so.calling_aet = o_.aet;
      so.timeout_seconds = o_.timeout_seconds;
      so.tls = o_.tls;
      for (const dicomnet::Peer& d : o_.destinations) {
        if (std::find(sent.begin(), sent.end(), d.str()) != sent.end()) continue;
        std::vector<std::string> files{(job / "seg.dcm").string()};
        if (fs::exists(job / "rtstruct.dcm")) files.push_back((job / "rtstruct.dcm").string());
        const std::string e = dicomnet::store(d, files, so);
        if (e.empty()) {
          sent.push_back(d.str());
          j["sent_to"] = sent;
          write_json_atomic(job / "job.json", j);  // confirmed: never sent there again
        } else {
          error = e;
        }
      }
      if (!error.empty()) {
        const int attempts = j.value("attempts", 0) + 1;
        const double wait = std::min(o_.retry_max_seconds, o_.retry_first_seconds * std::pow(2.0, attempts - 1));
        j["attempts"] = attempts;
        j["next_attempt_unix"] = unix_now() + wait;
        j["error"] = error;
        write_json_atomic(job / "job.json", j);
        log_("warning", "send_failed", {{"job", id}, {"attempt", attempts}, {"retry_in_seconds", wait}, {"reason", error}});
        continue;
      }
      const double now = unix_now();
      j["state"] = "sent";
      j["sent_unix"] = now;
      j.erase("error");
      // From the last instance received to the SEG confirmed, the stable wait left out.
      const double latency = now - j.value("queued_unix", now);
      j["seconds_to_sent"] = latency;
      write_json_atomic(job / "job.json", j);
      std::error_code ec;
      if (!o_.keep_inputs) fs::remove_all(job / "input", ec);
      fs::rename(job, dir("done") / id, ec);
      log_("info", "job_sent", {{"job", id}, {"to", sent}, {"seconds_after_complete", std::round(latency * 1000) / 1000}});
    }
  }

  void sleep_a_little() {
    for (int i = 0; i < 4 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  const NodeOptions& o_;
  const std::atomic<bool>& stop_;
  Logger log_;
  std::mutex m_;
  std::map<std::string, Arriving> arriving_;
  std::map<std::string, std::unique_ptr<Segmenter>> segmenters_;
  std::atomic<bool> provider_done_{false};
};

std::vector<std::string> string_list(const json& j, const fs::path& file, const char* key) {
  std::vector<std::string> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_array()) bad(file, std::string("\"") + key + "\" must be a list of strings");
  for (const auto& v : j[key]) {
    if (!v.is_string()) bad(file, std::string("\"") + key + "\" must be a list of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

NodeOptions read_node_config(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(ErrorCode::invalid_input, file.string() + ": cannot open");
  const json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) bad(file, "not a JSON object");
  static const char* known[] = {"aet", "port", "spool", "destinations", "allow", "allow_hosts", "stable_seconds", "routes",
                                "threads", "write_nifti", "rtstruct", "keep_inputs", "log_json", "log_uids", "retry_first_seconds",
                                "retry_max_seconds", "timeout_seconds", "tls"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return it.key() == k; }) == std::end(known))
      bad(file, "unknown field \"" + it.key() + "\"");
  NodeOptions o;
  const fs::path base = file.parent_path();
  auto str = [&](const char* k, std::string& v) {
    if (!j.contains(k)) return;
    if (!j[k].is_string()) bad(file, std::string("\"") + k + "\" must be a string");
    v = j[k].get<std::string>();
  };
  auto num = [&](const char* k, auto& v, double lo, double hi) {
    if (!j.contains(k)) return;
    if (!j[k].is_number() || j[k].get<double>() < lo || j[k].get<double>() > hi)
      bad(file, std::string("\"") + k + "\" must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    v = static_cast<std::remove_reference_t<decltype(v)>>(j[k].get<double>());
  };
  auto flag = [&](const char* k, bool& v) {
    if (!j.contains(k)) return;
    if (!j[k].is_boolean()) bad(file, std::string("\"") + k + "\" must be true or false");
    v = j[k].get<bool>();
  };
  str("aet", o.aet);
  num("port", o.port, 1, 65535);
  std::string spool;
  str("spool", spool);
  if (!spool.empty()) o.spool = fs::path(spool).is_absolute() ? fs::path(spool) : base / spool;
  for (const std::string& d : string_list(j, file, "destinations")) o.destinations.push_back(dicomnet::Peer::parse(d, file.string() + ": destination"));
  o.allow_aets = string_list(j, file, "allow");
  o.allow_hosts = string_list(j, file, "allow_hosts");
  num("stable_seconds", o.stable_seconds, 0, 86400);
  num("threads", o.threads, 0, 1024);
  flag("write_nifti", o.write_nifti);
  flag("rtstruct", o.rtstruct);
  flag("keep_inputs", o.keep_inputs);
  flag("log_json", o.log_json);
  flag("log_uids", o.log_uids);
  num("retry_first_seconds", o.retry_first_seconds, 0.1, 3600);
  num("retry_max_seconds", o.retry_max_seconds, 0.1, 86400);
  num("timeout_seconds", o.timeout_seconds, 1, 3600);
  if (j.contains("tls")) {
    const json& t = j["tls"];
    if (!t.is_object() || !t.contains("key") || !t.contains("certificate") || !t["key"].is_string() || !t["certificate"].is_string())
      bad(file, "\"tls\" must be {\"key\": PEM file, \"certificate\": PEM file, \"trusted\": [PEM files]}");
    auto rel = [&](const std::string& p) { return fs::path(p).is_absolute() ? p : (base / p).string(); };
    o.tls.private_key = rel(t["key"].get<std::string>());
    o.tls.certificate = rel(t["certificate"].get<std::string>());
    for (const std::string& c : string_list(t, file, "trusted")) o.tls.trusted.push_back(rel(c));
  }
  if (j.contains("routes")) {
    if (!j["routes"].is_array()) bad(file, "\"routes\" must be a list");
    int n = 0;
    for (const json& r : j["routes"]) {
      const std::string where = "routes[" + std::to_string(n++) + "]";
      if (!r.is_object() || !r.contains("model") || !r["model"].is_string()) bad(file, where + " needs \"model\": a folder");
      NodeRoute route;
      route.name = r.value("name", "route" + std::to_string(n));
      const fs::path m = r["model"].get<std::string>();
      route.model = m.is_absolute() ? m : base / m;
      for (auto it = r.begin(); it != r.end(); ++it) {
        const std::string& k = it.key();
        if (k == "name" || k == "model") continue;
        if (k == "modality" || k == "body_part" || k == "series_description") {
          if (!it->is_string()) bad(file, where + "." + k + " must be a string (a pattern)");
          (k == "modality" ? route.modality : k == "body_part" ? route.body_part : route.series_description) = it->get<std::string>();
        } else if (k == "min_instances" || k == "max_instances") {
          if (!it->is_number_integer() || it->get<int>() < 0) bad(file, where + "." + k + " must be an integer >= 0");
          (k == "min_instances" ? route.min_instances : route.max_instances) = it->get<int>();
        } else {
          bad(file, where + ": unknown field \"" + k + "\"");
        }
      }
      o.routes.push_back(route);
    }
  }
  return o;
}

void run_node(const NodeOptions& options, const std::atomic<bool>& stop) {
  Node node(options, stop);
  node.run();
}

json node_status(const fs::path& spool) {
  json jobs = json::array();
  json counts = json::object();
  for (const char* d : {"jobs", "done", "failed", "unrouted"}) {
    if (!fs::is_directory(spool / d)) continue;
    for (const auto& e : fs::directory_iterator(spool / d)) {
      const fs::path jf = e.path() / "job.json";
      if (!fs::exists(jf)) continue;
      json j;
      try {
        j = read_json(jf);
      } catch (const Error&) {
        continue;
      }
      json row = {{"id", j.value("id", "")}, {"state", j.value("state", "")}, {"route", j.value("route", "")},
                  {"series", j.value("series_key", "")}, {"instances", j.value("instances", 0)},
                  {"attempts", j.value("attempts", 0)}};
      if (j.contains("error")) row["error"] = j["error"];
      if (j.contains("seconds_inference")) row["seconds_inference"] = j["seconds_inference"];
      if (j.contains("seconds_to_sent")) row["seconds_to_sent"] = j["seconds_to_sent"];
      const std::string state = row["state"];
      counts[state] = counts.value(state, 0) + 1;
      jobs.push_back(row);
    }
  }
  std::sort(jobs.begin(), jobs.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  int arriving = 0;
  if (fs::is_directory(spool / "incoming"))
    for (const auto& e : fs::directory_iterator(spool / "incoming")) arriving += e.is_directory() ? 1 : 0;
  return {{"jobs", jobs}, {"counts", counts}, {"arriving_series", arriving}};
}

}  // namespace voxinfer::app
