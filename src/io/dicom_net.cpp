// DICOM networking on DCMTK's dcmnet (and dcmtls): see dicom_net.h.
#include "voxinfer/io/dicom_net.h"

#include <dcmtk/config/osconfig.h>  // first: DCMTK's configuration
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scp.h>
#include <dcmtk/dcmnet/scu.h>
#include <dcmtk/dcmtls/tlslayer.h>
#include <dcmtk/oflog/oflog.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>

#include "voxinfer/core/error.h"

namespace fs = std::filesystem;

namespace voxinfer::dicomnet {
namespace {

// DCMTK logs to the console by default; the node logs for itself.
void quiet_dcmtk() {
  static std::once_flag once;
  std::call_once(once, [] { OFLog::configure(OFLogger::FATAL_LOG_LEVEL); });
}

bool valid_uid(const std::string& s) {
  if (s.empty() || s.size() > 64 || s.front() == '.' || s.back() == '.') return false;
  for (char c : s)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.')) return false;
  return true;
}

std::string text(DcmDataset& ds, const DcmTagKey& tag) {
  OFString v;
  if (ds.findAndGetOFStringArray(tag, v).bad()) return {};
  std::string s(v.c_str());
  // Routing fields go into logs and job files: printable characters only.
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// TLS layer for one role, from PEM files; throws Error(invalid_input) naming the file.
std::unique_ptr<DcmTLSTransportLayer> make_tls(const TlsOptions& o, T_ASC_NetworkRole role) {
  auto tl = std::make_unique<DcmTLSTransportLayer>(role, nullptr, OFTrue);
  auto must = [](OFCondition c, const std::string& what) {
    if (c.bad()) throw Error(ErrorCode::invalid_input, "TLS: " + what + ": " + c.text());
  };
  must(tl->setTLSProfile(TSP_Profile_BCP195), "profile BCP 195");
  must(tl->activateCipherSuites(), "cipher suites");
  must(tl->setPrivateKeyFile(o.private_key.c_str(), DCF_Filetype_PEM), "private key " + o.private_key);
  must(tl->setCertificateFile(o.certificate.c_str(), DCF_Filetype_PEM), "certificate " + o.certificate);
  if (!tl->checkPrivateKeyMatchesCertificate())
    throw Error(ErrorCode::invalid_input, "TLS: the private key " + o.private_key + " does not match " + o.certificate);
  for (const std::string& t : o.trusted) must(tl->addTrustedCertificateFile(t.c_str(), DCF_Filetype_PEM), "trusted certificate " + t);
  tl->setCertificateVerification(o.trusted.empty() ? DCV_ignoreCertificate
                                 : o.require_peer_certificate ? DCV_requireCertificate
                                                              : DCV_checkCertificate);
  return tl;
}

const char* const kTransferSyntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax, UID_BigEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,     UID_JPEGProcess14TransferSyntax,     UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,       UID_JPEGLSLosslessTransferSyntax,    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax, UID_JPEG2000TransferSyntax,          UID_RLELosslessTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax};

class Provider : public DcmSCP {
 public:
  Provider(const StoreProviderOptions& o, const std::atomic<bool>& stop) : o_(o), stop_(stop) {}

 protected:
  OFCondition handleIncomingCommand(T_DIMSE_Message* msg, const DcmPresentationContextInfo& info) override {
    if (msg->CommandField != DIMSE_C_STORE_RQ) return DcmSCP::handleIncomingCommand(msg, info);
    T_DIMSE_C_StoreRQ& req = msg->msg.CStoreRQ;
    DcmDataset* raw = nullptr;
    OFCondition c = receiveSTORERequest(req, info.presentationContextID, raw);
    std::unique_ptr<DcmDataset> ds(raw);
    if (c.bad()) {
      note("instance_refused", std::string("the data set could not be received: ") + c.text());
      return c;
    }
    const Uint16 status = keep(req, *ds, info);
    return sendSTOREResponse(info.presentationContextID, req, status);
  }

