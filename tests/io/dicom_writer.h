// A minimal DICOM Part 10 writer (explicit VR little endian) for self-contained test
// fixtures: synthetic CT/MR slices with chosen geometry, bit layout and pixel values.
// Written for the tests from the DICOM standard (PS3.5 7.1.2, PS3.10 7.1); it knows only
// the handful of attributes the fixtures need.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace voxinfer::test {

class DicomWriter {
 public:
  void str(std::uint16_t group, std::uint16_t element, const char* vr, std::string value) {
    const bool ui = std::string(vr) == "UI";
    if (value.size() % 2) value += ui ? '\0' : ' ';
    put(group, element, vr, value);
  }
  void us(std::uint16_t group, std::uint16_t element, std::uint16_t v) {
    put(group, element, "US", std::string(reinterpret_cast<const char*>(&v), 2));
  }
  void ow(std::uint16_t group, std::uint16_t element, const std::vector<std::uint16_t>& words) {
    put(group, element, "OW", std::string(reinterpret_cast<const char*>(words.data()), words.size() * 2));
  }
  void erase(std::uint16_t group, std::uint16_t element) { elements_.erase(key(group, element)); }
  // An element written as given after its tag: VR, length and value already encoded (for
  // undefined lengths, nested sequences and encapsulated pixel data).
  void raw(std::uint16_t group, std::uint16_t element, std::string encoded) { put(group, element, "", encoded); }
  std::string transfer_syntax = "1.2.840.10008.1.2.1";

  // Writes preamble, "DICM", the file meta group and the dataset in tag order.
  void save(const std::string& path, const std::string& sop_class, const std::string& sop_instance) const {
    std::string meta;
    append(meta, 0x0002, 0x0001, "OB", std::string("\0\1", 2));
    append(meta, 0x0002, 0x0002, "UI", pad_ui(sop_class));
    append(meta, 0x0002, 0x0003, "UI", pad_ui(sop_instance));
    append(meta, 0x0002, 0x0010, "UI", pad_ui(transfer_syntax));
    std::string out(128, '\0');
    out += "DICM";
    const auto len = static_cast<std::uint32_t>(meta.size());
    append(out, 0x0002, 0x0000, "UL", std::string(reinterpret_cast<const char*>(&len), 4));
    out += meta;
    for (const auto& [k, e] : elements_) append(out, static_cast<std::uint16_t>(k >> 16), static_cast<std::uint16_t>(k & 0xffff), e.first.c_str(), e.second);
    std::ofstream(path, std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
  }

 private:
  static std::uint32_t key(std::uint16_t g, std::uint16_t e) { return (std::uint32_t{g} << 16) | e; }
  static std::string pad_ui(std::string s) {
    if (s.size() % 2) s += '\0';
    return s;
  }
  void put(std::uint16_t g, std::uint16_t e, const char* vr, const std::string& bytes) { elements_[key(g, e)] = {vr, bytes}; }
  static void append(std::string& out, std::uint16_t g, std::uint16_t e, const char* vr, const std::string& value) {
    out.append(reinterpret_cast<const char*>(&g), 2);
    out.append(reinterpret_cast<const char*>(&e), 2);
    if (!*vr) {
      out += value;
      return;
    }
    out.append(vr, 2);
    const std::string v(vr);
    if (v == "OB" || v == "OW" || v == "SQ" || v == "UN" || v == "UT") {
      out.append(2, '\0');
      const auto n = static_cast<std::uint32_t>(value.size());
      out.append(reinterpret_cast<const char*>(&n), 4);
    } else {
      const auto n = static_cast<std::uint16_t>(value.size());
      out.append(reinterpret_cast<const char*>(&n), 2);
    }
    out += value;
  }
  std::map<std::uint32_t, std::pair<std::string, std::string>> elements_;
};

// One synthetic slice: geometry, bit layout and stored values (row-major, rows x columns).
struct SliceSpec {
  std::string series_uid = "1.2.826.0.1.3680043.9.9999.1";
  std::string study_uid = "1.2.826.0.1.3680043.9.9999.2";
  std::string frame_of_reference = "1.2.826.0.1.3680043.9.9999.3";
  std::string sop_instance = "1.2.826.0.1.3680043.9.9999.4.1";
  std::string modality = "CT";
  std::string patient_name = "Doe^Jane";
  int instance = 1;
  int rows = 4, columns = 5;
  double position[3] = {0, 0, 0};
  double orientation[6] = {1, 0, 0, 0, 1, 0};
  std::string pixel_spacing = "0.5\\0.75";  // row spacing \ column spacing
  std::string slice_thickness = "2.5";
  std::uint16_t bits_stored = 16, high_bit = 15, pixel_representation = 0;
  std::string slope = "1", intercept = "0";
  std::string number_of_frames;  // (0028,0008), absent when empty
  bool with_pixels = true;
  std::vector<std::uint16_t> pixels;  // stored words; empty: every pixel = instance
  // Compressed pixel data: the transfer syntax and one encapsulated fragment per frame.
  std::string transfer_syntax;
  std::vector<std::string> fragments;
  // Further elements: tag, VR and value (VR empty: the value is encoded already, see raw()).
  std::vector<std::tuple<std::uint16_t, std::uint16_t, std::string, std::string>> extra;
};

inline std::string le32(std::uint32_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 4);
}

