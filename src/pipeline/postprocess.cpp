// Activations, argmax, connected components and label statistics.
#include "voxinfer/pipeline/postprocess.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer {
namespace {

constexpr std::int64_t kGrain = 1 << 14;
// Planes per union-find slab: fixed, so the labelling never depends on the thread count.
constexpr std::int64_t kSlabPlanes = 4;

void require_channels(const Tensor& t, const char* what) {
  VOXINFER_CHECK(t.defined() && t.dtype() == DType::f32 && t.rank() >= 2 && t.is_contiguous(), invalid_input,
                 std::string(what) + ": expected a contiguous f32 tensor [K, ...], got " + t.shape().str());
}

Shape single_channel(const Tensor& t) {
  Shape s = t.shape();
  s[0] = 1;
  return s;
}

void require_label_map(const Volume& v, const char* what) {
  VOXINFER_CHECK(v.data.defined() && v.data.rank() == 4 && v.channels() == 1 && v.data.dtype() == DType::f32 &&
                     v.data.is_contiguous(),
                 invalid_input, std::string(what) + ": expected a single-channel label volume");
}

// Union-find over voxel indices, roots are the smallest index of their set. The parent
// array is the output id array itself, so labelling costs 4 bytes per voxel.
struct DisjointSets {
  std::uint32_t* parent;

  std::uint32_t find(std::uint32_t i) {
    while (parent[i] != i) {
      parent[i] = parent[parent[i]];  // path halving
      i = parent[i];
    }
    return i;
  }
  void unite(std::uint32_t a, std::uint32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (a < b) parent[b] = a;
    else parent[a] = b;
  }
};

struct Offset {
  int dz, dy, dx;
};

// Neighbours that come earlier in raster order.
std::vector<Offset> previous_neighbours(int connectivity) {
  VOXINFER_CHECK(connectivity == 6 || connectivity == 26, invalid_input,
                 "connected components: connectivity must be 6 or 26, got " + std::to_string(connectivity));
  if (connectivity == 6) return {{-1, 0, 0}, {0, -1, 0}, {0, 0, -1}};
  std::vector<Offset> out;
  for (int dz = -1; dz <= 0; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        if (dz == 0 && (dy > 0 || (dy == 0 && dx >= 0))) continue;
        out.push_back({dz, dy, dx});
      }
  return out;  // 13
}

}  // namespace

// ---- channels -----------------------------------------------------------------------

void softmax_channels(Tensor& t) {
  require_channels(t, "softmax");
  const std::int64_t k = t.dim(0), n = t.numel() / k;
  float* p = t.data<float>();
  parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      float m = p[i];
      for (std::int64_t c = 1; c < k; ++c) m = std::max(m, p[c * n + i]);
      float sum = 0;
      for (std::int64_t c = 0; c < k; ++c) {
        const float x = std::exp(p[c * n + i] - m);
        p[c * n + i] = x;
        sum += x;
      }
      for (std::int64_t c = 0; c < k; ++c) p[c * n + i] /= sum;
    }
  });
}

void sigmoid_inplace(Tensor& t) {
  require_channels(t, "sigmoid");
  float* p = t.data<float>();
  parallel_for(t.numel(), kGrain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) p[i] = 1.f / (1.f + std::exp(-p[i]));
  });
}

void apply_activation(Tensor& t, Activation a) {
  if (a == Activation::softmax) softmax_channels(t);
  else if (a == Activation::sigmoid) sigmoid_inplace(t);
}

Tensor argmax_channels(const Tensor& t) {
  require_channels(t, "argmax");
  const std::int64_t k = t.dim(0), n = t.numel() / k;
  Tensor out(single_channel(t), DType::f32);
  const float* p = t.data<float>();
  float* o = out.data<float>();
  parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      std::int64_t best = 0;
      float m = p[i];
      for (std::int64_t c = 1; c < k; ++c)
        if (p[c * n + i] > m) {
          m = p[c * n + i];
          best = c;
        }
      o[i] = static_cast<float>(best);
    }
  });
  return out;
}