  OFBool checkCallingAETitleAccepted(const OFString& aet) override {
    if (o_.allowed_aets.empty()) return OFTrue;
    const std::string a = trim(aet.c_str());
    const bool ok = std::find(o_.allowed_aets.begin(), o_.allowed_aets.end(), a) != o_.allowed_aets.end();
    if (!ok) note("association_refused", "calling AE title '" + a + "' is not allowed");
    return ok;
  }

  OFBool checkCallingHostAccepted(const OFString& host) override {
    if (o_.allowed_hosts.empty()) return OFTrue;
    const std::string h(host.c_str());
    const bool ok = std::find(o_.allowed_hosts.begin(), o_.allowed_hosts.end(), h) != o_.allowed_hosts.end();
    if (!ok) note("association_refused", "peer address " + h + " is not allowed");
    return ok;
  }

  OFBool stopAfterConnectionTimeout() override { return stop_.load() ? OFTrue : OFFalse; }
  OFBool stopAfterCurrentAssociation() override { return stop_.load() ? OFTrue : OFFalse; }

 private:
  static std::string trim(std::string s) {
    while (!s.empty() && s.back() == ' ') s.pop_back();
    while (!s.empty() && s.front() == ' ') s.erase(s.begin());
    return s;
  }

  void note(const std::string& event, const std::string& detail) {
    if (o_.refused) o_.refused(event, detail);
  }

  Uint16 keep(const T_DIMSE_C_StoreRQ& req, DcmDataset& ds, const DcmPresentationContextInfo& info) {
    ReceivedInstance r;
    r.sop_class_uid = text(ds, DCM_SOPClassUID);
    r.sop_instance_uid = text(ds, DCM_SOPInstanceUID);
    r.study_uid = text(ds, DCM_StudyInstanceUID);
    r.series_uid = text(ds, DCM_SeriesInstanceUID);
    r.modality = text(ds, DCM_Modality);
    r.body_part = text(ds, DCM_BodyPartExamined);
    r.series_description = text(ds, DCM_SeriesDescription);
    r.calling_aet = trim(getPeerAETitle().c_str());
    r.peer_host = getPeerIP().c_str();
    if (!valid_uid(r.sop_instance_uid) || r.sop_instance_uid != trim(req.AffectedSOPInstanceUID) ||
        r.sop_class_uid != trim(req.AffectedSOPClassUID)) {
      note("instance_refused", "SOP class or instance UID missing, malformed or not the request's");
      return STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
    }
    if (!valid_uid(r.study_uid) || !valid_uid(r.series_uid)) {
      note("instance_refused", "Study or Series Instance UID missing or malformed");
      return STATUS_STORE_Error_CannotUnderstand;
    }
    std::string final_path;
    try {
      final_path = o_.place(r);
      fs::create_directories(fs::path(final_path).parent_path());
    } catch (const std::exception& e) {
      note("instance_refused", std::string("no place for it: ") + e.what());
      return STATUS_STORE_Refused_OutOfResources;
    }
    const std::string tmp = final_path + ".partial";
    DcmFileFormat ff(&ds);
    const E_TransferSyntax xfer = DcmXfer(info.acceptedTransferSyntax.c_str()).getXfer();
    ff.getMetaInfo()->putAndInsertString(DCM_SourceApplicationEntityTitle, r.calling_aet.c_str());
    OFCondition c = ff.saveFile(tmp.c_str(), xfer, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0, EWM_fileformat);
    bool ok = c.good();
    if (ok) {
      const int fd = ::open(tmp.c_str(), O_RDONLY);
      ok = fd >= 0 && ::fsync(fd) == 0;
      if (fd >= 0) ::close(fd);
    }
    std::error_code ec;
    if (ok) fs::rename(tmp, final_path, ec);
    if (!ok || ec) {
      fs::remove(tmp, ec);
      note("instance_refused", std::string("cannot write it: ") + (c.bad() ? c.text() : "write or rename failed"));
      return STATUS_STORE_Refused_OutOfResources;
    }
    r.file = final_path;
    if (o_.stored) o_.stored(r);
    return STATUS_Success;
  }

