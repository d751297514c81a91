// Output safety: a full disk (simulated by a file-size limit, which fails write() the
// same way) is an error and commits nothing, in every writer; output paths that are
// folders, in missing or unwritable folders, or near NAME_MAX long; outputs that name an input.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <climits>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "io_test_util.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/io/output_file.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::string error_of(const std::function<void()>& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

Volume random_volume(std::int64_t n) {
  Volume v(1, n, n, n, Geometry{});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1000.f, 1000.f);
  float* d = v.channel(0);
  for (std::int64_t i = 0; i < n * n * n; ++i) d[i] = u(rng);
  return v;
}

std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

// Limits the size of any file this process writes (as a full disk would), for one scope.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit r = saved_;
    r.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &r);
  }
  ~FileSizeLimit() { setrlimit(RLIMIT_FSIZE, &saved_); }

 private:
  rlimit saved_{};
};

TEST(OutputFile, FullDiskIsAnErrorAndCommitsNothing) {
  TempDir dir("out_full");
  const Volume v = random_volume(48);  // 442 KB of float32
  // A first small write sets the process up (SIGXFSZ ignored, as a file-size limit must
  // not kill the process).
  write_image(dir / "small.nii", Volume(1, 2, 2, 2, Geometry{}));
  fs::remove(dir / "small.nii");
  struct Case {
    const char* name;
    bool compress;
  };
  for (const Case& c : {Case{"a.nii", false}, Case{"a.nii.gz", true}, Case{"a.nrrd", true}, Case{"a.nrrd", false},
                        Case{"a.mha", true}, Case{"a.mha", false}, Case{"a.npy", false}}) {
    // The complete file's size, then limits that cut it anywhere down to the last byte.
    WriteOptions whole;
    whole.compress = c.compress;
    whole.pixel_type = PixelType::float32;
    if (std::string(c.name) == "a.npy")
      write_npy(dir / c.name, v.data);
    else
      write_image(dir / c.name, v, whole);
    const auto size = static_cast<rlim_t>(fs::file_size(dir / c.name));
    fs::remove(dir / c.name);
    for (rlim_t limit : {rlim_t{0}, rlim_t{1000}, rlim_t{64 << 10}, size / 2, size - 4, size - 1}) {
      ErrorCode code{};
      std::string msg;
      {
        FileSizeLimit l(limit);
        WriteOptions o;
        o.compress = c.compress;
        o.pixel_type = PixelType::float32;
        msg = error_of(
            [&] {
              if (std::string(c.name) == "a.npy")
                write_npy(dir / c.name, v.data);
              else
                write_image(dir / c.name, v, o);
            },
            &code);
      }
      EXPECT_EQ(code, ErrorCode::io) << c.name << " limit " << limit << ": " << msg;
      EXPECT_NE(msg.find("write failed"), std::string::npos) << c.name << " limit " << limit << ": " << msg;
      EXPECT_TRUE(leftovers(dir.path()).empty())
          << c.name << " limit " << limit << ": " << leftovers(dir.path()).front();
    }
    // Without the limit the same write succeeds (the checks accept a complete file).
    WriteOptions o;
    o.compress = c.compress;
    o.pixel_type = PixelType::float32;
    if (std::string(c.name) == "a.npy")
      write_npy(dir / c.name, v.data);
    else
      write_image(dir / c.name, v, o);
    EXPECT_TRUE(fs::exists(dir / c.name)) << c.name;
    if (std::string(c.name) != "a.npy") {
      EXPECT_EQ(read_image(dir / c.name).at(0, 47, 47, 47), v.at(0, 47, 47, 47)) << c.name;
    }
    fs::remove(dir / c.name);
  }
  // Label maps (integer voxel types) too.
  Volume labels(1, 64, 64, 64, Geometry{});
  for (std::int64_t i = 0; i < labels.data.numel(); ++i) labels.channel(0)[i] = static_cast<float>((i * 7919) % 5);
  {
    FileSizeLimit l(4096);
    WriteOptions o;
    o.pixel_type = PixelType::uint8;
    EXPECT_NE(error_of([&] { write_image(dir / "labels.nii", labels, o); }).find("write failed"), std::string::npos);
    EXPECT_NE(error_of([&] { write_file_atomic(dir / "stats.json", std::string(10000, 'x')); }).find("write failed"),
              std::string::npos);
  }
  EXPECT_TRUE(leftovers(dir.path()).empty());
}

TEST(OutputFile, BadOutputPathsGiveOneClearError) {
  TempDir dir("out_paths");
  const Volume v(1, 2, 2, 2, Geometry{});
  ErrorCode code{};
  fs::create_directories(dir.path() / "folder.nii.gz");
  std::string msg = error_of([&] { write_image(dir / "folder.nii.gz", v); }, &code);
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(msg.find("is a folder"), std::string::npos) << msg;
  EXPECT_TRUE(fs::is_directory(dir.path() / "folder.nii.gz"));

  msg = error_of([&] { write_image(dir / "missing/x.nii.gz", v); }, &code);
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  msg = error_of([&] { write_file_atomic(dir / "missing/x.json", "{}"); }, &code);
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;

  // /proc takes no new files, even from root.
  msg = error_of([&] { write_image("/proc/voxinfer-out.nii.gz", v); }, &code);
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(msg.find("/proc"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("move the finished"), std::string::npos) << msg;
}

TEST(OutputFile, NamesNearNameMaxCanBeWritten) {
  TempDir dir("out_long");
  const Volume v(1, 2, 2, 2, Geometry{});
  for (const char* ext : {".nii.gz", ".nrrd", ".json"}) {
    const std::string name = std::string(NAME_MAX - std::strlen(ext), 'n') + ext;
    if (std::string(ext) == ".json")
      write_file_atomic(dir / name, "{}");
    else
      write_image(dir / name, v);
    EXPECT_TRUE(fs::exists(dir / name)) << ext;
    if (std::string(ext) != ".json") {
      EXPECT_EQ(read_image(dir / name).nx(), 2);
    }
    fs::remove(dir / name);
  }
  EXPECT_TRUE(leftovers(dir.path()).empty());
}

TEST(OutputFile, AnOutputNamingAnInputIsRefused) {
  TempDir dir("out_same");
  write_file_atomic(dir / "in.nii", "x");
  fs::create_symlink(dir / "in.nii", dir.path() / "link.nii");
  fs::create_hard_link(dir / "in.nii", dir.path() / "hard.nii");
  for (const char* out : {"in.nii", "link.nii", "hard.nii"}) {
    ErrorCode code{};
    const std::string msg = error_of([&] { refuse_overwriting_inputs({dir / "in.nii"}, {"", dir / out}); }, &code);
    EXPECT_EQ(code, ErrorCode::invalid_input) << out;
    EXPECT_NE(msg.find("refusing to overwrite"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(refuse_overwriting_inputs({dir / "in.nii"}, {dir / "other.nii", ""}));
  EXPECT_TRUE(same_file(dir / "in.nii", (dir.path() / "." / "in.nii").string()));
  EXPECT_FALSE(same_file(dir / "in.nii", dir / "nothing"));
}

}  // namespace
}  // namespace voxinfer
