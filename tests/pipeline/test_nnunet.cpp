// nnU-Net v2 model folders against nnU-Net's own outputs: the folder reader, the network built
// from plans.json + checkpoint against PyTorch, the preprocessed array against nnU-Net's
// DefaultPreprocessor, and label maps against nnUNetPredictor (tests/data/nnunet_v2_small;
// the full reference set in ../shared when present).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "pipeline/nnunet_test_util.h"
#include "test_util.h"
#include "voxinfer/app/nnunet.h"
#include "voxinfer/core/error.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/pipeline/nnunet.h"
#include "voxinfer/pipeline/preprocess.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

const fs::path kData = fs::path(VOXINFER_TEST_DATA_DIR) / "nnunet_v2_small";
const fs::path kModel = kData / "Dataset311_VoxAbdCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres";
const fs::path kInput = kData / "inputs" / "ct3mm_z78-111_LPS_zeropad_0000.nii.gz";

nnunet::Model open_model(std::vector<int> folds = {}) {
  nnunet::LoadOptions o;
  o.folds = std::move(folds);
  return app::open_nnunet_model(kModel, o);
}

double max_abs(const float* p, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(std::abs(p[i])));
  return m;
}

TEST(NnunetFolder, ReadsPlansDatasetCheckpointsAndFolds) {
  nnunet::Model m = open_model();
  const auto& c = m.configuration();
  EXPECT_EQ(c.name, "3d_fullres");
  EXPECT_EQ(c.dims, 3);
  EXPECT_EQ(c.patch_size, (nnunet::Index3{14, 80, 80}));
  EXPECT_EQ(c.spacing, (std::vector<double>{3.5, 3.5, 3.5}));
  EXPECT_EQ(c.architecture.features, (std::vector<std::int64_t>{8, 16, 32, 32, 32}));
  EXPECT_EQ(c.architecture.num_classes, 6);
  ASSERT_EQ(c.normalization.size(), 1u);
  EXPECT_EQ(c.normalization[0].scheme, nnunet::Normalization::Scheme::ct);
  EXPECT_DOUBLE_EQ(c.normalization[0].lower, -917.0);
  EXPECT_DOUBLE_EQ(c.normalization[0].upper, 152.0);
  EXPECT_NEAR(c.normalization[0].mean, 51.65508270263672, 1e-9);
  EXPECT_EQ(c.data_rule.order, 3);
  EXPECT_EQ(c.probabilities_rule.order, 1);
  EXPECT_EQ(m.folds(), (std::vector<int>{0, 1}));
  EXPECT_EQ(m.mirror_axes(), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(m.trainer_name(), "nnUNetTrainer");
  EXPECT_EQ(m.dataset().reader, "NibabelIO");
  EXPECT_EQ(m.dataset().head_names(),
            (std::vector<std::string>{"background", "spleen", "kidney", "liver", "stomach", "aorta"}));
  EXPECT_GT(m.parameter_count(), 100000);
  const std::string d = nnunet::describe(m);
  EXPECT_NE(d.find("PlainConvUNet"), std::string::npos) << d;
  EXPECT_NE(d.find("CTNormalization"), std::string::npos) << d;
}

TEST(NnunetNetwork, BuiltFromPlansMatchesPyTorchOnAPatch) {
  nnunet::Model m = open_model({0});
  const Tensor in = read_npy((kData / "network" / "network_fold0_input.npy").string());
  const Tensor ref = read_npy((kData / "network" / "network_fold0_output.npy").string());
  const Tensor out = m.session(0).run(std::vector<Tensor>{in})[0];
  ASSERT_EQ(out.shape(), ref.shape());
  const float* o = out.data<float>();
  const float* r = ref.data<float>();
  double err = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) err = std::max(err, static_cast<double>(std::abs(o[i] - r[i])));
  // The numerical policy's bound for a network against its framework.
  EXPECT_LE(err, 1e-4 * std::max(1.0, max_abs(r, ref.numel())));
}

