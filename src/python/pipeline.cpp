// voxinfer.SegmentationPipeline and ClassificationPipeline: every model package kind the
// command line accepts (pipeline.json folders, MONAI bundles, nnU-Net v2 results folders and
// composite nnU-Net packages), applied to Volumes with the GIL released.
#include <pybind11/stl.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bindings.h"
#include "voxinfer/app/nnunet.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/pipeline/classification.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/pipeline/nnunet.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer::python {
namespace {

namespace fs = std::filesystem;

struct PySegmentationResult {
  py::object labels, probabilities, stats, info;
};

py::list stats_to_python(const std::vector<LabelStats>& stats) {
  py::list l;
  for (const auto& s : stats) {
    py::dict d;
    d["value"] = s.value;
    d["name"] = s.name;
    d["voxels"] = s.voxels;
    d["volume_ml"] = s.volume_ml;
    const bool empty = s.voxels == 0;  // as the statistics JSON: no intensity of an empty label
    d["mean"] = empty ? py::object(py::none()) : py::object(py::float_(s.mean));
    d["min"] = empty ? py::object(py::none()) : py::object(py::float_(s.min));
    d["max"] = empty ? py::object(py::none()) : py::object(py::float_(s.max));
    l.append(d);
  }
  return l;
}

std::vector<Volume> volumes_from(py::handle obj) {
  std::vector<Volume> v;
  if (py::isinstance<Volume>(obj)) {
    v.push_back(obj.cast<Volume>());
    return v;
  }
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    for (auto item : obj) {
      if (!py::isinstance<Volume>(item))
        throw Error(ErrorCode::invalid_input, "expected voxinfer.Volume objects, got " +
                                                  py::str(py::type::of(item).attr("__name__")).cast<std::string>());
      v.push_back(item.cast<Volume>());
    }
    if (v.empty()) throw Error(ErrorCode::invalid_input, "no input volume");
    return v;
  }
  throw Error(ErrorCode::invalid_input, "expected a voxinfer.Volume or a list of them (one per channel), got " +
                                            py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
}

class PySegmentationPipeline {
 public:
  struct Options {
    std::optional<int> threads;
    std::optional<double> overlap;
    std::optional<bool> tta;
    std::optional<std::vector<int>> folds;
    double step_size = 0.5;
    std::string checkpoint = "final";
    bool postprocess = true;
    std::optional<std::string> network;
  };

  PySegmentationPipeline(const std::string& dir, Options o) : dir_(dir), options_(std::move(o)) {
    const int threads = options_.threads.value_or(0);
    VOXINFER_CHECK(threads >= 0, invalid_input, "threads must be >= 0");
    const bool composite = nnunet::is_composite_folder(dir_);
    if (composite || nnunet::is_model_folder(dir_)) {
      VOXINFER_CHECK(!options_.overlap && !options_.network, invalid_input,
                     "nnU-Net folders take step_size and tta, not overlap or network");
      VOXINFER_CHECK(options_.step_size > 0 && options_.step_size <= 1, invalid_input, "step_size must be in (0, 1]");
      if (composite) {
        VOXINFER_CHECK(!options_.folds, invalid_input, "a composite package sets folds per model");
        kind_ = "nnunet_composite";
        composite_ = nnunet::load_composite(dir_);
        for (const auto& [v, n] : composite_->labels) labels_.push_back(LabelSpec{v, n, std::nullopt, std::nullopt});
        return;
      }
      nnunet::LoadOptions lo;
      if (options_.folds) lo.folds = *options_.folds;
      VOXINFER_CHECK(options_.checkpoint == "final" || options_.checkpoint == "best", invalid_input,
                     "checkpoint must be 'final' or 'best'");
      lo.checkpoint = "checkpoint_" + options_.checkpoint + ".pth";
      lo.threads = threads;
      kind_ = "nnunet";
      model_ = std::make_unique<nnunet::Model>(app::open_nnunet_model(dir_, lo));
      const auto& ds = model_->dataset();
      // Label names as the command line's statistics: region-based heads in regions_class_order.
      if (ds.has_regions) {
        for (std::size_t k = 0; k < ds.regions_class_order.size(); ++k)
          labels_.push_back(LabelSpec{ds.regions_class_order[k], ds.head_names()[k], std::nullopt, std::nullopt});
      } else {
        for (const auto& l : ds.labels)
          if (l.values[0] != 0) labels_.push_back(LabelSpec{l.values[0], l.name, std::nullopt, std::nullopt});
      }
      return;
    }
    VOXINFER_CHECK(
        !options_.folds && options_.step_size == 0.5 && options_.checkpoint == "final" && options_.postprocess,
        invalid_input, "folds, step_size, checkpoint and postprocess are for nnU-Net folders");
    SegmentationOptions so;
    so.threads = threads;
    so.overlap = options_.overlap;
    so.tta = options_.tta;
    if (monai::is_bundle(dir_)) {
      monai::BundleOptions bo;
      if (options_.network) bo.network = *options_.network;
      kind_ = "monai_bundle";
      pipeline_ = std::make_unique<SegmentationPipeline>(monai::open_segmentation(dir_, bo, so));
    } else {
      VOXINFER_CHECK(!options_.network, invalid_input, "network is for MONAI bundles");
      kind_ = "package";
      pipeline_ = std::make_unique<SegmentationPipeline>(dir_, so);
    }
    labels_ = pipeline_->spec().labels;
  }

