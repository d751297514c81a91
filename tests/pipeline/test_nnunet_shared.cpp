// nnU-Net v2: every input and setting of the full reference set in ../shared/data/nnunet_v2
// against the label maps nnU-Net 2.8.1's nnUNetPredictor wrote (skipped when it is absent).
#include <gtest/gtest.h>

#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "pipeline/nnunet_test_util.h"
#include "test_util.h"
#include "voxinfer/app/nnunet.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/pipeline/nnunet.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

struct Setting {
  const char* folder;
  std::vector<int> folds;
  double step;
  bool mirror;
};

TEST(NnunetSharedReferences, EveryInputAndSettingMatchesNnunetLabels) {
  const fs::path shared = test::shared_dir() / "data" / "nnunet_v2";
  if (!fs::exists(shared)) GTEST_SKIP() << "no " << shared << " (the full nnU-Net reference set)";
  const fs::path model_dir =
      shared / "nnUNet_results" / "Dataset311_VoxAbdCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres";
  nnunet::LoadOptions lo;
  const std::vector<Setting> settings = {{"ens_f0f1_step0.5_mirror", {0, 1}, 0.5, true},
                                         {"f0_step0.5_nomirror", {0}, 0.5, false},
                                         {"ens_f0f1_step0.8_mirror", {0, 1}, 0.8, true},
                                         {"f1_step0.5_nomirror", {1}, 0.5, false}};
  for (const auto& s : settings) {
    lo.folds = s.folds;
    nnunet::Model ms = app::open_nnunet_model(model_dir, lo);
    for (const auto& e : fs::directory_iterator(shared / "predictions" / s.folder)) {
      if (e.path().extension() != ".gz") continue;
      const std::string cs = e.path().filename().string();
      const std::string case_id = cs.substr(0, cs.size() - 7);
      nnunet::PredictOptions o;
      o.step_size = s.step;
      o.mirroring = s.mirror;
      const auto r = nnunet::predict(ms, {read_volume((shared / "inputs" / (case_id + "_0000.nii.gz")).string())}, o);
      const double agree = test::label_agreement(r.labels, read_volume(e.path().string()));
      std::printf("  %-26s %-28s agreement %.5f%%\n", s.folder, case_id.c_str(), 100 * agree);
      EXPECT_GE(agree, 0.9995) << s.folder << " " << case_id;
    }
  }
}

// The .npz arrays nnU-Net saved, as .npy through Debian's python3-numpy (skip without it).
Tensor npz_array(const fs::path& npz, const std::string& key) {
  const fs::path out = fs::temp_directory_path() / ("voxinfer_npz_" + std::to_string(::getpid()) + "_" + key + ".npy");
  const std::string cmd =
      "/usr/bin/python3 -c \"import sys, numpy as np; np.save(sys.argv[2], "
      "np.load(sys.argv[1])[sys.argv[3]].astype(np.float32))\" '" +
      npz.string() + "' '" + out.string() + "' " + key + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return Tensor();
  Tensor t = read_npy(out.string());
  fs::remove(out);
  return t;
}

TEST(NnunetSharedReferences, ProbabilitiesAndLogitsMatchNnunetWithin1e3) {
  const fs::path shared = test::shared_dir() / "data" / "nnunet_v2";
  if (!fs::exists(shared)) GTEST_SKIP() << "no " << shared << " (the full nnU-Net reference set)";
  const fs::path model_dir =
      shared / "nnUNet_results" / "Dataset311_VoxAbdCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres";
  struct Case {
    const char* setting;
    const char* id;
    std::vector<int> folds;
    bool mirror;
  };
  for (const Case& c : {Case{"ens_f0f1_step0.5_mirror", "ct3mm_z64-99", {0, 1}, true},
                        Case{"f0_step0.5_nomirror", "ct3mm_z78-111_LPS_zeropad", {0}, false}}) {
    const Tensor ref = npz_array(shared / "predictions" / c.setting / (std::string(c.id) + ".npz"), "probabilities");
    if (!ref.defined()) GTEST_SKIP() << "python3 with numpy is needed to read nnU-Net's .npz files";
    nnunet::LoadOptions lo;
    lo.folds = c.folds;
    nnunet::Model m = app::open_nnunet_model(model_dir, lo);
    nnunet::PredictOptions o;
    o.mirroring = c.mirror;
    o.probabilities = true;
    o.keep_logits = true;
    const auto r =
        nnunet::predict(m, {read_volume((shared / "inputs" / (std::string(c.id) + "_0000.nii.gz")).string())}, o);
    ASSERT_EQ(r.probabilities.data.shape(), ref.shape()) << c.id;
    double err = 0;
    for (std::int64_t i = 0; i < ref.numel(); ++i)
      err = std::max(err, static_cast<double>(std::abs(r.probabilities.data.data<float>()[i] - ref.data<float>()[i])));
    std::printf("  %-26s %-28s max |p - p_nnunet| = %.2e\n", c.setting, c.id, err);
    EXPECT_LE(err, 1e-3) << c.setting << " " << c.id;
    if (std::string(c.id) == "ct3mm_z78-111_LPS_zeropad") {
      const Tensor lref = npz_array(
          shared / "preprocessed" / "ct3mm_z78-111_LPS_zeropad_logits_f0_step0.5_nomirror_float16.npz", "logits");
      const Tensor logits = nnunet::half_to_float(r.logits);
      ASSERT_EQ(logits.shape(), lref.shape());
      double lerr = 0, lmax = 0;
      for (std::int64_t i = 0; i < lref.numel(); ++i) {
        lerr = std::max(lerr, static_cast<double>(std::abs(logits.data<float>()[i] - lref.data<float>()[i])));
        lmax = std::max(lmax, static_cast<double>(std::abs(lref.data<float>()[i])));
      }
      std::printf("  preprocessed-space logits: max |l - l_nnunet| = %.2e (max |l| %.1f, half precision)\n", lerr,
                  lmax);
      // nnU-Net sums up to ~8 Gaussian-weighted tiles (weights up to 10) in half precision; the
      // network's float32 differences (~1e-5) can move those sums by one half-precision step,
      // i.e. the logit by up to about |l| / 256.
      EXPECT_LE(lerr, lmax / 256.0);
    }
  }
}

}  // namespace
}  // namespace voxinfer
