// Helpers of the DICOM SEG tests: temporary folders, dciodvfy validation, voxel and
// geometry comparison.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "voxinfer/core/volume.h"

namespace voxinfer::test {

inline std::filesystem::path fresh_dir(const std::string& name) {
  const std::filesystem::path d = std::filesystem::temp_directory_path() / ("voxinfer_test_dicom_seg_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// Output of dciodvfy on a file, or nothing (and `found` false) when it is not installed.
inline std::string dciodvfy(const std::filesystem::path& file, bool& found) {
  found = std::system("command -v dciodvfy > /dev/null 2>&1") == 0;
  if (!found) return {};
  const std::string cmd = "dciodvfy '" + file.string() + "' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  char buf[4096];
  while (pipe && std::fgets(buf, sizeof buf, pipe.get())) out += buf;
  return out;
}

// Fails the test when dciodvfy reports any error; skips the check (with a message) without it.
inline void expect_valid_dicom(const std::filesystem::path& file) {
  bool found = false;
  const std::string out = dciodvfy(file, found);
  if (!found) {
    std::printf("dciodvfy not installed (Debian package dicom3tools): %s not validated\n", file.string().c_str());
    return;
  }
  std::istringstream lines(out);
  std::string line, errors;
  for (; std::getline(lines, line);)
    if (line.rfind("Error", 0) == 0) errors += line + "\n";
  EXPECT_TRUE(errors.empty()) << "dciodvfy errors for " << file << ":\n" << errors << "\nfull output:\n" << out;
}

// Frames a SEG must hold: one per (segment, slice) where the segment has a voxel.
inline std::int64_t expected_frames(const Volume& labels) {
  std::int64_t n = 0;
  for (std::int64_t z = 0; z < labels.nz(); ++z) {
    std::set<float> values;
    const float* p = labels.channel(0) + z * labels.ny() * labels.nx();
    for (std::int64_t i = 0; i < labels.ny() * labels.nx(); ++i)
      if (p[i] != 0) values.insert(p[i]);
    n += static_cast<std::int64_t>(values.size());
  }
  return n;
}

inline void expect_same_geometry(const Geometry& a, const Geometry& b) {
  EXPECT_LT((a.origin - b.origin).cwiseAbs().maxCoeff(), 1e-4) << a.origin.transpose() << " vs " << b.origin.transpose();
  EXPECT_LT((a.spacing - b.spacing).cwiseAbs().maxCoeff(), 1e-4) << a.spacing.transpose() << " vs " << b.spacing.transpose();
  EXPECT_LT((a.direction - b.direction).cwiseAbs().maxCoeff(), 1e-5) << a.direction << "\nvs\n" << b.direction;
}

inline std::int64_t differing_voxels(const Volume& a, const Volume& b) {
  EXPECT_EQ(a.data.shape(), b.data.shape());
  if (a.data.shape() != b.data.shape()) return -1;
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < a.data.numel(); ++i) n += a.data.data<float>()[i] != b.data.data<float>()[i];
  return n;
}

// A Python that has pydicom (Debian: python3-pydicom), or empty.
inline std::string python_with_pydicom() {
  for (const char* py : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(py) + " -c 'import pydicom, numpy' > /dev/null 2>&1").c_str()) == 0) return py;
  return {};
}

// Decodes a BINARY SEG with pydicom (tests/io/seg_pydicom_frames.py) and requires every frame
// to lie on a slice of `labels`' grid and to hold exactly the voxels of its segment's label
// value there (`values`: segment number -> label value). Skips with a message without pydicom.
inline void expect_pydicom_agrees(const std::filesystem::path& seg, const Volume& labels, const std::map<int, int>& values) {
  const std::string py = python_with_pydicom();
  if (py.empty()) {
    std::printf("pydicom not installed (Debian package python3-pydicom): %s not read back with it\n", seg.string().c_str());
    return;
  }
  const auto script = std::filesystem::path(VOXINFER_TEST_DATA_DIR).parent_path() / "io" / "seg_pydicom_frames.py";
  const std::string cmd = py + " '" + script.string() + "' '" + seg.string() + "' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  ASSERT_TRUE(pipe) << cmd;
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe.get())) out += buf;
  std::istringstream lines(out);
  std::string line;
  std::int64_t frames = 0;
  const std::int64_t plane = labels.ny() * labels.nx();
  for (; std::getline(lines, line); ++frames) {
    std::istringstream f(line);
    int segment = 0;
    double x = 0, y = 0, z = 0;
    std::int64_t count = -1, sum = -1;
    ASSERT_TRUE(static_cast<bool>(f >> segment >> x >> y >> z >> count >> sum)) << "pydicom: " << out;
    const Eigen::Vector3d index = labels.geometry.physical_to_index(Eigen::Vector3d(x, y, z));
    const auto k = static_cast<std::int64_t>(std::llround(index[2]));
    ASSERT_LT(std::abs(index[0]) + std::abs(index[1]) + std::abs(index[2] - static_cast<double>(k)), 1e-3) << line;
    ASSERT_TRUE(k >= 0 && k < labels.nz()) << line;
    ASSERT_TRUE(values.count(segment)) << line;
    const auto value = static_cast<float>(values.at(segment));
    std::int64_t want_count = 0, want_sum = 0;
    for (std::int64_t i = 0; i < plane; ++i)
      if (labels.channel(0)[k * plane + i] == value) {
        ++want_count;
        want_sum += i;
      }
    EXPECT_EQ(count, want_count) << "frame " << frames + 1 << " (segment " << segment << ", slice " << k << ")";
    EXPECT_EQ(sum, want_sum) << "frame " << frames + 1 << " (segment " << segment << ", slice " << k << ")";
  }
  EXPECT_GT(frames, 0) << "pydicom read no frames: " << out;
}

}  // namespace voxinfer::test