  const std::string& kind() const { return kind_; }
  const std::string& dir() const { return dir_; }
  const std::vector<LabelSpec>& labels() const { return labels_; }

  PySegmentationResult run(py::handle input, bool probabilities) {
    std::vector<Volume> channels = volumes_from(input);
    if (probabilities && kind_ != "nnunet")
      throw Error(ErrorCode::invalid_input, "probabilities are returned for nnU-Net folders only");
    std::optional<Volume> labels, probs;
    std::vector<LabelStats> stats;
    py::dict info;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      const int threads = options_.threads.value_or(0);
      if (threads) set_num_threads(threads);
      if (pipeline_) {
        VOXINFER_CHECK(channels.size() == 1, invalid_input,
                       "this model package takes one volume (several channels go in one Volume)");
        SegmentationResult r = pipeline_->run(channels[0]);
        labels = std::move(r.labels);
        stats = std::move(r.stats);
        py::gil_scoped_acquire acquire;
        info["tiles"] = r.window.tiles;
        info["seconds_inference"] = r.seconds_inference;
        info["seconds_postprocess"] = r.seconds_postprocess;
      } else if (model_) {
        nnunet::PredictOptions po;
        po.step_size = options_.step_size;
        po.mirroring = options_.tta.value_or(true);
        po.probabilities = probabilities;
        po.postprocess = options_.postprocess;
        nnunet::Prediction r = nnunet::predict(*model_, channels, po);
        stats = label_statistics(r.labels, channels[0], labels_);
        labels = std::move(r.labels);
        if (probabilities) probs = std::move(r.probabilities);
        py::gil_scoped_acquire acquire;
        info["tiles"] = r.tiles;
        info["seconds_preprocess"] = r.seconds_preprocess;
        info["seconds_inference"] = r.seconds_inference;
        info["seconds_export"] = r.seconds_export;
      } else {
        auto r = nnunet::run_composite(dir_, *composite_, channels, app::read_nnunet_checkpoint, threads);
        stats = label_statistics(r.labels, channels[0], labels_);
        labels = std::move(r.labels);
        py::gil_scoped_acquire acquire;
        info["tiles"] = r.tiles;
        info["seconds"] = r.seconds;
        if (r.crop_box) info["crop_box_xyz"] = *r.crop_box;
      }
    }
    PySegmentationResult out;
    out.labels = py::cast(std::move(*labels));
    out.probabilities = probs ? py::cast(std::move(*probs)) : py::none();
    out.stats = stats_to_python(stats);
    out.info = info;
    return out;
  }