Tensor threshold_channels(const Tensor& t, std::span<const int> values, float threshold) {
  require_channels(t, "threshold");
  const std::int64_t k = t.dim(0), n = t.numel() / k;
  VOXINFER_CHECK(static_cast<std::int64_t>(values.size()) == k, invalid_model,
                 "the network has " + std::to_string(k) + " output channels but " + std::to_string(values.size()) +
                     " labels are listed (sigmoid outputs need one label per channel)");
  Tensor out(single_channel(t), DType::f32);
  const float* p = t.data<float>();
  float* o = out.data<float>();
  parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      float v = 0;
      for (std::int64_t c = 0; c < k; ++c)
        if (p[c * n + i] >= threshold) v = static_cast<float>(values[static_cast<std::size_t>(c)]);
      o[i] = v;
    }
  });
  return out;
}

Tensor predict_labels(const Tensor& logits, Activation activation, float threshold, std::span<const int> values) {
  if (activation != Activation::sigmoid) return argmax_channels(logits);  // softmax keeps the argmax
  Tensor p = logits.clone();
  sigmoid_inplace(p);
  return threshold_channels(p, values, threshold);
}

// ---- connected components -----------------------------------------------------------

Components connected_components(const Volume& labels, int connectivity) {
  require_label_map(labels, "connected components");
  const std::vector<Offset> nbrs = previous_neighbours(connectivity);
  const std::int64_t nz = labels.nz(), ny = labels.ny(), nx = labels.nx(), n = labels.voxels();
  VOXINFER_CHECK(n < static_cast<std::int64_t>(std::numeric_limits<std::int32_t>::max()), unsupported,
                 "connected components: volumes of 2^31 voxels or more are not supported");
  const float* lab = labels.channel(0);
  Components c;
  c.ids = Tensor(Shape{nz, ny, nx}, DType::i32);
  auto* ids = c.ids.data<std::int32_t>();
  // int32 and uint32 may alias each other.
  DisjointSets ds{reinterpret_cast<std::uint32_t*>(ids)};

  // Links voxel (z, y, x) to its earlier neighbours with the same label, staying at or
  // above plane z_min.
  auto link = [&](std::int64_t z, std::int64_t y, std::int64_t x, std::int64_t z_min, bool only_previous_plane) {
    const std::int64_t i = (z * ny + y) * nx + x;
    const float v = lab[i];
    for (const Offset& o : nbrs) {
      if (only_previous_plane && o.dz == 0) continue;
      const std::int64_t zz = z + o.dz, yy = y + o.dy, xx = x + o.dx;
      if (zz < z_min || yy < 0 || yy >= ny || xx < 0 || xx >= nx) continue;
      const std::int64_t j = (zz * ny + yy) * nx + xx;
      if (lab[j] == v) ds.unite(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(j));
    }
  };

  // Slabs are labelled independently (disjoint index ranges), then stitched in order.
  parallel_for(nz, kSlabPlanes, [&](std::int64_t zb, std::int64_t ze) {
    for (std::int64_t i = zb * ny * nx; i < ze * ny * nx; ++i) ds.parent[i] = static_cast<std::uint32_t>(i);
    for (std::int64_t z = zb; z < ze; ++z)
      for (std::int64_t y = 0; y < ny; ++y)
        for (std::int64_t x = 0; x < nx; ++x)
          if (lab[(z * ny + y) * nx + x] != 0.f) link(z, y, x, zb, false);
  });
  for (std::int64_t z = kSlabPlanes; z < nz; z += kSlabPlanes)
    for (std::int64_t y = 0; y < ny; ++y)
      for (std::int64_t x = 0; x < nx; ++x)
        if (lab[(z * ny + y) * nx + x] != 0.f) link(z, y, x, z - 1, true);

  // Point every voxel at its root, then replace roots by ids in raster order: a voxel's
  // root comes earlier, so it already holds its id when the voxel is reached.
  for (std::int64_t i = 0; i < n; ++i)
    if (lab[i] != 0.f) ds.parent[i] = ds.find(static_cast<std::uint32_t>(i));
  c.voxels.push_back(0);
  c.values.push_back(0);
  for (std::int64_t i = 0; i < n; ++i) {
    if (lab[i] == 0.f) {
      ids[i] = 0;
      continue;
    }
    const std::uint32_t r = ds.parent[i];
    if (r == static_cast<std::uint32_t>(i)) {
      ids[i] = static_cast<std::int32_t>(c.voxels.size());
      c.voxels.push_back(0);
      c.values.push_back(static_cast<int>(lab[i]));
    } else {
      ids[i] = ids[r];
    }
    ++c.voxels[static_cast<std::size_t>(ids[i])];
  }
  return c;
}

