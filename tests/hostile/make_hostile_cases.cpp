// Writes the hostile inputs of the command-line suite (cases.txt) into one folder: spoilt
// NIfTI/NRRD/MetaImage headers, DICOM series with damaged or lying files, broken models and
// packages, bad .npy files, and a valid package and image as the controls.
#include <sys/stat.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "io/dicom_writer.h"
#include "pipeline/onnx_builder.h"

namespace {

namespace fs = std::filesystem;
using voxinfer::test::SliceSpec;

fs::path root;

void write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

void write_gz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

// NIfTI-1, float32, dim x*y*z, spacing 1, identity sform.
struct Nifti {
  std::string h = std::string(352, '\0');
  int nx, ny, nz;
  Nifti(int x = 8, int y = 8, int z = 8) : nx(x), ny(y), nz(z) {
    put<std::int32_t>(0, 348);
    const std::int16_t dim[8] = {
        3, static_cast<std::int16_t>(x), static_cast<std::int16_t>(y), static_cast<std::int16_t>(z), 1, 1, 1, 1};
    std::memcpy(&h[40], dim, sizeof dim);
    put<std::int16_t>(70, 16);
    put<std::int16_t>(72, 32);
    for (int i = 0; i < 4; ++i) put<float>(76 + 4 * static_cast<std::size_t>(i), 1.f);
    put<float>(108, 352.f);
    put<float>(112, 1.f);
    put<std::int16_t>(254, 1);
    for (int r = 0; r < 3; ++r) put<float>(280 + 20 * static_cast<std::size_t>(r), 1.f);
    std::memcpy(&h[344], "n+1", 4);
  }
  template <typename T>
  Nifti& put(std::size_t offset, T v) {
    std::memcpy(&h[offset], &v, sizeof v);
    return *this;
  }
  std::string bytes() const {
    std::vector<float> v(static_cast<std::size_t>(nx * ny * nz));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 17);
    return h + std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  }
};

void nifti_cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  write(root / "ok.nii", Nifti().bytes());
  write_gz(root / "ok.nii.gz", Nifti().bytes());
  write_gz(root / "ok32.nii.gz", Nifti(32, 32, 32).bytes());
  write(root / "nifti_sform_nan.nii", Nifti().put<float>(280, nan).bytes());
  write(root / "nifti_sform_inf.nii", Nifti().put<float>(324, inf).bytes());
  write(root / "nifti_sform_degenerate.nii", Nifti().put<float>(320, 0.f).bytes());
  // 1.7e38 in srow_y (found by fuzz_nifti): ITK's SVD of that orientation never returned.
  write(root / "nifti_sform_huge.nii", Nifti().put<float>(300, 1.7e38f).bytes());
  write(root / "nifti_qoffset_huge.nii",
        Nifti().put<std::int16_t>(254, 0).put<std::int16_t>(252, 1).put<float>(268, 3e37f).bytes());
  write(root / "nifti_qform_inf.nii",
        Nifti().put<std::int16_t>(254, 0).put<std::int16_t>(252, 1).put<float>(272, inf).bytes());
  write(root / "nifti_quatern_nan.nii",
        Nifti().put<std::int16_t>(254, 0).put<std::int16_t>(252, 1).put<float>(260, nan).bytes());
  write(root / "nifti_pixdim_nan.nii", Nifti().put<std::int16_t>(254, 0).put<float>(84, nan).bytes());
  write(root / "nifti_pixdim_zero.nii", Nifti().put<std::int16_t>(254, 0).put<float>(84, 0.f).bytes());
  write(root / "nifti_pixdim_negative.nii", Nifti().put<std::int16_t>(254, 0).put<float>(84, -1.5f).bytes());
  write(root / "nifti_voxoffset_small.nii", Nifti().put<float>(108, 100.f).bytes());
  write(root / "nifti_voxoffset_nan.nii", Nifti().put<float>(108, nan).bytes());
  write(root / "nifti_dim0_zero.nii", Nifti().put<std::int16_t>(40, 0).bytes());
  write(root / "nifti_dim0_nine.nii", Nifti().put<std::int16_t>(40, 9).bytes());
  write(root / "nifti_dim_negative.nii", Nifti().put<std::int16_t>(44, -8).bytes());
  write(root / "nifti_huge.nii",
        Nifti().put<std::int16_t>(42, 32767).put<std::int16_t>(44, 32767).put<std::int16_t>(46, 32767).bytes());
  write(root / "nifti_truncated.nii", Nifti().bytes().substr(0, 352 + 1000));
  write(root / "nifti_header_only.nii", Nifti().bytes().substr(0, 200));
  write(root / "nifti_sizeof_hdr.nii", Nifti().put<std::int32_t>(0, 123).bytes());
  write(root / "nifti_datatype_unknown.nii", Nifti().put<std::int16_t>(70, 9999).bytes());
  write(root / "nifti_empty.nii", "");
  {
    Nifti bomb;
    bomb.put<std::int16_t>(42, 2048).put<std::int16_t>(44, 1024).put<std::int16_t>(46, 1024);
    write_gz(root / "nifti_gzip_bomb.nii.gz", bomb.h + std::string(4096, '\0'));
  }
  {
    std::string gz;
    write_gz(root / "tmp.gz", Nifti().bytes());
    std::ifstream in(root / "tmp.gz", std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), {});
    fs::remove(root / "tmp.gz");
    for (std::size_t i = gz.size() / 2; i < gz.size() - 8; ++i) gz[i] = static_cast<char>(gz[i] ^ 0x5A);
    write(root / "nifti_gz_corrupt.nii.gz", gz);
  }
  ::mkfifo((root / "nifti_fifo.nii").c_str(), 0600);
  // A NIfTI-2 header cut short.
  {
    std::string h(540, '\0');
    const std::int32_t size = 540;
    std::memcpy(&h[0], &size, 4);
    std::memcpy(&h[4], "n+2\0\r\n\032\n", 8);
    write(root / "nifti2_truncated.nii", h.substr(0, 300));
  }
}