TEST(NnunetPreprocess, MatchesNnunetPreprocessedArrayAndProperties) {
  nnunet::Model m = open_model({0});
  const nnunet::Preprocessed p = nnunet::preprocess(m, {read_volume(kInput.string())});
  EXPECT_EQ(p.shape_before_cropping, (nnunet::Index3{34, 113, 134}));
  EXPECT_EQ(p.shape_after_cropping, (nnunet::Index3{34, 101, 122}));
  EXPECT_EQ(p.bbox[0], (std::array<std::int64_t, 2>{0, 34}));
  EXPECT_EQ(p.bbox[1], (std::array<std::int64_t, 2>{6, 107}));
  EXPECT_EQ(p.bbox[2], (std::array<std::int64_t, 2>{6, 128}));
  const Tensor ref = read_npy((kData / "ct3mm_z78-111_LPS_zeropad_data.npy").string());
  ASSERT_EQ(p.data.shape(), (Shape{1, ref.dim(1), ref.dim(2), ref.dim(3)}));
  double err = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i)
    err = std::max(err, static_cast<double>(std::abs(p.data.data<float>()[i] - ref.data<float>()[i])));
  EXPECT_LE(err, 1e-4);
}

TEST(NnunetPredict, Fold0WithoutMirroringMatchesNnunetLabels) {
  nnunet::Model m = open_model({0});
  nnunet::PredictOptions o;
  o.mirroring = false;
  const nnunet::Prediction r = nnunet::predict(m, {read_volume(kInput.string())}, o);
  const Volume ref =
      read_volume((kData / "predictions" / "f0_step0.5_nomirror" / "ct3mm_z78-111_LPS_zeropad.nii.gz").string());
  EXPECT_GE(test::label_agreement(r.labels, ref), 0.9995);
}

TEST(NnunetPredict, TwoFoldEnsembleWithMirroringMatchesNnunetLabels) {
  nnunet::Model m = open_model();
  nnunet::PredictOptions o;
  o.probabilities = true;
  const nnunet::Prediction r = nnunet::predict(m, {read_volume(kInput.string())}, o);
  const Volume ref =
      read_volume((kData / "predictions" / "ens_f0f1_step0.5_mirror" / "ct3mm_z78-111_LPS_zeropad.nii.gz").string());
  EXPECT_GE(test::label_agreement(r.labels, ref), 0.9995);
  // Probabilities: on the input grid, summing to one, background 1 outside the nonzero box.
  ASSERT_EQ(r.probabilities.channels(), 6);
  ASSERT_EQ(r.probabilities.voxels(), r.labels.voxels());
  for (std::int64_t i = 0; i < r.labels.voxels(); i += 97) {
    float s = 0;
    for (int k = 0; k < 6; ++k) s += r.probabilities.channel(k)[i];
    EXPECT_NEAR(s, 1.f, 1e-5f);
  }
  EXPECT_EQ(r.probabilities.at(0, 0, 0, 0), 1.f);
}

// A copy of the model folder to break in one place.
fs::path copy_model(const std::string& name) {
  const fs::path dst = fs::temp_directory_path() / ("voxinfer_nnunet_" + name + "_" + std::to_string(::getpid())) /
                       "nnUNetTrainer__nnUNetPlans__3d_fullres";
  fs::remove_all(dst.parent_path());
  fs::create_directories(dst.parent_path());
  fs::copy(kModel, dst, fs::copy_options::recursive);
  return dst;
}