namespace {

void erase_components(Volume& labels, const Components& c, const std::vector<char>& erase) {
  float* lab = labels.channel(0);
  const auto* ids = c.ids.data<std::int32_t>();
  parallel_for(labels.voxels(), kGrain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i)
      if (ids[i] > 0 && erase[static_cast<std::size_t>(ids[i])]) lab[i] = 0.f;
  });
}

void mark_all_but_largest(const Components& c, std::span<const int> values, std::vector<char>& erase) {
  for (int v : values) {
    std::int64_t best = 0;
    for (std::int64_t id = 1; id <= c.count(); ++id) {
      const auto k = static_cast<std::size_t>(id);
      if (c.values[k] == v && (best == 0 || c.voxels[k] > c.voxels[static_cast<std::size_t>(best)])) best = id;
    }
    for (std::int64_t id = 1; id <= c.count(); ++id)
      if (c.values[static_cast<std::size_t>(id)] == v && id != best) erase[static_cast<std::size_t>(id)] = 1;
  }
}

void mark_small(const Components& c, const Geometry& g, double min_mm3, std::vector<char>& erase) {
  const double voxel_mm3 = g.spacing.prod();
  for (std::int64_t id = 1; id <= c.count(); ++id)
    if (static_cast<double>(c.voxels[static_cast<std::size_t>(id)]) * voxel_mm3 < min_mm3) erase[static_cast<std::size_t>(id)] = 1;
}

}  // namespace

void keep_largest_component(Volume& labels, std::span<const int> values, int connectivity) {
  if (values.empty()) return;
  const Components c = connected_components(labels, connectivity);
  std::vector<char> erase(static_cast<std::size_t>(c.count() + 1), 0);
  mark_all_but_largest(c, values, erase);
  erase_components(labels, c, erase);
}

void remove_small_components(Volume& labels, double min_mm3, int connectivity) {
  if (!(min_mm3 > 0)) return;
  const Components c = connected_components(labels, connectivity);
  std::vector<char> erase(static_cast<std::size_t>(c.count() + 1), 0);
  mark_small(c, labels.geometry, min_mm3, erase);
  erase_components(labels, c, erase);
}

void postprocess_labels(Volume& labels, const PostprocessSpec& spec) {
  if (spec.keep_largest_foreground) keep_largest_foreground(labels, spec.connectivity);
  if (!spec.keep_largest_component.empty() || spec.remove_small_mm3 > 0) {
    // Erasing whole components leaves the others intact, so one labelling serves both steps.
    const Components c = connected_components(labels, spec.connectivity);
    std::vector<char> erase(static_cast<std::size_t>(c.count() + 1), 0);
    mark_all_but_largest(c, spec.keep_largest_component, erase);
    if (spec.remove_small_mm3 > 0) mark_small(c, labels.geometry, spec.remove_small_mm3, erase);
    erase_components(labels, c, erase);
  }
  if (spec.binarize) {
    float* p = labels.channel(0);
    for (std::int64_t i = 0; i < labels.voxels(); ++i) p[i] = p[i] != 0 ? 1.f : 0.f;
  }
}

Volume masked_image(const Volume& image, const Volume& labels) {
  require_label_map(labels, "masked image");
  VOXINFER_CHECK(image.nx() == labels.nx() && image.ny() == labels.ny() && image.nz() == labels.nz(), invalid_input,
                 "masked image: the labels do not lie on the image's grid");
  Volume out(1, labels.nz(), labels.ny(), labels.nx(), labels.geometry);
  out.metadata = image.metadata;
  const float* src = image.channel(0);
  const float* lab = labels.channel(0);
  float* dst = out.channel(0);
  for (std::int64_t i = 0; i < out.voxels(); ++i) dst[i] = lab[i] != 0 ? src[i] : 0.f;
  return out;
}

// ---- statistics ---------------------------------------------------------------------