void nrrd_mha_cases() {
  write(root / "outside.raw", std::string(512, '\1'));
  write(root / "study/nrrd_datafile_outside.nhdr",
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\nendian: little\ndata file: "
        "../outside.raw\n\n");
  write(root / "study/nrrd_datafile_passwd.nhdr",
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: /etc/passwd\n\n");
  write(root / "study/mha_datafile_outside.mhd",
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_FLOAT\nElementDataFile = ../outside.raw\n");
  ::mkfifo((root / "study/pipe.raw").c_str(), 0600);
  write(root / "study/mha_datafile_fifo.mhd",
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_FLOAT\nElementDataFile = pipe.raw\n");
  write(root / "mha_truncated.mha",
        "ObjectType = Image\nNDims = 3\nDimSize = 16 16 16\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n" +
            std::string(100, '\0'));
  write(root / "mha_compressed_corrupt.mha",
        "ObjectType = Image\nNDims = 3\nDimSize = 16 16 16\nElementType = MET_FLOAT\nCompressedData = True\n"
        "CompressedDataSize = 64\nElementDataFile = LOCAL\n" +
            std::string(64, '\x33'));
  write(
      root / "mha_ndims_nine.mha",
      "ObjectType = Image\nNDims = 9\nDimSize = 2 2 2 2 2 2 2 2 2\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n" +
          std::string(512, '\0'));
  write(root / "nrrd_negative_size.nrrd",
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: -4 4 4\nencoding: raw\n\n" + std::string(64, '\0'));
  write(root / "nrrd_huge.nrrd",
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\nencoding: raw\nendian: little\n\n" +
            std::string(64, '\0'));
  write(root / "nrrd_gzip_garbage.nrrd",
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 8 8 8\nencoding: gzip\nendian: little\n\n" +
            std::string(300, '\x42'));
}

// Five slices 2 mm apart in `dir`; `spoil(k, spec)` may change slice k.
template <typename F>
void series(const std::string& dir, F spoil) {
  fs::create_directories(root / dir);
  for (int k = 0; k < 5; ++k) {
    SliceSpec s;
    s.rows = s.columns = 16;
    s.instance = k + 1;
    s.position[2] = 2.0 * k;
    s.sop_instance += "." + std::to_string(k);
    spoil(k, s);
    voxinfer::test::write_slice((root / dir / ("s" + std::to_string(k))).string(), s);
  }
}

std::string us(std::uint16_t v) {
  return std::string("US\x02\0", 4) + std::string(reinterpret_cast<const char*>(&v), 2);
}

std::string nested(int depth) {
  const std::string open = std::string("SQ\0\0", 4) + voxinfer::test::le32(0xFFFFFFFFu) +
                           std::string("\xFE\xFF\x00\xE0", 4) + voxinfer::test::le32(0xFFFFFFFFu);
  const std::string close = std::string("\xFE\xFF\x0D\xE0", 4) + voxinfer::test::le32(0) +
                            std::string("\xFE\xFF\xDD\xE0", 4) + voxinfer::test::le32(0);
  std::string v = open;
  for (int i = 1; i < depth; ++i) v += std::string("\x08\x00\x15\x11", 4) + open;
  for (int i = 0; i < depth; ++i) v += close;
  return v;
}

void truncate(const fs::path& p, std::uintmax_t keep) {
  fs::resize_file(p, keep);
}

void dicom_cases() {
  series("dicom_ok", [](int, SliceSpec&) {});
  {
    SliceSpec s;
    s.extra.emplace_back(0x0008, 0x1115, "", nested(20000));
    voxinfer::test::write_slice((root / "dicom_nested.dcm").string(), s);
  }
  series("dicom_nested_in_series", [](int k, SliceSpec& s) {
    if (k == 3) s.extra.emplace_back(0x0008, 0x1115, "", nested(5000));
  });
  series("dicom_slope_nan", [](int k, SliceSpec& s) { s.slope = k == 2 ? "nan" : "1"; });
  series("dicom_intercept_inf", [](int k, SliceSpec& s) { s.intercept = k == 4 ? "-inf" : "0"; });
  for (const auto& [name, k] : {std::pair{"first", 0}, {"middle", 2}, {"last", 4}}) {
    const std::string dir = std::string("dicom_truncated_") + name;
    series(dir, [](int, SliceSpec&) {});
    const fs::path p = root / dir / ("s" + std::to_string(k));
    truncate(p, fs::file_size(p) - 64);
  }
  series("dicom_header_cut", [](int, SliceSpec&) {});
  truncate(root / "dicom_header_cut" / "s1", 300);
  series("dicom_negative_spacing", [](int, SliceSpec& s) { s.pixel_spacing = "-0.5\\-0.5"; });
  series("dicom_zero_spacing", [](int, SliceSpec& s) { s.pixel_spacing = "0\\0.5"; });
  series("dicom_position_nan", [](int k, SliceSpec& s) {
    if (k == 1) s.extra.emplace_back(0x0020, 0x0032, "DS", "0\\nan\\2");
  });
  {
    SliceSpec s;
    s.transfer_syntax = "1.2.840.10008.1.2.5";
    std::string frame = voxinfer::test::le32(2) + voxinfer::test::le32(64) + voxinfer::test::le32(64 + 65);
    frame.resize(64, '\0');
    for (int seg = 0; seg < 2; ++seg) frame += std::string(1, '\x3F') + std::string(64, '\x01');  // 64 bytes, not 20
    s.fragments = {frame};
    voxinfer::test::write_slice((root / "dicom_rle_wrong_size.dcm").string(), s);
  }
  {
    SliceSpec s;
    s.transfer_syntax = "1.2.840.10008.1.2.4.70";
    s.fragments = {std::string("\xFF\xD8\xFF\xC3\x00\x0B\x10\x00\x40\x00\x40\x01\x01\x11\x00\xFF\xD9", 17)};
    voxinfer::test::write_slice((root / "dicom_jpeg_wrong_size.dcm").string(), s);
  }
  {
    SliceSpec s;
    s.rows = s.columns = 65535;
    s.number_of_frames = "2000000000";
    s.pixels.assign(64, 0);
    voxinfer::test::write_slice((root / "dicom_frames_huge.dcm").string(), s);
    s.number_of_frames = "256";
    voxinfer::test::write_slice((root / "dicom_rows_huge.dcm").string(), s);
  }
  series("dicom_tilt_control_chars", [](int k, SliceSpec& s) {
    s.series_uid = "1.2.3\nvoxinfer: fake line\x1b[2J";
    s.extra.emplace_back(0x0018, 0x1120, "DS", "12\r\n");
    s.position[1] = 3.0 * k;
  });
  {
    SliceSpec s;
    s.with_pixels = false;
    voxinfer::test::write_slice((root / "dicom_no_pixels.dcm").string(), s);
  }
  write(root / "dicom_garbage.dcm", std::string(128, '\0') + "DICM" + std::string(400, '\xEE'));
  write(root / "dicom_empty_folder/readme.txt", "not dicom");
  series("dicom_bits_allocated_12", [](int, SliceSpec& s) { s.extra.emplace_back(0x0028, 0x0100, "", us(12)); });
  series("dicom_bits_stored_20", [](int, SliceSpec& s) { s.extra.emplace_back(0x0028, 0x0101, "", us(20)); });
  series("dicom_color", [](int, SliceSpec& s) { s.extra.emplace_back(0x0028, 0x0002, "", us(3)); });
}

// The control package: a 1x1x1 convolution to two classes.
void model(const fs::path& file, const std::string& spoil = "") {
  voxinfer::test::OnnxBuilder b;
  b.input("x", {1, 1, -1, -1, -1});
  const std::int64_t channels = spoil == "instnorm" ? 2 : 1;
  b.constant("w", {2, channels, 1, 1, 1}, std::vector<float>(static_cast<std::size_t>(2 * channels), 0.5f));
  auto* conv = b.node("Conv", {"x", "w"}, spoil == "instnorm" ? "c" : "y");
  if (spoil == "stride0") voxinfer::test::OnnxBuilder::attr_ints(conv, "strides", {1, 0, 1});
  if (spoil == "short_kernel") voxinfer::test::OnnxBuilder::attr_ints(conv, "kernel_shape", {1});
  if (spoil == "negative_pads") voxinfer::test::OnnxBuilder::attr_ints(conv, "pads", {0, -1, 0, 0, 0, 0});
  if (spoil == "dilation0") voxinfer::test::OnnxBuilder::attr_ints(conv, "dilations", {1, 0, 1});
  if (spoil == "groups") voxinfer::test::OnnxBuilder::attr_int(conv, "group", 3);
  if (spoil == "instnorm") {
    b.constant("s", {1}, {1.f});
    b.constant("bias", {1}, {0.f});
    b.node("InstanceNormalization", {"c", "s", "bias"}, "y");
  }
  b.output("y");
  b.save(file.string());
}

const char* kSpec = R"({"task": "segmentation", "model": "model.onnx", "axes": "zyx",
 "input": {"channels": 1, "modality": "CT"},
 "inference": {"roi_size": [8, 8, 8], "overlap": 0.25, "blend": "gaussian", "batch": 1},
 "postprocess": {"activation": "softmax"},
 "labels": [{"value": 1, "name": "a"}]})";

void package(const std::string& name, const std::string& spec, const std::string& spoil = "") {
  fs::create_directories(root / name);
  model(root / name / "model.onnx", spoil);
  write(root / name / "pipeline.json", spec);
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  if (at == std::string::npos) {
    std::cerr << "make_hostile_cases: '" << from << "' not in the spec\n";
    std::exit(1);
  }
  return s.replace(at, from.size(), to);
}

void model_cases() {
  package("pkg_ok", kSpec);
  for (const char* spoil : {"stride0", "short_kernel", "negative_pads", "dilation0", "groups", "instnorm"})
    package(std::string("pkg_onnx_") + spoil, kSpec, spoil);
  package("pkg_not_onnx", kSpec);
  write(root / "pkg_not_onnx/model.onnx", std::string(1000, '\x7F'));
  package("pkg_unknown_field", replace(kSpec, R"("axes": "zyx",)", R"("axes": "zyx", "axis": "xyz",)"));
  package("pkg_model_outside", replace(kSpec, R"("model": "model.onnx")", R"("model": "../pkg_ok/model.onnx")"));
  package("pkg_model_absolute", replace(kSpec, R"("model": "model.onnx")", R"("model": "/etc/passwd")"));
  package("pkg_model_missing", replace(kSpec, R"("model": "model.onnx")", R"("model": "none.onnx")"));
  package("pkg_overlap_huge", replace(kSpec, R"("overlap": 0.25)", R"("overlap": 1e400)"));
  package("pkg_overlap_one", replace(kSpec, R"("overlap": 0.25)", R"("overlap": 0.9999)"));
  package("pkg_roi_string", replace(kSpec, R"("roi_size": [8, 8, 8])", R"("roi_size": "big")"));
  package("pkg_roi_zero", replace(kSpec, R"("roi_size": [8, 8, 8])", R"("roi_size": [0, 8, 8])"));
  package("pkg_not_json", "{\"task\": \"segmentation\", ");
  package("pkg_bad_activation", replace(kSpec, R"("activation": "softmax")", R"("activation": "magic")"));
  package("pkg_channels_zero", replace(kSpec, R"("channels": 1)", R"("channels": 0)"));
}

void npy_cases() {
  auto npy = [](const std::string& dict, std::size_t data) {
    std::string header = dict;
    while ((10 + header.size() + 1) % 64) header += ' ';
    header += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    const auto n = static_cast<std::uint16_t>(header.size());
    out.append(reinterpret_cast<const char*>(&n), 2);
    return out + header + std::string(data, '\0');
  };
  write(root / "npy_ok.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8, 8), }", 2048));
  write(root / "npy_truncated.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8, 8), }", 100));
  write(root / "npy_complex.npy", npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 1, 8, 8, 8), }", 4096));
  write(root / "npy_huge_shape.npy",
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 8), }", 64));
  write(root / "npy_bad_header.npy", npy("{'descr': '<f4', 'shape': (1, 1, 8", 2048));
  write(root / "npy_negative_shape.npy",
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, -1, 8, 8, 8), }", 2048));
}

// A volume large enough that writing it compressed takes a while (for the signal test).
void big_volume() {
  Nifti n(512, 512, 96);
  n.put<std::int16_t>(70, 2).put<std::int16_t>(72, 8);  // uint8
  std::string data(512u * 512u * 96u, '\0');
  std::uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  write(root / "big.nii", n.h + data);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_hostile_cases FOLDER\n";
    return 1;
  }
  root = argv[1];
  fs::remove_all(root);
  fs::create_directories(root);
  nifti_cases();
  nrrd_mha_cases();
  dicom_cases();
  model_cases();
  npy_cases();
  big_volume();
  return 0;
}
