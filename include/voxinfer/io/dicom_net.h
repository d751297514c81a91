// DICOM networking (DCMTK dcmnet, optionally over TLS with dcmtls): a C-ECHO/C-STORE service
// class provider that writes what it receives atomically into a folder chosen by the caller,
// and the C-ECHO/C-STORE user that sends files to another node. Nothing of DCMTK leaks out of
// this header.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace voxinfer::dicomnet {

// Optional TLS for both directions (PEM files). Empty key: plain TCP.
struct TlsOptions {
  std::string private_key;   // our key
  std::string certificate;   // our certificate
  std::vector<std::string> trusted;  // CA or peer certificates (files); empty: the peer is not verified
  bool require_peer_certificate = true;
  bool enabled() const { return !private_key.empty(); }
};

// A remote node (AE title, host, port).
struct Peer {
  std::string aet;
  std::string host;
  int port = 0;
  // "AET@HOST:PORT"; throws Error(invalid_input) naming `what` when malformed.
  static Peer parse(const std::string& text, const std::string& what);
  std::string str() const;
};

// What the provider tells the caller about one received instance. Only identifiers and the
// routing fields (no patient identity).
struct ReceivedInstance {
  std::string sop_class_uid, sop_instance_uid;
  std::string study_uid, series_uid;
  std::string modality, body_part, series_description;
  std::string calling_aet, peer_host;
  std::string file;  // where it was written (set by the provider)
};

struct StoreProviderOptions {
  std::string aet = "VOXINFER";
  int port = 11112;
  // Calling AE titles accepted; empty: any. Peer addresses accepted; empty: any.
  std::vector<std::string> allowed_aets;
  std::vector<std::string> allowed_hosts;
  int timeout_seconds = 30;  // ACSE/DIMSE timeouts of an association
  TlsOptions tls;
  // Called for each valid instance before it is written: returns the final path (its folder is
  // created). The instance is written to a temporary name there and renamed into place.
  std::function<std::string(const ReceivedInstance&)> place;
  // Called after an instance is in place.
  std::function<void(const ReceivedInstance&)> stored;
  // Called for a refused association or instance (reason without patient data).
  std::function<void(const std::string& event, const std::string& detail)> refused;
};

// Listens until `stop` becomes true (checked at least once a second). Associations are served
// one after another. Throws Error(io) when the port cannot be opened.
void run_store_provider(const StoreProviderOptions& options, const std::atomic<bool>& stop);

struct SendOptions {
  std::string calling_aet = "VOXINFER";
  int timeout_seconds = 30;
  TlsOptions tls;
};

// C-ECHO; returns an empty string on success, else what failed.
std::string echo(const Peer& peer, const SendOptions& options);

// C-STORE of `files` over one association. Returns an empty string when the peer confirmed
// every instance (success or warning status), else what failed (nothing is retried here).
std::string store(const Peer& peer, const std::vector<std::string>& files, const SendOptions& options);

}  // namespace voxinfer::dicomnet
