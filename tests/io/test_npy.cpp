#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"
#include "voxinfer/io/npy.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("voxinfer_npy_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a hand-made .npy: magic, version, header (padded to 16), then data bytes.
  std::string handmade(const std::string& name, int major, const std::string& dict, const std::string& data) {
    std::string header = dict;
    const std::size_t pre = 6 + 2 + (major == 1 ? 2 : 4);
    while ((pre + header.size() + 1) % 16) header += ' ';
    header += '\n';
    std::string bytes = "\x93NUMPY";
    bytes += static_cast<char>(major);
    bytes += '\0';
    const auto n = static_cast<std::uint32_t>(header.size());
    for (int i = 0; i < (major == 1 ? 2 : 4); ++i) bytes += static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header + data;
    std::ofstream(path(name), std::ios::binary) << bytes;
    return path(name);
  }
  fs::path dir_;
};

template <typename T>
void round_trip(const std::string& file, const Shape& shape) {
  Tensor t(shape, dtype_of_v<T>);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<T>()[i] = static_cast<T>((i * 7) % 13 - (std::is_signed_v<T> ? 6 : 0));
  write_npy(file, t);
  Tensor r = read_npy(file);
  ASSERT_EQ(r.dtype(), t.dtype());
  ASSERT_EQ(r.shape(), t.shape());
  EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0);
}

TEST_F(Npy, RoundTripsEveryDtype) {
  round_trip<float>(path("f.npy"), Shape{2, 3, 5});
  round_trip<double>(path("d.npy"), Shape{4});
  round_trip<std::int64_t>(path("l.npy"), Shape{1, 1, 3});
  round_trip<std::int32_t>(path("i.npy"), Shape{7, 2});
  round_trip<std::int16_t>(path("s.npy"), Shape{3});
  round_trip<std::uint8_t>(path("u.npy"), Shape{2, 2, 2, 2});
  round_trip<float>(path("scalar.npy"), Shape{});
  round_trip<float>(path("empty.npy"), Shape{0, 3});
  Tensor b(Shape{3}, DType::boolean);
  b.data<bool>()[1] = true;
  write_npy(path("b.npy"), b);
  Tensor rb = read_npy(path("b.npy"));
  EXPECT_EQ(rb.dtype(), DType::boolean);
  EXPECT_FALSE(rb.data<bool>()[0]);
  EXPECT_TRUE(rb.data<bool>()[1]);
}

TEST_F(Npy, WrittenHeaderIsAlignedAndNoPartialFileOnError) {
  write_npy(path("a.npy"), test::random_tensor(Shape{2, 2}, 1));
  EXPECT_EQ((fs::file_size(path("a.npy")) - 16u) % 64u, 0u);  // data starts on a 64-byte boundary
  EXPECT_THROW(write_npy(path("missing_dir/a.npy"), test::random_tensor(Shape{2}, 1)), Error);
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().filename().string().find(".voxinfer-partial"), std::string::npos);
}

TEST_F(Npy, ReadsBigEndian) {
  // >i4 values 1, -2 and >f4 value 1.5 (0x3FC00000)
  std::string data = std::string("\x00\x00\x00\x01\xff\xff\xff\xfe", 8);
  Tensor t = read_npy(handmade("be.npy", 1, "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", data));
  EXPECT_EQ(t.data<std::int32_t>()[0], 1);
  EXPECT_EQ(t.data<std::int32_t>()[1], -2);
  Tensor f = read_npy(handmade("bef.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                               std::string("\x3f\xc0\x00\x00", 4)));
  EXPECT_EQ(f.data<float>()[0], 1.5f);
}

TEST_F(Npy, ReadsFortranOrder) {
  // shape (2, 3) Fortran order: memory holds columns: a00 a10 a01 a11 a02 a12
  std::string data;
  for (std::int32_t v : {0, 10, 1, 11, 2, 12}) data.append(reinterpret_cast<const char*>(&v), 4);
  Tensor t = read_npy(handmade("fo.npy", 1, "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", data));
  ASSERT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.at<std::int32_t>(0, 2), 2);
  EXPECT_EQ(t.at<std::int32_t>(1, 0), 10);
  EXPECT_EQ(t.at<std::int32_t>(1, 2), 12);
}

TEST_F(Npy, ReadsVersions2And3) {
  std::string data;
  for (float v : {1.f, 2.f}) data.append(reinterpret_cast<const char*>(&v), 4);
  for (int major : {2, 3}) {
    Tensor t = read_npy(handmade("v" + std::to_string(major) + ".npy", major,
                                 "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data));
    EXPECT_EQ(t.data<float>()[1], 2.f);
  }
}

TEST_F(Npy, MalformedFilesGiveClearErrors) {
  auto expect_error = [](const std::string& file, const std::string& fragment) {
    try {
      read_npy(file);
      FAIL() << "no error for " << file;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_input);
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  };
  expect_error(path("nope.npy"), "no such file");
  std::ofstream(path("magic.npy")) << "PK\x03\x04 this is a zip";
  expect_error(path("magic.npy"), "bad magic");
  expect_error(handmade("trunc.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", std::string(8, '\0')),
               "truncated");
  // A header claiming 2^40 elements must fail before allocating.
  expect_error(handmade("huge.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }", ""),
               "truncated");
  expect_error(handmade("dtype.npy", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')),
               "not supported");
  expect_error(handmade("noshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, }", ""), "shape");
  std::string short_header = "\x93NUMPY\x01";
  std::ofstream(path("short.npy"), std::ios::binary) << short_header;
  expect_error(path("short.npy"), "bad magic");
}

}  // namespace
}  // namespace voxinfer