  const StoreProviderOptions& o_;
  const std::atomic<bool>& stop_;
};

void require(OFCondition c, const std::string& what) {
  if (c.bad()) throw Error(ErrorCode::io, what + ": " + c.text());
}

}  // namespace

Peer Peer::parse(const std::string& t, const std::string& what) {
  const auto at = t.find('@');
  const auto colon = t.rfind(':');
  Peer p;
  if (at == std::string::npos || colon == std::string::npos || colon < at)
    throw Error(ErrorCode::invalid_input, what + " '" + t + "': expected AET@HOST:PORT");
  p.aet = t.substr(0, at);
  p.host = t.substr(at + 1, colon - at - 1);
  const std::string port = t.substr(colon + 1);
  if (p.aet.empty() || p.aet.size() > 16 || p.host.empty() || port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    throw Error(ErrorCode::invalid_input, what + " '" + t + "': expected AET@HOST:PORT (AE title of 1-16 characters)");
  p.port = std::stoi(port);
  if (p.port < 1 || p.port > 65535) throw Error(ErrorCode::invalid_input, what + " '" + t + "': port out of range");
  return p;
}

std::string Peer::str() const {
  return aet + "@" + host + ":" + std::to_string(port);
}

void run_store_provider(const StoreProviderOptions& o, const std::atomic<bool>& stop) {
  quiet_dcmtk();
  if (!o.place) throw Error(ErrorCode::internal, "store provider without a place for instances");
  Provider scp(o, stop);
  DcmSCPConfig& cfg = scp.getConfig();
  cfg.setAETitle(o.aet.c_str());
  cfg.setPort(static_cast<Uint16>(o.port));
  cfg.setConnectionBlockingMode(DUL_NOBLOCK);
  cfg.setConnectionTimeout(1);
  cfg.setACSETimeout(static_cast<Uint32>(o.timeout_seconds));
  cfg.setDIMSETimeout(static_cast<Uint32>(o.timeout_seconds));
  cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  cfg.setHostLookupEnabled(OFFalse);
  OFList<OFString> verification;
  verification.push_back(UID_LittleEndianExplicitTransferSyntax);
  verification.push_back(UID_LittleEndianImplicitTransferSyntax);
  require(cfg.addPresentationContext(UID_VerificationSOPClass, verification), "C-ECHO presentation context");
  OFList<OFString> xfers;
  for (const char* x : kTransferSyntaxes) xfers.push_back(x);
  // The image storage SOP classes (CT, MR, PET, enhanced and legacy-converted ...): what a
  // segmentation node receives; all 186 storage classes exceed an association's 128 contexts.
  for (int i = 0; i < numberOfDcmImageSOPClassUIDs; ++i)
    require(cfg.addPresentationContext(dcmImageSOPClassUIDs[i], xfers), "storage presentation contexts");
  std::unique_ptr<DcmTLSTransportLayer> tls;
  if (o.tls.enabled()) {
    tls = make_tls(o.tls, NET_ACCEPTOR);
    cfg.setTransportLayer(tls.get());
  }
  const OFCondition c = scp.listen();
  if (o.tls.enabled()) cfg.setTransportLayer(nullptr);
  if (c.bad() && !stop.load())
    throw Error(ErrorCode::io, "DICOM listener on port " + std::to_string(o.port) + ": " + c.text());
}

namespace {

// One association to `peer` proposing `contexts` (abstract syntax -> transfer syntaxes).
// DcmSCU keeps its TLS switch protected.
class Scu : public DcmSCU {
 public:
  using DcmSCU::useSecureConnection;
};

struct Association {
  Scu scu;
  std::unique_ptr<DcmTLSTransportLayer> tls;
  ~Association() {
    if (scu.isConnected()) scu.releaseAssociation();
  }
};

std::string open_association(Association& a, const Peer& peer, const SendOptions& o,
                             const std::vector<std::pair<std::string, std::vector<std::string>>>& contexts) {
  quiet_dcmtk();
  a.scu.setAETitle(o.calling_aet.c_str());
  a.scu.setPeerAETitle(peer.aet.c_str());
  a.scu.setPeerHostName(peer.host.c_str());
  a.scu.setPeerPort(static_cast<Uint16>(peer.port));
  a.scu.setACSETimeout(static_cast<Uint32>(o.timeout_seconds));
  a.scu.setDIMSETimeout(static_cast<Uint32>(o.timeout_seconds));
  a.scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  a.scu.setConnectionTimeout(o.timeout_seconds);
  for (const auto& [abstract, xfers] : contexts) {
    OFList<OFString> l;
    for (const auto& x : xfers) l.push_back(x.c_str());
    if (a.scu.addPresentationContext(abstract.c_str(), l).bad()) return "too many presentation contexts";
  }
  OFCondition c = a.scu.initNetwork();
  if (c.bad()) return std::string("network: ") + c.text();
  if (o.tls.enabled()) {  // after initNetwork(): the layer attaches to the network it created
    try {
      a.tls = make_tls(o.tls, NET_REQUESTOR);
    } catch (const Error& e) {
      return e.what();
    }
    if (c = a.scu.useSecureConnection(a.tls.get()); c.bad()) return std::string("TLS could not be set up: ") + c.text();
  }
  c = a.scu.negotiateAssociation();
  if (c.bad()) return "association with " + peer.str() + ": " + c.text();
  return {};
}

}  // namespace

std::string echo(const Peer& peer, const SendOptions& o) {
  Association a;
  if (auto e = open_association(a, peer, o, {{UID_VerificationSOPClass, {UID_LittleEndianExplicitTransferSyntax,
                                                                          UID_LittleEndianImplicitTransferSyntax}}});
      !e.empty())
    return e;
  const OFCondition c = a.scu.sendECHORequest(0);
  if (c.bad()) return std::string("C-ECHO: ") + c.text();
  return {};
}

std::string store(const Peer& peer, const std::vector<std::string>& files, const SendOptions& o) {
  if (files.empty()) return {};
  // Read every file first: the presentation contexts come from their SOP classes and syntaxes.
  struct Item {
    std::string file, sop_class;
    E_TransferSyntax xfer;
    std::unique_ptr<DcmFileFormat> ff;
  };
  std::vector<Item> items;
  std::vector<std::pair<std::string, std::vector<std::string>>> contexts;
  for (const std::string& f : files) {
    Item it{f, {}, EXS_Unknown, std::make_unique<DcmFileFormat>()};
    if (it.ff->loadFile(f.c_str()).bad()) return "cannot read " + f;
    OFString sop;
    it.ff->getDataset()->findAndGetOFString(DCM_SOPClassUID, sop);
    it.sop_class = sop.c_str();
    it.xfer = it.ff->getDataset()->getOriginalXfer();
    const std::string x = DcmXfer(it.xfer).getXferID();
    std::vector<std::string> ts{x};
    if (x != UID_LittleEndianExplicitTransferSyntax) ts.push_back(UID_LittleEndianExplicitTransferSyntax);
    if (x != UID_LittleEndianImplicitTransferSyntax) ts.push_back(UID_LittleEndianImplicitTransferSyntax);
    const bool known = std::any_of(contexts.begin(), contexts.end(),
                                   [&](const auto& c) { return c.first == it.sop_class && c.second.front() == x; });
    if (!known) contexts.emplace_back(it.sop_class, ts);
    items.push_back(std::move(it));
  }
  Association a;
  if (auto e = open_association(a, peer, o, contexts); !e.empty()) return e;
  for (Item& it : items) {
    T_ASC_PresentationContextID id =
        a.scu.findPresentationContextID(it.sop_class.c_str(), DcmXfer(it.xfer).getXferID());
    if (id == 0) id = a.scu.findAnyPresentationContextID(it.sop_class.c_str(), DcmXfer(it.xfer).getXferID());
    if (id == 0) return peer.str() + " accepted no presentation context for " + fs::path(it.file).filename().string();
    Uint16 status = 0;
    const OFCondition c = a.scu.sendSTORERequest(id, "", it.ff->getDataset(), status);
    if (c.bad()) return std::string("C-STORE: ") + c.text();
    // 0x0000 success; 0xB000, 0xB006, 0xB007 warnings (stored).
    if (status != 0x0000 && (status & 0xF000) != 0xB000) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%04X", status);
      return peer.str() + " refused " + fs::path(it.file).filename().string() + " with status " + buf;
    }
  }
  return {};
}

}  // namespace voxinfer::dicomnet