 private:
  std::string dir_;
  Options options_;
  std::string kind_;
  std::vector<LabelSpec> labels_;
  std::unique_ptr<SegmentationPipeline> pipeline_;
  std::unique_ptr<nnunet::Model> model_;
  std::optional<nnunet::CompositeSpec> composite_;
  std::mutex mutex_;
};

py::list labels_to_python(const std::vector<LabelSpec>& labels) {
  py::list l;
  for (const auto& s : labels) {
    py::dict d;
    d["value"] = s.value;
    d["name"] = s.name;
    if (s.color) d["color"] = py::make_tuple((*s.color)[0], (*s.color)[1], (*s.color)[2]);
    l.append(d);
  }
  return l;
}

struct PyClassificationPipeline {
  std::unique_ptr<ClassificationPipeline> pipeline;
  std::string dir;
  std::mutex mutex;
};

}  // namespace

void register_pipeline(py::module_& m) {
  py::class_<PySegmentationResult>(m, "SegmentationResult", "What SegmentationPipeline.run returns.")
      .def_readonly("labels", &PySegmentationResult::labels,
                    "Volume of label values (integers stored as float32) on the input's exact grid.")
      .def_readonly(
          "probabilities", &PySegmentationResult::probabilities,
          "Volume with one channel per class on the input grid (run(probabilities=True), nnU-Net), else None.")
      .def_readonly("stats", &PySegmentationResult::stats,
                    "List of dicts per label: value, name, voxels, volume_ml, mean, min, max (intensity of the first "
                    "input channel; None for an empty label), as the command line's --stats JSON.")
      .def_readonly("info", &PySegmentationResult::info, "Dict: tiles and seconds per stage.")
      .def("__repr__", [](const PySegmentationResult& r) {
        return "SegmentationResult(labels=" + py::repr(r.labels).cast<std::string>() + ")";
      });

  py::class_<PySegmentationPipeline>(m, "SegmentationPipeline", R"doc(A segmentation model package applied to Volumes.

SegmentationPipeline(model_dir, threads=None, overlap=None, tta=None, folds=None,
                     step_size=0.5, checkpoint='final', postprocess=True, network=None)

model_dir: any package `voxinfer segment --model` accepts: a folder with pipeline.json, a
    MONAI bundle (configs/inference.json), an nnU-Net v2 results folder (plans.json,
    dataset.json, fold_N/) or a composite nnU-Net package (nnunet_composite.json).
threads: threads (None: VOXINFER_NUM_THREADS or all cores; process-wide).
tta: mirror test-time augmentation; None is the package's default (nnU-Net: the trainer's
    mirror axes, on).
overlap: sliding-window overlap in [0, 1), pipeline.json packages and bundles.
folds, step_size, checkpoint ('final' or 'best'), postprocess: nnU-Net folders, as
    nnUNetv2_predict's -f, -step_size, -chk and the folder's postprocessing.json.
network: MONAI bundles, the ONNX file to run (default: models/model.onnx).)doc")
      .def(py::init([](const std::string& dir, std::optional<int> threads, std::optional<double> overlap,
                       std::optional<bool> tta, std::optional<std::vector<int>> folds, double step_size,
                       const std::string& checkpoint, bool postprocess, std::optional<std::string> network) {
             PySegmentationPipeline::Options o;
             o.threads = threads;
             o.overlap = overlap;
             o.tta = tta;
             o.folds = std::move(folds);
             o.step_size = step_size;
             o.checkpoint = checkpoint;
             o.postprocess = postprocess;
             o.network = std::move(network);
             py::gil_scoped_release release;
             return std::make_unique<PySegmentationPipeline>(dir, std::move(o));
           }),
           py::arg("model_dir"), py::kw_only(), py::arg("threads") = py::none(), py::arg("overlap") = py::none(),
           py::arg("tta") = py::none(), py::arg("folds") = py::none(), py::arg("step_size") = 0.5,
           py::arg("checkpoint") = "final", py::arg("postprocess") = true, py::arg("network") = py::none())
      .def_property_readonly("kind", &PySegmentationPipeline::kind,
                             "'package', 'monai_bundle', 'nnunet' or 'nnunet_composite'.")
      .def_property_readonly("model_dir", &PySegmentationPipeline::dir)
      .def_property_readonly(
          "labels", [](const PySegmentationPipeline& p) { return labels_to_python(p.labels()); },
          "List of dicts {value, name[, color]} of the labels the model writes.")
      .def("run", &PySegmentationPipeline::run, py::arg("volume"), py::arg("probabilities") = false,
           R"doc(Segments a study.

volume: a Volume, or a list of Volumes on one grid (nnU-Net models with several input
    channels: one per channel, in dataset.json's order).
probabilities: also return the class probabilities (nnU-Net folders).
Returns a SegmentationResult (labels on the input's exact grid, stats, info).)doc")
      .def("__call__", &PySegmentationPipeline::run, py::arg("volume"), py::arg("probabilities") = false)
      .def("__repr__", [](const PySegmentationPipeline& p) {
        return "SegmentationPipeline('" + p.dir() + "', kind='" + p.kind() + "')";
      });

  py::class_<PyClassificationPipeline>(m, "ClassificationPipeline",
                                       R"doc(A classification model package applied to Volumes.

ClassificationPipeline(model_dir, threads=None, uncertainty=False)

model_dir: a folder with pipeline.json ("task": "classification") and the model.
uncertainty: also run flip test-time augmentation (8 passes) and report per-class spread.)doc")
      .def(py::init([](const std::string& dir, std::optional<int> threads, bool uncertainty) {
             VOXINFER_CHECK(threads.value_or(0) >= 0, invalid_input, "threads must be >= 0");
             ClassificationOptions o;
             o.threads = threads.value_or(0);
             o.uncertainty = uncertainty;
             auto p = std::make_unique<PyClassificationPipeline>();
             p->dir = dir;
             py::gil_scoped_release release;
             p->pipeline = std::make_unique<ClassificationPipeline>(dir, o);
             return p;
           }),
           py::arg("model_dir"), py::kw_only(), py::arg("threads") = py::none(), py::arg("uncertainty") = false)
      .def(
          "run",
          [](PyClassificationPipeline& p, py::handle input, std::vector<float> tabular) {
            std::vector<Volume> channels = volumes_from(input);
            ClassificationResult r;
            {
              py::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(p.mutex);
              r = p.pipeline->run(channels, tabular);
            }
            py::dict out;
            py::list classes;
            for (const auto& c : r.classes)
              classes.append(py::dict(py::arg("name") = c.name, py::arg("probability") = c.probability));
            out["classes"] = classes;
            out["top"] = r.classes.empty() ? py::object(py::none())
                                           : py::object(py::str(r.classes[static_cast<std::size_t>(r.top)].name));
            out["logits"] = r.logits;
            if (!r.uncertainty.empty()) {
              py::list u;
              for (const auto& c : r.uncertainty)
                u.append(py::dict(py::arg("name") = c.name, py::arg("mean") = c.mean, py::arg("std") = c.std,
                                  py::arg("vvc") = c.vvc));
              out["uncertainty"] = u;
            }
            return out;
          },
          py::arg("volume"), py::arg("tabular") = std::vector<float>{},
          R"doc(Classifies a study: a Volume or a list of Volumes stacked as channels, plus the
tabular values the package declares. Returns {'classes': [{'name', 'probability'}, ...],
'top': name, 'logits': [...], 'uncertainty': [...] with uncertainty=True}.)doc")
      .def_property_readonly(
          "classes", [](const PyClassificationPipeline& p) { return p.pipeline->spec().classes; },
          "The class names, in output order.");
}

}  // namespace voxinfer::python