void expect_error(const fs::path& folder, ErrorCode code, const std::string& needle, std::vector<int> folds = {}) {
  nnunet::LoadOptions o;
  o.folds = std::move(folds);
  try {
    app::open_nnunet_model(folder, o);
    ADD_FAILURE() << "no error for " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(NnunetErrors, CorruptedCheckpointIsAnInvalidModelNamingTheFile) {
  const fs::path d = copy_model("corrupt");
  const fs::path ck = d / "fold_0" / "checkpoint_final.pth";
  fs::resize_file(ck, fs::file_size(ck) / 2);
  expect_error(d, ErrorCode::invalid_model, "checkpoint_final.pth", {0});
  fs::remove_all(d.parent_path());
}

TEST(NnunetErrors, UnknownArchitectureIsUnsupportedNamingTheClass) {
  const fs::path d = copy_model("arch");
  std::ifstream f(d / "plans.json");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  f.close();
  for (std::size_t pos; (pos = s.find("architectures.unet.PlainConvUNet")) != std::string::npos;)
    s.replace(pos, 32, "architectures.unet.FancyUNet");
  std::ofstream(d / "plans.json") << s;
  expect_error(d, ErrorCode::unsupported, "FancyUNet", {0});
  fs::remove_all(d.parent_path());
}

TEST(NnunetErrors, MissingFoldIsAnInvalidModelNamingIt) {
  expect_error(kModel, ErrorCode::invalid_model, "fold_3", {0, 3});
}

TEST(NnunetErrors, WrongChannelCountIsAnInvalidInput) {
  nnunet::Model m = open_model({0});
  const Volume v = read_volume(kInput.string());
  try {
    nnunet::preprocess(m, {v, v});
    ADD_FAILURE() << "two channels accepted by a one-channel model";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_input);
    EXPECT_NE(std::string(e.what()).find("1 input channel"), std::string::npos) << e.what();
  }
}

TEST(NnunetErrors, CheckpointMissingAWeightNamesTheTensor) {
  nnunet::Model m = open_model({0});
  nnunet::Checkpoint c = app::read_nnunet_checkpoint(kModel / "fold_0" / "checkpoint_final.pth");
  c.weights.erase("decoder.seg_layers.3.weight");
  c.weights.erase("decoder.seg_layers.3.all_modules.0.weight");
  try {
    graph::build_nnunet_network(m.configuration().architecture, c.weights, "ckpt");
    ADD_FAILURE() << "built without the head's weight";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("decoder.seg_layers.3.weight"), std::string::npos) << e.what();
  }
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(NnunetPostprocessing, PostprocessingJsonKeepsTheLargestComponentUnlessDisabled) {
  const fs::path d = copy_model("pp");
  std::ofstream(d / "postprocessing.json")
      << R"({"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
                                               "postprocessing_kwargs": [{"labels_or_regions": [3, 4]}]})";
  nnunet::LoadOptions lo;
  lo.folds = {0};
  nnunet::Model m = app::open_nnunet_model(d, lo);
  ASSERT_EQ(m.postprocessing().size(), 1u);
  const Volume in = read_volume(kInput.string());
  nnunet::PredictOptions o;
  o.mirroring = false;
  o.postprocess = false;
  const Volume raw = nnunet::predict(m, {in}, o).labels;
  o.postprocess = true;
  const Volume pp = nnunet::predict(m, {in}, o).labels;
  // Removed voxels are liver/stomach voxels set to background; nothing else changes.
  std::int64_t removed = 0;
  for (std::int64_t i = 0; i < raw.voxels(); ++i) {
    const float a = raw.channel(0)[i], b = pp.channel(0)[i];
    if (a == b) continue;
    EXPECT_TRUE((a == 3.f || a == 4.f) && b == 0.f) << i;
    ++removed;
  }
  // What is left of liver + stomach is one 26-connected component.
  const std::int64_t nx = pp.nx(), ny = pp.ny(), nz = pp.nz();
  std::vector<char> seen(static_cast<std::size_t>(pp.voxels()), 0);
  int components = 0;
  for (std::int64_t s0 = 0; s0 < pp.voxels(); ++s0) {
    const float l = pp.channel(0)[s0];
    if ((l != 3.f && l != 4.f) || seen[static_cast<std::size_t>(s0)]) continue;
    ++components;
    std::vector<std::int64_t> stack{s0};
    seen[static_cast<std::size_t>(s0)] = 1;
    while (!stack.empty()) {
      const std::int64_t i = stack.back();
      stack.pop_back();
      const std::int64_t x = i % nx, y = (i / nx) % ny, z = i / (nx * ny);
      for (int dz = -1; dz <= 1; ++dz)
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const std::int64_t X = x + dx, Y = y + dy, Z = z + dz;
            if (X < 0 || Y < 0 || Z < 0 || X >= nx || Y >= ny || Z >= nz) continue;
            const std::int64_t j = (Z * ny + Y) * nx + X;
            const float lj = pp.channel(0)[j];
            if ((lj == 3.f || lj == 4.f) && !seen[static_cast<std::size_t>(j)]) {
              seen[static_cast<std::size_t>(j)] = 1;
              stack.push_back(j);
            }
          }
    }
  }
  EXPECT_EQ(components, 1);
  EXPECT_GT(removed, 0) << "the raw prediction has stray liver/stomach voxels to remove";
  fs::remove_all(d.parent_path());
}

