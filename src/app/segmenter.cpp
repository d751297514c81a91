#include "voxinfer/app/segmenter.h"

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include "voxinfer/app/nnunet.h"
#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/pipeline/nnunet.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer::app {
namespace {

namespace fs = std::filesystem;

// A pipeline.json package or a MONAI bundle (translated into the same pipeline).
class PackageSegmenter final : public Segmenter {
 public:
  PackageSegmenter(SegmentationPipeline p, std::string kind) : p_(std::move(p)), kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  std::string name() const override {
    return p_.spec().name.empty() ? p_.package_dir().filename().string() : p_.spec().name;
  }
  std::string version() const override { return p_.spec().version; }
  std::int64_t channels() const override { return 1; }  // one file; several channels inside it
  const std::vector<LabelSpec>& labels() const override { return p_.spec().labels; }
  SegmenterResult run(const std::vector<Volume>& channels) override {
    if (channels.size() != 1) fail(ErrorCode::invalid_input, "this model package takes one input file per study");
    SegmentationResult r = p_.run(channels[0]);
    SegmenterResult out;
    out.labels = std::move(r.labels);
    out.stats = std::move(r.stats);
    out.tiles = r.window.tiles;
    out.seconds_preprocess = r.seconds_preprocess;
    out.seconds_inference = r.seconds_inference;
    out.seconds_postprocess = r.seconds_postprocess;
    return out;
  }

 private:
  SegmentationPipeline p_;
  std::string kind_;
};

std::vector<LabelSpec> nnunet_labels(const nnunet::Dataset& ds) {
  std::vector<LabelSpec> names;
  if (ds.has_regions) {
    const auto heads = ds.head_names();
    for (std::size_t k = 0; k < ds.regions_class_order.size(); ++k)
      names.push_back(LabelSpec{ds.regions_class_order[k], heads[k], std::nullopt, std::nullopt});
  } else {
    for (const auto& l : ds.labels)
      if (l.values[0] != 0) names.push_back(LabelSpec{l.values[0], l.name, std::nullopt, std::nullopt});
  }
  return names;
}

class NnunetSegmenter final : public Segmenter {
 public:
  NnunetSegmenter(nnunet::Model m, const SegmenterOptions& o) : m_(std::move(m)), labels_(nnunet_labels(m_.dataset())) {
    po_.step_size = o.step_size;
    po_.mirroring = o.mirroring;
    po_.postprocess = o.postprocess;
    po_.progress = o.progress;
  }
  std::string kind() const override { return "nnU-Net v2 folder"; }
  std::string name() const override {
    fs::path f = m_.folder();
    if (f.filename().empty()) f = f.parent_path();
    return f.parent_path().filename().string() + "/" + f.filename().string();
  }
  std::string version() const override { return m_.configuration().name; }
  std::int64_t channels() const override { return static_cast<std::int64_t>(m_.dataset().channel_names.size()); }
  const std::vector<LabelSpec>& labels() const override { return labels_; }
  SegmenterResult run(const std::vector<Volume>& channels) override {
    nnunet::Prediction p = nnunet::predict(m_, channels, po_);
    SegmenterResult out;
    out.stats = label_statistics(p.labels, channels.at(0), labels_);
    out.labels = std::move(p.labels);
    out.tiles = p.tiles;
    out.seconds_preprocess = p.seconds_preprocess;
    out.seconds_inference = p.seconds_inference;
    out.seconds_postprocess = p.seconds_export;
    return out;
  }

 private:
  nnunet::Model m_;
  std::vector<LabelSpec> labels_;
  nnunet::PredictOptions po_;
};

class CompositeSegmenter final : public Segmenter {
 public:
  CompositeSegmenter(fs::path folder, nnunet::CompositeSpec spec, int threads)
      : folder_(std::move(folder)), spec_(std::move(spec)), threads_(threads) {
    for (const auto& [v, n] : spec_.labels) labels_.push_back(LabelSpec{v, n, std::nullopt, std::nullopt});
  }
  std::string kind() const override { return "nnU-Net composite"; }
  std::string name() const override { return spec_.name.empty() ? folder_.filename().string() : spec_.name; }
  std::string version() const override { return spec_.version; }
  std::int64_t channels() const override { return 0; }  // as the member folders say
  const std::vector<LabelSpec>& labels() const override { return labels_; }
  SegmenterResult run(const std::vector<Volume>& channels) override {
    auto r = nnunet::run_composite(folder_, spec_, channels, read_nnunet_checkpoint, threads_);
    SegmenterResult out;
    out.stats = label_statistics(r.labels, channels.at(0), labels_);
    out.labels = std::move(r.labels);
    out.tiles = r.tiles;
    out.seconds_inference = r.seconds;
    return out;
  }

 private:
  fs::path folder_;
  nnunet::CompositeSpec spec_;
  int threads_;
  std::vector<LabelSpec> labels_;
};

}  // namespace

std::unique_ptr<Segmenter> open_segmenter(const fs::path& folder, const SegmenterOptions& o) {
  std::error_code ec;
  // A variant of a pipeline.json package: its pipeline.NAME.json file.
  const std::string file = folder.filename().string();
  const bool variant = fs::is_regular_file(folder, ec) && file.rfind("pipeline.", 0) == 0 && file.size() >= 13 &&
                       file.compare(file.size() - 5, 5, ".json") == 0;
  if (!variant && !fs::is_directory(folder, ec)) fail(ErrorCode::invalid_input, folder.string() + ": model folder not found");
  if (nnunet::is_composite_folder(folder))
    return std::make_unique<CompositeSegmenter>(folder, nnunet::load_composite(folder), o.threads);
  if (nnunet::is_model_folder(folder)) {
    nnunet::LoadOptions lo;
    lo.folds = o.folds;
    lo.checkpoint = o.checkpoint;
    lo.threads = o.threads;
    return std::make_unique<NnunetSegmenter>(open_nnunet_model(folder, lo), o);
  }
  SegmentationOptions so;
  so.threads = o.threads;
  so.overlap = o.overlap;
  so.tta = o.tta;
  so.progress = o.progress;
  if (monai::is_bundle(folder)) {
    monai::BundleOptions bo;
    bo.network = o.network;
    return std::make_unique<PackageSegmenter>(monai::open_segmentation(folder, bo, so), "MONAI bundle");
  }
  if (variant || fs::exists(folder / "pipeline.json", ec))
    return std::make_unique<PackageSegmenter>(SegmentationPipeline(folder, so), "pipeline.json package");
  fail(ErrorCode::invalid_input,
       folder.string() +
           ": not a model folder (expected pipeline.json, an nnU-Net results folder with plans.json and "
           "dataset.json, nnunet_composite.json, or a MONAI bundle's configs/)");
}

namespace {

std::string hex_of(const unsigned char* md, unsigned int len) {
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += digits[md[i] >> 4];
    hex += digits[md[i] & 15];
  }
  return hex;
}

}  // namespace

std::string sha256_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorCode::io, file.string() + ": cannot open to hash");
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return hex_of(md, len);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return hex_of(md, len);
}

}  // namespace voxinfer::app
