#include "voxinfer/app/nnunet.h"

#include "voxinfer/core/error.h"
#include "voxinfer/io/torch_checkpoint.h"

namespace voxinfer::app {

nnunet::Checkpoint read_nnunet_checkpoint(const std::filesystem::path& file) {
  const PyValue root = load_torch_checkpoint(file);
  const std::string what = file.string();
  if (root.kind != PyValue::Kind::dict)
    fail(ErrorCode::invalid_model, what + ": not an nnU-Net checkpoint (the top level is not a dict)");
  const PyValue* w = root.find("network_weights");
  if (!w)
    fail(ErrorCode::invalid_model,
         what + ": not an nnU-Net checkpoint (no 'network_weights'; a bare state dict was probably saved)");
  nnunet::Checkpoint c;
  c.weights = torch_state_dict(*w, what + ": network_weights");
  // torch.compile'd trainers save the weights under "_orig_mod."; strip it as nnU-Net does.
  std::map<std::string, Tensor> renamed;
  for (auto& [k, t] : c.weights) renamed[k.rfind("_orig_mod.", 0) == 0 ? k.substr(10) : k] = t;
  c.weights = std::move(renamed);
  if (const PyValue* m = root.find("inference_allowed_mirroring_axes")) {
    if (m->kind == PyValue::Kind::list || m->kind == PyValue::Kind::tuple) {
      std::vector<int> axes;
      for (const auto& a : m->items) {
        if (a.kind != PyValue::Kind::integer || a.integer < 0 || a.integer > 2)
          fail(ErrorCode::invalid_model, what + ": inference_allowed_mirroring_axes must hold axis numbers 0..2");
        axes.push_back(static_cast<int>(a.integer));
      }
      c.mirror_axes = axes;
    } else if (m->kind != PyValue::Kind::none) {
      fail(ErrorCode::invalid_model, what + ": inference_allowed_mirroring_axes must be a tuple or None");
    }
  } else {
    c.mirror_axes = std::vector<int>{};  // older checkpoints: nnU-Net falls back to no mirroring info
    c.mirror_axes.reset();
  }
  if (const PyValue* t = root.find("trainer_name"); t && t->kind == PyValue::Kind::string) c.trainer_name = t->text;
  if (const PyValue* ia = root.find("init_args"); ia && ia->kind == PyValue::Kind::dict)
    if (const PyValue* cfg = ia->find("configuration"); cfg && cfg->kind == PyValue::Kind::string)
      c.configuration = cfg->text;
  return c;
}

nnunet::Model open_nnunet_model(const std::filesystem::path& folder, const nnunet::LoadOptions& options) {
  return nnunet::Model::open(folder, read_nnunet_checkpoint, options);
}

}  // namespace voxinfer::app