TEST(NnunetReaders, NibabelIOWithReorientPredictsOnTheRasArrayAndTurnsTheLabelsBack) {
  const fs::path d = copy_model("reorient");
  std::string ds = read_text(d / "dataset.json");
  ds.replace(ds.find("\"NibabelIO\""), 11, "\"NibabelIOWithReorient\"");
  std::ofstream(d / "dataset.json") << ds;
  nnunet::LoadOptions lo;
  lo.folds = {0};
  nnunet::Model reorienting = app::open_nnunet_model(d, lo);
  ASSERT_EQ(reorienting.dataset().reader, "NibabelIOWithReorient");
  nnunet::Model plain = open_model({0});
  const Volume in = read_volume(kInput.string());
  ASSERT_EQ(in.geometry.orientation_code(), "LPS");
  nnunet::PredictOptions o;
  o.mirroring = false;
  const Volume got = nnunet::predict(reorienting, {in}, o).labels;
  const AxisPermutation t = orientation_transform(in.geometry, "RAS");
  const Volume want = permute_axes(nnunet::predict(plain, {reorient(in, "RAS")}, o).labels, inverse(t));
  EXPECT_EQ(test::label_agreement(got, want), 1.0);
  EXPECT_LT((got.geometry.origin - in.geometry.origin).norm(), 1e-6);
  fs::remove_all(d.parent_path());
}

// nnU-Net 2.0-2.2 plans (TotalSegmentator's weights use them): the same network described by
// UNet_class_name, UNet_base_num_features, unet_max_num_features, n_conv_per_stage_encoder/decoder,
// conv_kernel_sizes and pool_op_kernel_sizes gives the same prediction.
TEST(NnunetFolder, OlderPlansSchemaBuildsTheSameNetwork) {
  const fs::path d = copy_model("oldplans");
  nlohmann::json plans = nlohmann::json::parse(read_text(d / "plans.json"));
  for (auto& [name, c] : plans["configurations"].items()) {
    if (!c.contains("architecture")) continue;
    const auto kw = c["architecture"]["arch_kwargs"];
    c.erase("architecture");
    c["UNet_class_name"] = "PlainConvUNet";
    c["UNet_base_num_features"] = kw["features_per_stage"][0];
    c["unet_max_num_features"] = 32;
    c["n_conv_per_stage_encoder"] = kw["n_conv_per_stage"];
    c["n_conv_per_stage_decoder"] = kw["n_conv_per_stage_decoder"];
    c["conv_kernel_sizes"] = kw["kernel_sizes"];
    c["pool_op_kernel_sizes"] = kw["strides"];
    c["num_pool_per_axis"] = {4, 4, 4};
  }
  std::ofstream(d / "plans.json") << plans.dump(1);
  nnunet::LoadOptions lo;
  lo.folds = {0};
  nnunet::Model old_schema = app::open_nnunet_model(d, lo);
  EXPECT_EQ(old_schema.configuration().architecture.features, (std::vector<std::int64_t>{8, 16, 32, 32, 32}));
  nnunet::Model current = open_model({0});
  const Volume in = read_volume(kInput.string());
  nnunet::PredictOptions o;
  o.mirroring = false;
  EXPECT_EQ(
      test::label_agreement(nnunet::predict(old_schema, {in}, o).labels, nnunet::predict(current, {in}, o).labels),
      1.0);
  fs::remove_all(d.parent_path());
}