namespace {

struct Acc {
  std::int64_t n = 0;
  double sum = 0;
  float min = std::numeric_limits<float>::infinity(), max = -std::numeric_limits<float>::infinity();
};

}  // namespace

std::vector<LabelStats> label_statistics(const Volume& labels, const Volume& image, std::span<const LabelSpec> names,
                                         int channel) {
  require_label_map(labels, "label statistics");
  VOXINFER_CHECK(image.data.defined() && image.nz() == labels.nz() && image.ny() == labels.ny() && image.nx() == labels.nx(),
                 invalid_input, "label statistics: the image and the label map must have the same size");
  VOXINFER_CHECK(channel >= 0 && channel < image.channels(), invalid_input,
                 "label statistics: channel " + std::to_string(channel) + " out of range");
  const float* lab = labels.channel(0);
  const float* img = image.channel(channel);
  const std::int64_t n = labels.voxels();
  // Largest label value first, so that each chunk can count into a dense table.
  const float top = parallel_reduce(
      n, 1 << 20, 0.f,
      [&](std::int64_t b, std::int64_t e) {
        float m = 0;
        for (std::int64_t i = b; i < e; ++i) {
          const float v = lab[i];
          VOXINFER_CHECK(v >= 0 && v <= 65535 && v == std::floor(v), invalid_input,
                         "label statistics: label maps hold integers in [0, 65535], found " + std::to_string(v));
          m = std::max(m, v);
        }
        return m;
      },
      [](float a, float b) { return std::max(a, b); });
  const auto size = static_cast<std::size_t>(top) + 1;
  const std::vector<Acc> acc = parallel_reduce(
      n, 1 << 20, std::vector<Acc>(size),
      [&](std::int64_t b, std::int64_t e) {
        std::vector<Acc> a(size);
        for (std::int64_t i = b; i < e; ++i) {
          Acc& s = a[static_cast<std::size_t>(lab[i])];
          ++s.n;
          s.sum += img[i];
          s.min = std::min(s.min, img[i]);
          s.max = std::max(s.max, img[i]);
        }
        return a;
      },
      [](std::vector<Acc> x, const std::vector<Acc>& y) {
        for (std::size_t i = 0; i < x.size(); ++i) {
          x[i].n += y[i].n;
          x[i].sum += y[i].sum;
          x[i].min = std::min(x[i].min, y[i].min);
          x[i].max = std::max(x[i].max, y[i].max);
        }
        return x;
      });
  const double voxel_ml = labels.geometry.spacing.prod() / 1000.0;
  auto make = [&](int value, const std::string& name) {
    LabelStats s;
    s.value = value;
    s.name = name;
    if (value >= 0 && static_cast<std::size_t>(value) < acc.size()) {
      const Acc& a = acc[static_cast<std::size_t>(value)];
      s.voxels = a.n;
      if (a.n > 0) {
        s.mean = a.sum / static_cast<double>(a.n);
        s.min = a.min;
        s.max = a.max;
      }
    }
    s.volume_ml = static_cast<double>(s.voxels) * voxel_ml;
    return s;
  };
  std::vector<LabelStats> out;
  std::vector<char> listed(acc.size(), 0);
  for (const auto& l : names) {
    out.push_back(make(l.value, l.name));
    if (static_cast<std::size_t>(l.value) < listed.size()) listed[static_cast<std::size_t>(l.value)] = 1;
  }
  for (std::size_t v = 1; v < acc.size(); ++v)
    if (!listed[v] && acc[v].n > 0) out.push_back(make(static_cast<int>(v), ""));
  return out;
}

std::string to_json(std::span<const LabelStats> stats) {
  nlohmann::ordered_json j;
  j["labels"] = nlohmann::ordered_json::array();
  for (const auto& s : stats) {
    nlohmann::ordered_json e;
    e["value"] = s.value;
    e["name"] = s.name;
    e["voxels"] = s.voxels;
    e["volume_ml"] = s.volume_ml;
    if (s.voxels > 0) {
      e["mean"] = s.mean;
      e["min"] = s.min;
      e["max"] = s.max;
    } else {
      e["mean"] = nullptr;
      e["min"] = nullptr;
      e["max"] = nullptr;
    }
    j["labels"].push_back(std::move(e));
  }
  return j.dump(2);
}

}  // namespace voxinfer
