// Output files: AtomicFile, the path checks of output_file.h, and the table of temporary
// files that a signal handler removes before the process ends.
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "io/atomic_file.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/output_file.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

// Temporaries being written. The handler may run at any moment, so a slot's path is only
// read while its state says it is complete (async-signal-safe: atomics and unlink only).
constexpr int kSlots = 64;
constexpr int kFree = 0, kFilling = 1, kReady = 2;
struct Slot {
  std::atomic<int> state{kFree};
  char path[PATH_MAX + 1] = {};
};
std::array<Slot, kSlots> g_slots;

extern "C" void remove_temporaries_and_die(int sig) {
  for (Slot& s : g_slots)
    if (s.state.load() == kReady) ::unlink(s.path);
  // SA_RESETHAND restored the default action: end the process the way the signal asked.
  ::raise(sig);
}

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      // Only where nobody else handles the signal (an embedding program or Python keep theirs).
      if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) continue;
      struct sigaction sa {};
      sa.sa_handler = remove_temporaries_and_die;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESETHAND;
      ::sigaction(sig, &sa, nullptr);
    }
    // A file-size limit (ulimit -f) makes write() fail with EFBIG instead of killing us.
    struct sigaction old {};
    if (::sigaction(SIGXFSZ, nullptr, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO)) {
      struct sigaction sa {};
      sa.sa_handler = SIG_IGN;
      sigemptyset(&sa.sa_mask);
      ::sigaction(SIGXFSZ, &sa, nullptr);
    }
  });
}

int register_temporary(const std::string& path) {
  if (path.size() > PATH_MAX) return -1;
  for (int i = 0; i < kSlots; ++i) {
    int expected = kFree;
    Slot& s = g_slots[static_cast<std::size_t>(i)];
    if (s.state.compare_exchange_strong(expected, kFilling)) {
      std::memcpy(s.path, path.c_str(), path.size() + 1);
      s.state.store(kReady);
      return i;
    }
  }
  return -1;  // more temporaries at once than slots: this one is not removed on a signal
}

void unregister_temporary(int slot) {
  if (slot >= 0) g_slots[static_cast<std::size_t>(slot)].state.store(kFree);
}

std::string folder_of(const std::string& path) {
  const fs::path p(path);
  return p.has_parent_path() ? p.parent_path().string() : std::string(".");
}

// A temporary name in the output's folder that keeps the output's extension (ITK chooses
// the format by it) and stays within NAME_MAX however long the output's name is.
std::string temporary_name(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  const std::string name = fs::path(path).filename().string();
  const std::string prefix = ".voxinfer-partial-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-";
  constexpr std::size_t kNameMax = NAME_MAX;
  const std::size_t keep = prefix.size() + name.size() <= kNameMax ? name.size() : kNameMax - prefix.size();
  return (fs::path(folder_of(path)) / (prefix + name.substr(name.size() - keep))).string();
}

}  // namespace

void check_output_path(const std::string& path) {
  if (path.empty()) throw Error(ErrorCode::io, "empty output file name");
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(ErrorCode::io, path + ": is a folder; give the output a file name");
  const std::string dir = folder_of(path);
  if (!fs::exists(dir, ec)) throw Error(ErrorCode::io, path + ": cannot write: folder '" + dir + "' does not exist");
  if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::io, path + ": cannot write: '" + dir + "' is not a folder");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(ErrorCode::io, path + ": cannot write in folder '" + dir + "': " + std::strerror(errno));
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(a, ec) && fs::exists(b, ec) && fs::equivalent(a, b, ec) && !ec;
}

void refuse_overwriting_inputs(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs) {
  for (const std::string& in : inputs)
    for (const std::string& out : outputs)
      if (!in.empty() && !out.empty() && same_file(in, out))
        throw Error(ErrorCode::invalid_input, out + ": is the input; refusing to overwrite it");
}

void check_outputs(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs) {
  refuse_overwriting_inputs(inputs, outputs);
  for (const std::string& out : outputs)
    if (!out.empty()) check_output_path(out);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

AtomicFile::AtomicFile(const std::string& path, bool open_stream) : path_(path) {
  check_output_path(path);
  install_handlers();
  temp_ = temporary_name(path);
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    throw Error(ErrorCode::io,
                path + ": cannot create a file in folder '" + folder_of(path) + "': " + std::strerror(errno));
  slot_ = register_temporary(temp_);
  if (!open_stream) {
    ::close(fd);
    return;
  }
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    ::close(fd);
    ::unlink(temp_.c_str());
    unregister_temporary(slot_);
    throw Error(ErrorCode::io, path + ": cannot open for writing");
  }
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) ::unlink(temp_.c_str());
  unregister_temporary(slot_);
}

void AtomicFile::fail(const std::string& why) const {
  throw Error(ErrorCode::io, path_ + ": write failed: " + why);
}

void AtomicFile::write(const void* data, std::size_t n) {
  if (n && std::fwrite(data, 1, n, file_) != n) fail(std::string(std::strerror(errno)) + " (disk full?)");
}

void AtomicFile::commit() {
  if (file_) {
    errno = 0;
    const bool flushed = std::fflush(file_) == 0 && !std::ferror(file_);
    const int flush_errno = errno;
    const bool closed = std::fclose(file_) == 0;
    const int close_errno = errno;
    file_ = nullptr;
    const int e = !flushed ? flush_errno : close_errno;
    if (!flushed || !closed) fail(std::string(e ? std::strerror(e) : "short write") + " (disk full?)");
  }
  if (::rename(temp_.c_str(), path_.c_str()) != 0)
    throw Error(ErrorCode::io, path_ + ": cannot replace the file with the finished output: " + std::strerror(errno));
  committed_ = true;
}

}  // namespace voxinfer