// A composite package over the shipped folder (linked in twice): merged labels equal the two
// models' own label maps merged by hand; a crop keeps everything outside its box at 0.
fs::path make_composite(const std::string& name, double margin_mm) {
  const fs::path d = fs::temp_directory_path() / ("voxinfer_composite_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  fs::create_directory_symlink(fs::absolute(kModel), d / "abd");
  std::ofstream(d / "nnunet_composite.json")
      << R"({"name": "test", "crop": {"model": "abd", "folds": [0], "disable_tta": true, "labels": [1, 3, 4], "margin_mm": )"
      << margin_mm << R"(}, "models": [{"model": "abd", "folds": [0], "disable_tta": true, "class_map": {"3": 1}},
                          {"model": "abd", "folds": [1], "disable_tta": true, "class_map": {"1": 2, "4": 3}}],
          "labels": {"1": "liver", "2": "spleen", "3": "stomach"}})";
  return d;
}

TEST(NnunetComposite, MergesClassMapsInOrderLikeTheModelsRunAlone) {
  const fs::path d = make_composite("merge", 1000);
  const Volume in = read_volume(kInput.string());
  const auto r = nnunet::run_composite(d, nnunet::load_composite(d), {in}, app::read_nnunet_checkpoint);
  ASSERT_TRUE(r.crop_box.has_value());
  nnunet::PredictOptions o;
  o.mirroring = false;
  nnunet::Model m0 = open_model({0}), m1 = open_model({1});
  const Volume a = nnunet::predict(m0, {in}, o).labels, b = nnunet::predict(m1, {in}, o).labels;
  std::int64_t differ = 0, liver = 0;
  for (std::int64_t i = 0; i < in.voxels(); ++i) {
    float want = a.channel(0)[i] == 3.f ? 1.f : 0.f;
    if (b.channel(0)[i] == 1.f) want = 2.f;
    if (b.channel(0)[i] == 4.f) want = 3.f;
    differ += r.labels.channel(0)[i] != want;
    liver += want == 1.f;
  }
  EXPECT_GT(liver, 1000);
  EXPECT_EQ(differ, 0);
  fs::remove_all(d);
}

TEST(NnunetComposite, CropLeavesEverythingOutsideTheBoxAtZero) {
  const fs::path d = make_composite("crop", 10);
  const Volume in = read_volume(kInput.string());
  const auto r = nnunet::run_composite(d, nnunet::load_composite(d), {in}, app::read_nnunet_checkpoint);
  ASSERT_TRUE(r.crop_box.has_value());
  const auto& box = *r.crop_box;
  EXPECT_LT(box[0][1] - box[0][0], in.nx());  // it really cropped
  std::int64_t outside = 0, inside = 0;
  for (std::int64_t z = 0; z < in.nz(); ++z)
    for (std::int64_t y = 0; y < in.ny(); ++y)
      for (std::int64_t x = 0; x < in.nx(); ++x) {
        const bool in_box =
            x >= box[0][0] && x < box[0][1] && y >= box[1][0] && y < box[1][1] && z >= box[2][0] && z < box[2][1];
        const float l = r.labels.at(0, z, y, x);
        (in_box ? inside : outside) += l != 0.f;
      }
  EXPECT_EQ(outside, 0);
  EXPECT_GT(inside, 1000);
  fs::remove_all(d);
}

TEST(NnunetComposite, PathsOutsideThePackageAndUnknownFieldsAreRefused) {
  const fs::path d = fs::temp_directory_path() / ("voxinfer_composite_bad_" + std::to_string(::getpid()));
  fs::create_directories(d);
  for (const std::string body :
       {R"({"models": [{"model": "../x", "class_map": {"1": 1}}]})",
        R"({"models": [{"model": "/abs", "class_map": {"1": 1}}]})",
        R"({"models": [{"model": "a", "class_map": {"1": 1}, "colour": 1}]})", R"({"models": [{"model": "a"}]})"}) {
    std::ofstream(d / "nnunet_composite.json") << body;
    EXPECT_THROW(nnunet::load_composite(d), Error) << body;
  }
  fs::remove_all(d);
}

}  // namespace
}  // namespace voxinfer
