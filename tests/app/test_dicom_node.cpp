// The DICOM node's parts: routing rules, node.json, peers, and the C-ECHO/C-STORE provider and
// user talking to each other over loopback (the end-to-end test with Orthanc is
// tests/cli/dicom_node_test.sh).
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "io/dicom_writer.h"
#include "voxinfer/app/dicom_node.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/dicom_net.h"

namespace voxinfer::app {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("voxinfer_node_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(NodeRouting, GlobPatternsAreCaseInsensitiveWithStarAndQuestionMark) {
  EXPECT_TRUE(glob_match("*t1*", "Sag T1 MPRAGE"));
  EXPECT_TRUE(glob_match("ct", "CT"));
  EXPECT_TRUE(glob_match("ABDOMEN*", "abdomen pelvis"));
  EXPECT_TRUE(glob_match("?R", "MR"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_FALSE(glob_match("CT", "CTA"));
  EXPECT_FALSE(glob_match("*T2*", "Sag T1"));
  EXPECT_FALSE(glob_match("?", ""));
  // Many stars against a long near-miss stays fast (no exponential backtracking).
  EXPECT_FALSE(glob_match(std::string(30, '*') + "b", std::string(5000, 'a')));
}

TEST(NodeRouting, FirstMatchingRouteWinsAndUnmatchedSeriesHaveNone) {
  NodeRoute spleen{"spleen", "m1", "CT", "ABDOMEN*", "", 40, 0};
  NodeRoute brain{"brain", "m2", "MR", "", "*T1*", 0, 0};
  NodeRoute any_ct{"ct", "m3", "CT", "", "", 0, 0};
  const std::vector<NodeRoute> routes{spleen, brain, any_ct};
  EXPECT_EQ(select_route(routes, {"CT", "ABDOMEN", "venous", 120})->name, "spleen");
  EXPECT_EQ(select_route(routes, {"CT", "ABDOMEN", "venous", 12})->name, "ct");  // too few instances for spleen
  EXPECT_EQ(select_route(routes, {"MR", "BRAIN", "sag t1 mprage", 176})->name, "brain");
  EXPECT_EQ(select_route(routes, {"MR", "BRAIN", "flair", 30}), nullptr);
  NodeRoute bounded{"b", "m", "", "", "", 10, 20};
  EXPECT_TRUE(route_matches(bounded, {"", "", "", 20}));
  EXPECT_FALSE(route_matches(bounded, {"", "", "", 21}));
}

TEST(NodeConfig, ReadsRoutesDestinationsAndRelativePaths) {
  const fs::path d = temp_dir("config");
  std::ofstream(d / "node.json") << R"({"aet": "AI", "port": 4000, "spool": "spool", "destinations": ["PACS@10.0.0.5:104"],
    "stable_seconds": 3, "allow": ["PACS", "CT1"], "log_json": true,
    "routes": [{"name": "spleen", "model": "models/spleen", "modality": "CT", "min_instances": 40}]})";
  const NodeOptions o = read_node_config(d / "node.json");
  EXPECT_EQ(o.aet, "AI");
  EXPECT_EQ(o.port, 4000);
  EXPECT_EQ(o.spool, d / "spool");
  ASSERT_EQ(o.destinations.size(), 1u);
  EXPECT_EQ(o.destinations[0].str(), "PACS@10.0.0.5:104");
  EXPECT_EQ(o.stable_seconds, 3);
  EXPECT_EQ(o.allow_aets, (std::vector<std::string>{"PACS", "CT1"}));
  EXPECT_TRUE(o.log_json);
  ASSERT_EQ(o.routes.size(), 1u);
  EXPECT_EQ(o.routes[0].model, d / "models/spleen");
  EXPECT_EQ(o.routes[0].min_instances, 40);
}

TEST(NodeConfig, ErrorsNameTheFileAndTheField) {
  const fs::path d = temp_dir("config_bad");
  auto message_for = [&](const std::string& text) -> std::string {
    std::ofstream(d / "n.json") << text;
    try {
      read_node_config(d / "n.json");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_input);
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message_for(R"({"aet": "A", "colour": 1})").find("unknown field \"colour\""), std::string::npos);
  EXPECT_NE(message_for(R"({"destinations": ["PACS@host"]})").find("AET@HOST:PORT"), std::string::npos);
  EXPECT_NE(message_for(R"({"port": 70000})").find("\"port\""), std::string::npos);
  EXPECT_NE(message_for(R"({"routes": [{"modality": "CT"}]})").find("routes[0] needs \"model\""), std::string::npos);
  EXPECT_NE(message_for(R"({"routes": [{"model": "m", "modalty": "CT"}]})").find("unknown field \"modalty\""), std::string::npos);
  EXPECT_NE(message_for("[1, 2]").find("not a JSON object"), std::string::npos);
}

TEST(NodePeer, ParsesAetHostPortAndRefusesTheRest) {
  const auto p = dicomnet::Peer::parse("ORTHANC@127.0.0.1:4242", "--destination");
  EXPECT_EQ(p.aet, "ORTHANC");
  EXPECT_EQ(p.host, "127.0.0.1");
  EXPECT_EQ(p.port, 4242);
  for (const char* bad : {"ORTHANC", "@h:1", "A@:1", "A@h:", "A@h:0", "A@h:99999", "A@h:12x", "SEVENTEEN_CHARS_X@h:1"})
    EXPECT_THROW(dicomnet::Peer::parse(bad, "--destination"), Error) << bad;
}

int free_port() {
  // Ports above the ephemeral range's usual start, spread by process id.
  return 30000 + static_cast<int>(::getpid() % 20000);
}

struct ProviderFixture {
  std::atomic<bool> stop{false};
  std::thread thread;
  std::mutex m;
  std::vector<dicomnet::ReceivedInstance> received;
  std::vector<std::string> refusals;
  dicomnet::StoreProviderOptions o;

