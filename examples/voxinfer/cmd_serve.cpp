// `voxinfer serve`: a DICOM node (C-ECHO/C-STORE provider) that segments the series it receives
// and sends the DICOM SEG back. The work is app::run_node; this file parses options.
#include <csignal>
#include <cstdio>
#include <memory>
#include <sstream>

#include "commands.h"
#include "voxinfer/app/dicom_node.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::cli {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

void print_status(const std::string& spool, bool as_json) {
  const auto s = app::node_status(spool);
  if (as_json) {
    std::printf("%s\n", s.dump(2).c_str());
    return;
  }
  std::printf("%-38s %-9s %-12s %9s %8s  %s\n", "job", "state", "route", "instances", "attempts", "note");
  for (const auto& j : s["jobs"]) {
    std::string note = j.contains("error") ? j["error"].get<std::string>() : "";
    if (j.contains("seconds_to_sent")) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "sent %.1f s after the series was complete", j["seconds_to_sent"].get<double>());
      note = buf;
    }
    std::printf("%-38s %-9s %-12s %9d %8d  %s\n", j["id"].get<std::string>().c_str(), j["state"].get<std::string>().c_str(),
                j["route"].get<std::string>().c_str(), j["instances"].get<int>(), j["attempts"].get<int>(), note.c_str());
  }
  std::printf("series still arriving: %d\n", s["arriving_series"].get<int>());
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve", "Run as a DICOM node: receive series (C-STORE), segment them, send the DICOM SEG to a PACS");
  struct Args {
    std::string aet, spool, model, config, allow, allow_hosts, tls_key, tls_cert, tls_trusted;
    std::vector<std::string> destinations;
    int port = 0, threads = -1;
    double stable = -1;
    bool log_json = false, log_uids = false, write_nifti = false, rtstruct = false, keep_inputs = false, status = false, json = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--aet", a->aet, "this node's AE title (default VOXINFER)");
  cmd->add_option("--port", a->port, "port to listen on (default 11112)");
  cmd->add_option("--model,-m", a->model, "model folder (any kind `segment` takes) for every series; or routes in --config");
  cmd->add_option("--destination,-d", a->destinations, "where SEGs go: AET@HOST:PORT (repeat for several)");
  cmd->add_option("--spool", a->spool, "folder for received series, jobs and results (survives restarts)");
  cmd->add_option("--stable-seconds", a->stable, "a series is complete when nothing arrived for this long (default 10)");
  cmd->add_option("--config", a->config, "node.json: these options and routing rules (docs/dicom_node.md); options given here win");
  cmd->add_option("--allow", a->allow, "calling AE titles accepted, comma-separated (default: the destinations')");
  cmd->add_option("--allow-hosts", a->allow_hosts, "peer addresses accepted, comma-separated (default: any)");
  cmd->add_option("--threads", a->threads, "inference threads (default: VOXINFER_NUM_THREADS or all cores)");
  cmd->add_option("--tls-key", a->tls_key, "TLS: this node's private key (PEM); turns TLS on for both directions");
  cmd->add_option("--tls-cert", a->tls_cert, "TLS: this node's certificate (PEM)");
  cmd->add_option("--tls-trusted", a->tls_trusted, "TLS: trusted peer/CA certificates (PEM), comma-separated");
  cmd->add_flag("--log-json", a->log_json, "log one JSON object per line");
  cmd->add_flag("--log-uids", a->log_uids, "name series by their UID in logs (default: a hash of it)");
  cmd->add_flag("--write-nifti", a->write_nifti, "also keep labels.nii.gz in each job folder");
  cmd->add_flag("--rtstruct", a->rtstruct, "also send the labels as an RT Structure Set (for radiotherapy systems)");
  cmd->add_flag("--keep-inputs", a->keep_inputs, "keep the received instances of sent jobs");
  cmd->add_flag("--status", a->status, "print the spool's jobs and exit (the node may be running)");
  cmd->add_flag("--json", a->json, "with --status: JSON");
  cmd->footer(
      "Stops on SIGTERM or SIGINT after the running inference; a job interrupted harder runs again at the next\n"
      "start, and a SEG confirmed by a destination is never sent there again. Example:\n"
      "  voxinfer serve --aet VOXINFER --port 11112 --model models/spleen --destination ORTHANC@pacs:4242 \\\n"
      "                 --spool /var/spool/voxinfer");
  cmd->callback([a] {
    if (a->status) {
      if (a->spool.empty()) throw Error(ErrorCode::invalid_input, "--status needs --spool");
      print_status(a->spool, a->json);
      return;
    }
    app::NodeOptions o;
    if (!a->config.empty()) o = app::read_node_config(a->config);
    if (!a->aet.empty()) o.aet = a->aet;
    if (o.aet.empty() || o.aet.size() > 16) throw Error(ErrorCode::invalid_input, "--aet: 1 to 16 characters");
    if (a->port) o.port = a->port;
    if (o.port < 1 || o.port > 65535) throw Error(ErrorCode::invalid_input, "--port must be in 1..65535");
    if (!a->spool.empty()) o.spool = a->spool;
    if (!a->destinations.empty()) {
      o.destinations.clear();
      for (const auto& d : a->destinations) o.destinations.push_back(dicomnet::Peer::parse(d, "--destination"));
    }
    if (!a->model.empty()) {
      app::NodeRoute r;
      r.name = "default";
      r.model = a->model;
      o.routes = {r};
    }
    if (a->stable >= 0) o.stable_seconds = a->stable;
    if (!a->allow.empty()) o.allow_aets = split_commas(a->allow);
    if (!a->allow_hosts.empty()) o.allow_hosts = split_commas(a->allow_hosts);
    if (a->threads != -1 && (a->threads < 1 || a->threads > 1024))
      throw Error(ErrorCode::invalid_input, "--threads must be in 1..1024");
    if (a->threads > 0) o.threads = a->threads;
    if (!a->tls_key.empty() || !a->tls_cert.empty()) {
      if (a->tls_key.empty() || a->tls_cert.empty()) throw Error(ErrorCode::invalid_input, "TLS needs both --tls-key and --tls-cert");
      o.tls.private_key = a->tls_key;
      o.tls.certificate = a->tls_cert;
      o.tls.trusted = split_commas(a->tls_trusted);
    }
    o.log_json = o.log_json || a->log_json;
    o.log_uids = o.log_uids || a->log_uids;
    o.write_nifti = o.write_nifti || a->write_nifti;
    o.rtstruct = o.rtstruct || a->rtstruct;
    o.keep_inputs = o.keep_inputs || a->keep_inputs;
    if (o.threads) set_num_threads(o.threads);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT}) sigaction(sig, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    app::run_node(o, g_stop);
  });
}

}  // namespace voxinfer::cli
