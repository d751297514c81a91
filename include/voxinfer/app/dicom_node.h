// voxinfer as a DICOM node beside a PACS (`voxinfer serve`): receives series over C-STORE into
// a spool folder, turns each complete ("stable") series into a job on disk, segments it with
// the model its route names, and sends the DICOM SEG to the destinations by C-STORE, retrying
// while they are down. Jobs survive a crash or restart: see docs/dicom_node.md.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "voxinfer/io/dicom_net.h"

namespace voxinfer::app {

// Which series a model receives. Patterns are case-insensitive globs (`*`, `?`); empty = any.
struct NodeRoute {
  std::string name;
  std::filesystem::path model;
  std::string modality, body_part, series_description;
  int min_instances = 0;  // 0: no bound
  int max_instances = 0;
};

// The routing fields of a received series.
struct SeriesInfo {
  std::string modality, body_part, series_description;
  int instances = 0;
};

bool glob_match(const std::string& pattern, const std::string& text);  // case-insensitive
bool route_matches(const NodeRoute& route, const SeriesInfo& series);
// The first route that takes the series, or nullptr (the series is kept, not processed).
const NodeRoute* select_route(const std::vector<NodeRoute>& routes, const SeriesInfo& series);

struct NodeOptions {
  std::string aet = "VOXINFER";
  int port = 11112;
  std::filesystem::path spool;
  std::vector<dicomnet::Peer> destinations;
  std::vector<std::string> allow_aets;   // empty: the destinations' AE titles
  std::vector<std::string> allow_hosts;  // empty: any address
  double stable_seconds = 10;
  std::vector<NodeRoute> routes;
  int threads = 0;
  bool write_nifti = false;   // also labels.nii.gz beside the SEG in the job folder
  bool rtstruct = false;      // also an RT Structure Set, sent with the SEG
  bool keep_inputs = false;   // keep a sent job's received instances
  bool log_json = false;
  bool log_uids = false;      // name series by their UID in logs instead of a hash
  double retry_first_seconds = 2, retry_max_seconds = 60;
  int timeout_seconds = 30;
  dicomnet::TlsOptions tls;
  // Where log lines go (one line per event, no newline); stderr when empty.
  std::function<void(const std::string&)> log_sink;
};

// Reads a node configuration file (JSON; see docs/dicom_node.md). Relative model paths are
// taken from the file's folder. Throws Error(invalid_input) naming the file and the field.
NodeOptions read_node_config(const std::filesystem::path& file);

// Runs the node until `stop` becomes true: the C-STORE provider in one thread, the jobs in
// this one (one inference at a time). A job that was running when the node stopped or died
// runs again at the next start. Throws Error for what prevents starting (port in use, spool
// not writable, a route's model that does not open).
void run_node(const NodeOptions& options, const std::atomic<bool>& stop);

// The jobs in a spool (from their job.json files; works while the node runs or not):
// {"jobs": [{"id", "state", "route", "series", "instances", "attempts", "error", ...}], "counts": {...}}.
nlohmann::json node_status(const std::filesystem::path& spool);

}  // namespace voxinfer::app