// Encapsulated pixel data (PS3.5 A.4): an empty offset table, then one item per fragment.
inline std::string encapsulated(const std::vector<std::string>& fragments) {
  std::string v = std::string("OB\0\0", 4) + le32(0xFFFFFFFFu);
  v += std::string("\xFE\xFF\x00\xE0", 4) + le32(0);
  for (std::string f : fragments) {
    if (f.size() % 2) f += '\0';
    v += std::string("\xFE\xFF\x00\xE0", 4) + le32(static_cast<std::uint32_t>(f.size())) + f;
  }
  return v + std::string("\xFE\xFF\xDD\xE0", 4) + le32(0);
}

inline std::string ds_list(const double* v, int n) {
  std::string s;
  char buf[40];
  for (int i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%.6g", v[i]);
    s += (i ? "\\" : "") + std::string(buf);
  }
  return s;
}

inline void write_slice(const std::string& path, const SliceSpec& s) {
  DicomWriter w;
  const std::string ct_image = "1.2.840.10008.5.1.4.1.1.2";
  w.str(0x0008, 0x0016, "UI", ct_image);
  w.str(0x0008, 0x0018, "UI", s.sop_instance);
  w.str(0x0008, 0x0060, "CS", s.modality);
  w.str(0x0010, 0x0010, "PN", s.patient_name);
  w.str(0x0010, 0x0020, "LO", "PID-0001");
  w.str(0x0018, 0x0050, "DS", s.slice_thickness);
  w.str(0x0020, 0x000D, "UI", s.study_uid);
  w.str(0x0020, 0x000E, "UI", s.series_uid);
  w.str(0x0020, 0x0011, "IS", "7");
  w.str(0x0020, 0x0013, "IS", std::to_string(s.instance));
  w.str(0x0020, 0x0032, "DS", ds_list(s.position, 3));
  w.str(0x0020, 0x0037, "DS", ds_list(s.orientation, 6));
  w.str(0x0020, 0x0052, "UI", s.frame_of_reference);
  w.us(0x0028, 0x0002, 1);
  if (!s.number_of_frames.empty()) w.str(0x0028, 0x0008, "IS", s.number_of_frames);
  w.str(0x0028, 0x0004, "CS", "MONOCHROME2");
  w.us(0x0028, 0x0010, static_cast<std::uint16_t>(s.rows));
  w.us(0x0028, 0x0011, static_cast<std::uint16_t>(s.columns));
  w.str(0x0028, 0x0030, "DS", s.pixel_spacing);
  w.us(0x0028, 0x0100, 16);
  w.us(0x0028, 0x0101, s.bits_stored);
  w.us(0x0028, 0x0102, s.high_bit);
  w.us(0x0028, 0x0103, s.pixel_representation);
  w.str(0x0028, 0x1052, "DS", s.intercept);
  w.str(0x0028, 0x1053, "DS", s.slope);
  for (const auto& [g, e, vr, value] : s.extra) {
    if (vr.empty())
      w.raw(g, e, value);
    else
      w.str(g, e, vr.c_str(), value);
  }
  if (!s.transfer_syntax.empty()) w.transfer_syntax = s.transfer_syntax;
  if (!s.fragments.empty()) {
    w.raw(0x7FE0, 0x0010, encapsulated(s.fragments));
  } else if (s.with_pixels) {
    std::vector<std::uint16_t> px = s.pixels;
    if (px.empty()) px.assign(static_cast<std::size_t>(s.rows * s.columns), static_cast<std::uint16_t>(s.instance));
    w.ow(0x7FE0, 0x0010, px);
  }
  w.save(path, ct_image, s.sop_instance);
}

}  // namespace voxinfer::test