  ProviderFixture(const fs::path& dir, int port, std::vector<std::string> allowed) {
    o.aet = "NODE";
    o.port = port;
    o.allowed_aets = std::move(allowed);
    o.timeout_seconds = 5;
    o.place = [dir](const dicomnet::ReceivedInstance& r) { return (dir / r.series_uid / (r.sop_instance_uid + ".dcm")).string(); };
    o.stored = [this](const dicomnet::ReceivedInstance& r) {
      std::lock_guard<std::mutex> lock(m);
      received.push_back(r);
    };
    o.refused = [this](const std::string& event, const std::string& detail) {
      std::lock_guard<std::mutex> lock(m);
      refusals.push_back(event + ": " + detail);
    };
    thread = std::thread([this] { dicomnet::run_store_provider(o, stop); });
  }
  ~ProviderFixture() {
    stop = true;
    thread.join();
  }
};

// Waits until the provider answers C-ECHO (it starts listening in its thread).
std::string wait_for_echo(const dicomnet::Peer& peer, const dicomnet::SendOptions& so) {
  std::string e = "not tried";
  for (int i = 0; i < 50 && !e.empty(); ++i) {
    e = dicomnet::echo(peer, so);
    if (!e.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return e;
}

TEST(DicomNet, StoreProviderWritesReceivedInstancesAndRefusesMalformedOnes) {
  const fs::path d = temp_dir("net");
  const int port = free_port();
  ProviderFixture scp(d / "spool", port, {"SENDER"});
  const dicomnet::Peer peer{"NODE", "127.0.0.1", port};
  dicomnet::SendOptions so;
  so.calling_aet = "SENDER";
  so.timeout_seconds = 5;
  ASSERT_EQ(wait_for_echo(peer, so), "");

  std::vector<std::string> files;
  for (int k = 0; k < 3; ++k) {
    test::SliceSpec s;
    s.sop_instance = "1.2.3.4.5." + std::to_string(k + 1);
    s.instance = k + 1;
    s.position[2] = 2.0 * k;
    s.extra.emplace_back(0x0018, 0x0015, "CS", "ABDOMEN");
    files.push_back((d / ("s" + std::to_string(k) + ".dcm")).string());
    test::write_slice(files.back(), s);
  }
  EXPECT_EQ(dicomnet::store(peer, files, so), "");
  {
    std::lock_guard<std::mutex> lock(scp.m);
    ASSERT_EQ(scp.received.size(), 3u);
    EXPECT_EQ(scp.received[0].modality, "CT");
    EXPECT_EQ(scp.received[0].body_part, "ABDOMEN");
    EXPECT_EQ(scp.received[0].calling_aet, "SENDER");
  }
  const fs::path series = d / "spool" / "1.2.826.0.1.3680043.9.9999.1";
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(fs::exists(series / ("1.2.3.4.5." + std::to_string(k + 1) + ".dcm")));
  for (const auto& e : fs::directory_iterator(series)) EXPECT_EQ(e.path().extension(), ".dcm") << e.path();

  // No valid Series Instance UID: refused with a failure status, nothing written.
  test::SliceSpec bad;
  bad.series_uid = "not a uid";
  bad.sop_instance = "1.2.3.4.5.99";
  test::write_slice((d / "bad.dcm").string(), bad);
  const std::string e = dicomnet::store(peer, {(d / "bad.dcm").string()}, so);
  EXPECT_NE(e.find("refused"), std::string::npos) << e;
  // The provider still serves.
  EXPECT_EQ(dicomnet::echo(peer, so), "");
  std::lock_guard<std::mutex> lock(scp.m);
  EXPECT_EQ(scp.received.size(), 3u);
  ASSERT_FALSE(scp.refusals.empty());
  EXPECT_NE(scp.refusals.back().find("Series Instance UID"), std::string::npos);
}

TEST(DicomNet, CallingAeTitlesOutsideTheAllowListAreRejectedAtAssociation) {
  const fs::path d = temp_dir("allow");
  const int port = free_port() + 1;
  ProviderFixture scp(d, port, {"PACS"});
  const dicomnet::Peer peer{"NODE", "127.0.0.1", port};
  dicomnet::SendOptions ok;
  ok.calling_aet = "PACS";
  ok.timeout_seconds = 5;
  ASSERT_EQ(wait_for_echo(peer, ok), "");
  dicomnet::SendOptions intruder = ok;
  intruder.calling_aet = "INTRUDER";
  EXPECT_NE(dicomnet::echo(peer, intruder), "");
  std::lock_guard<std::mutex> lock(scp.m);
  ASSERT_FALSE(scp.refusals.empty());
  EXPECT_NE(scp.refusals.back().find("'INTRUDER' is not allowed"), std::string::npos);
}

TEST(DicomNet, TlsAssociationsWorkWithTrustedCertificatesAndPlainOnesAreRefused) {
  const fs::path d = temp_dir("tls");
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=voxinfer-test -days 2 -keyout " +
                          (d / "key.pem").string() + " -out " + (d / "cert.pem").string() + " > /dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "the openssl command is not installed (scripts/setup.sh installs it)";
  const int port = free_port() + 3;
  dicomnet::TlsOptions tls;
  tls.private_key = (d / "key.pem").string();
  tls.certificate = (d / "cert.pem").string();
  tls.trusted = {(d / "cert.pem").string()};
  std::atomic<bool> stop{false};
  dicomnet::StoreProviderOptions o;
  o.aet = "NODE";
  o.port = port;
  o.tls = tls;
  o.timeout_seconds = 5;
  o.place = [d](const dicomnet::ReceivedInstance& r) { return (d / (r.sop_instance_uid + ".dcm")).string(); };
  std::thread t([&] { dicomnet::run_store_provider(o, stop); });
  const dicomnet::Peer peer{"NODE", "127.0.0.1", port};
  dicomnet::SendOptions so;
  so.calling_aet = "PACS";
  so.timeout_seconds = 5;
  so.tls = tls;
  EXPECT_EQ(wait_for_echo(peer, so), "");
  test::SliceSpec s;
  test::write_slice((d / "s.dcm").string(), s);
  EXPECT_EQ(dicomnet::store(peer, {(d / "s.dcm").string()}, so), "");
  EXPECT_TRUE(fs::exists(d / (s.sop_instance + ".dcm")));
  dicomnet::SendOptions plain = so;
  plain.tls = {};
  EXPECT_NE(dicomnet::echo(peer, plain), "");
  stop = true;
  t.join();
}

TEST(DicomNet, SendingToANodeThatIsDownReportsWhatFailed) {
  dicomnet::SendOptions so;
  so.timeout_seconds = 2;
  const std::string e = dicomnet::echo({"NOBODY", "127.0.0.1", free_port() + 2}, so);
  EXPECT_NE(e, "");
}

TEST(NodeStatus, ListsJobsOfEveryFolderWithCounts) {
  const fs::path d = temp_dir("status");
  fs::create_directories(d / "done" / "a");
  fs::create_directories(d / "failed" / "b");
  fs::create_directories(d / "incoming" / "c");
  std::ofstream(d / "done" / "a" / "job.json") << R"({"id": "a", "state": "sent", "route": "ct", "instances": 34,
    "attempts": 1, "seconds_to_sent": 2.5})";
  std::ofstream(d / "failed" / "b" / "job.json") << R"({"id": "b", "state": "failed", "route": "ct", "error": "x"})";
  const auto s = node_status(d);
  ASSERT_EQ(s["jobs"].size(), 2u);
  EXPECT_EQ(s["jobs"][0]["id"], "a");
  EXPECT_EQ(s["counts"]["sent"], 1);
  EXPECT_EQ(s["counts"]["failed"], 1);
  EXPECT_EQ(s["arriving_series"], 1);
}

TEST(NodeRun, RefusesToStartWithoutSpoolDestinationOrModel) {
  std::atomic<bool> stop{true};
  NodeOptions o;
  EXPECT_THROW(run_node(o, stop), Error);
  o.spool = temp_dir("run");
  EXPECT_THROW(run_node(o, stop), Error);
  o.destinations.push_back({"PACS", "127.0.0.1", 104});
  try {
    run_node(o, stop);
    ADD_FAILURE() << "no error without a model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no model"), std::string::npos);
  }
  o.routes.push_back({"r", temp_dir("not_a_model"), "", "", "", 0, 0});
  EXPECT_THROW(run_node(o, stop), Error);
}

}  // namespace
}  // namespace voxinfer::app
