// Sliding-window inference with Gaussian blending, mirror TTA and slab streaming.
// The accumulator is a ring of axis-0 planes: tiles run in order of their axis-0 start,
// so once every tile starting before plane p has run, the planes below the next start
// are final and leave the ring.
#include "voxinfer/pipeline/sliding_window.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer {
namespace {

constexpr std::size_t kF32 = sizeof(float);

std::int64_t vol3(const Size3& s) { return s[0] * s[1] * s[2]; }

std::string size_str(const Size3& s) {
  return "[" + std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) + "]";
}

void validate(const SlidingWindowOptions& o) {
  for (std::size_t a = 0; a < 3; ++a) {
    VOXINFER_CHECK(o.roi_size[a] > 0, invalid_input, "sliding window: roi_size " + size_str(o.roi_size) + " must be positive");
    VOXINFER_CHECK(o.overlap[a] >= 0 && o.overlap[a] < 1, invalid_input,
                   "sliding window: overlap " + std::to_string(o.overlap[a]) + " must be in [0, 1)");
  }
  VOXINFER_CHECK(o.batch >= 1, invalid_input, "sliding window: batch must be at least 1");
  VOXINFER_CHECK(o.blend == BlendMode::constant || o.sigma_scale > 0, invalid_input,
                 "sliding window: sigma_scale must be positive");
  for (int a : o.mirror_axes) VOXINFER_CHECK(a >= 0 && a <= 2, invalid_input, "sliding window: mirror axis must be 0, 1 or 2");
}

// Mirror combinations in nnU-Net's order: all subsets of the listed axes, by size, then
// in list order (itertools.combinations).
std::vector<std::array<bool, 3>> mirror_combinations(const std::vector<int>& axes) {
  std::vector<std::array<bool, 3>> out;
  const int n = static_cast<int>(axes.size());
  for (int k = 1; k <= n; ++k) {
    std::vector<int> idx(static_cast<std::size_t>(k));
    for (int i = 0; i < k; ++i) idx[static_cast<std::size_t>(i)] = i;
    while (true) {
      std::array<bool, 3> m{false, false, false};
      for (int i : idx) m[static_cast<std::size_t>(axes[static_cast<std::size_t>(i)])] = true;
      out.push_back(m);
      int i = k - 1;
      while (i >= 0 && idx[static_cast<std::size_t>(i)] == n - k + i) --i;
      if (i < 0) break;
      ++idx[static_cast<std::size_t>(i)];
      for (int j = i + 1; j < k; ++j) idx[static_cast<std::size_t>(j)] = idx[static_cast<std::size_t>(j - 1)] + 1;
    }
  }
  return out;
}

struct Tracker {
  std::size_t live = 0, peak = 0;
  void add(std::size_t n) {
    live += n;
    peak = std::max(peak, live);
  }
  void sub(std::size_t n) { live -= n; }
};

// Copies the batch's tiles out of the (virtually padded) image into [b, C, r0, r1, r2].
void gather(const Tensor& img, const SlidingWindowPlan& plan, std::size_t first, std::int64_t b, float pad, bool replicate,
            Tensor& out) {
  const std::int64_t c_in = img.dim(0);
  const Size3 s{img.dim(1), img.dim(2), img.dim(3)};
  const Size3& r = plan.roi;
  const float* src = img.data<float>();
  float* dst = out.data<float>();
  parallel_for(b * c_in * r[0], 1, [&](std::int64_t pb, std::int64_t pe) {
    for (std::int64_t p = pb; p < pe; ++p) {
      const std::int64_t n = p / (c_in * r[0]), c = (p / r[0]) % c_in, t0 = p % r[0];
      const Size3& st = plan.tiles[first + static_cast<std::size_t>(n)];
      float* d = dst + p * r[1] * r[2];
      const std::int64_t i0 = st[0] + t0 - plan.pad_lo[0];
      const std::int64_t x_lo = std::clamp(plan.pad_lo[2] - st[2], std::int64_t{0}, r[2]);
      const std::int64_t x_hi = std::clamp(s[2] + plan.pad_lo[2] - st[2], x_lo, r[2]);
      for (std::int64_t t1 = 0; t1 < r[1]; ++t1) {
        float* row = d + t1 * r[2];
        const std::int64_t i1 = st[1] + t1 - plan.pad_lo[1];
        if (replicate) {  // the padding repeats the nearest edge voxel (torch's "replicate")
          const std::int64_t j0 = std::clamp(i0, std::int64_t{0}, s[0] - 1), j1 = std::clamp(i1, std::int64_t{0}, s[1] - 1);
          const float* srow = src + ((c * s[0] + j0) * s[1] + j1) * s[2];
          for (std::int64_t t2 = 0; t2 < r[2]; ++t2)
            row[t2] = srow[std::clamp(st[2] + t2 - plan.pad_lo[2], std::int64_t{0}, s[2] - 1)];
          continue;
        }
        if (i0 < 0 || i0 >= s[0] || i1 < 0 || i1 >= s[1]) {
          std::fill(row, row + r[2], pad);
          continue;
        }
        std::fill(row, row + x_lo, pad);
        const float* srow = src + ((c * s[0] + i0) * s[1] + i1) * s[2] + (st[2] - plan.pad_lo[2]);
        std::memcpy(row + x_lo, srow + x_lo, static_cast<std::size_t>(x_hi - x_lo) * kF32);
        std::fill(row + x_hi, row + r[2], pad);
      }
    }
  });
}

// Adds `y` flipped along `axes` into `sum` (both [b, K, r0, r1, r2]).
void add_flipped(Tensor& sum, const Tensor& y, const std::array<bool, 3>& axes) {
  const std::int64_t bk = y.dim(0) * y.dim(1), r0 = y.dim(2), r1 = y.dim(3), r2 = y.dim(4);
  const float* src = y.data<float>();
  float* dst = sum.data<float>();
  parallel_for(bk * r0, 1, [&](std::int64_t pb, std::int64_t pe) {
    for (std::int64_t p = pb; p < pe; ++p) {
      const std::int64_t nk = p / r0, t0 = p % r0;
      const std::int64_t s0 = axes[0] ? r0 - 1 - t0 : t0;
      float* d = dst + p * r1 * r2;
      for (std::int64_t t1 = 0; t1 < r1; ++t1) {
        const std::int64_t s1 = axes[1] ? r1 - 1 - t1 : t1;
        const float* s = src + ((nk * r0 + s0) * r1 + s1) * r2;
        float* drow = d + t1 * r2;
        if (axes[2]) {
          for (std::int64_t t2 = 0; t2 < r2; ++t2) drow[t2] += s[r2 - 1 - t2];
        } else {
          for (std::int64_t t2 = 0; t2 < r2; ++t2) drow[t2] += s[t2];
        }
      }
    }
  });
}

class Runner {
 public:
  Runner(const Tensor& image, const SlidingWindowOptions& opt, const TileCallback& net, bool stream)
      : opt_(opt), net_(net), stream_(stream) {
    validate(opt);
    VOXINFER_CHECK(image.dtype() == DType::f32 && (image.rank() == 4 || (image.rank() == 5 && image.dim(0) == 1)),
                   invalid_input, "sliding window: expected an f32 image [C, S0, S1, S2] or [1, C, S0, S1, S2], got " +
                                      image.shape().str());
    img_ = image.contiguous();
    if (img_.rank() == 5) img_ = img_.reshape(Shape{img_.dim(1), img_.dim(2), img_.dim(3), img_.dim(4)});
    plan_ = plan_sliding_window({img_.dim(1), img_.dim(2), img_.dim(3)}, opt);
    ring_ = stream ? plan_.ring_planes : plan_.padded_size[0];
    imp_ = importance_map(plan_.roi, opt.blend, opt.sigma_scale, opt.style);
    track_.add(imp_.nbytes());
    mirrors_ = mirror_combinations(opt.mirror_axes);
  }

  // Runs every tile; calls emit(slab, begin) for finished planes.
  void run(const SlabConsumer& emit, SlidingWindowStats* stats) {
    const auto ntiles = static_cast<std::int64_t>(plan_.tiles.size());
    const std::int64_t c_in = img_.dim(0);
    for (std::int64_t first = 0; first < ntiles; first += plan_.batch) {
      const std::int64_t b = std::min(plan_.batch, ntiles - first);
      {
        Tensor x(Shape{b, c_in, plan_.roi[0], plan_.roi[1], plan_.roi[2]}, DType::f32);
        track_.add(x.nbytes());
        gather(img_, plan_, static_cast<std::size_t>(first), b, opt_.pad_value, opt_.pad_replicate, x);
        run_batch(x, static_cast<std::size_t>(first));
        track_.sub(x.nbytes());
      }
      ++batches_;
      const std::int64_t next = first + b < ntiles ? plan_.tiles[static_cast<std::size_t>(first + b)][0]
                                                   : plan_.padded_size[0];
      if (stream_ || next == plan_.padded_size[0]) emit_planes(next, emit);
      if (opt_.progress) opt_.progress(first + b, ntiles);
    }
    if (stats) {
      stats->tiles = ntiles;
      stats->batches = batches_;
      stats->network_calls = calls_;
      stats->out_channels = k_;
      stats->predicted_peak_bytes = predicted_peak_bytes(plan_, c_in, k_, stream_);
      stats->measured_peak_bytes = track_.peak;
    }
  }

 private:
  // Runs the network (and its mirrored passes) and accumulates the batch.
  void run_batch(const Tensor& x, std::size_t first) {
    const std::int64_t b = x.dim(0);
    Tensor y = call(x, b);
    if (mirrors_.empty()) {
      accumulate(y, first);
      track_.sub(y.nbytes());
      return;
    }
    // nnU-Net: (f(x) + sum over combinations of flip(f(flip(x)))) / (1 + combinations).
    Tensor sum = y.clone();
    track_.add(sum.nbytes());
    track_.sub(y.nbytes());
    y = Tensor();
    for (const auto& axes : mirrors_) {
      Tensor xf = flip_spatial(x, axes);
      track_.add(xf.nbytes());
      Tensor yf = call(xf, b);
      track_.sub(xf.nbytes());
      xf = Tensor();
      add_flipped(sum, yf, axes);
      track_.sub(yf.nbytes());
    }
    const auto n = static_cast<float>(mirrors_.size() + 1);
    float* p = sum.data<float>();
    parallel_for(sum.numel(), 1 << 16, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) p[i] /= n;
    });
    accumulate(sum, first);
    track_.sub(sum.nbytes());
  }

  Tensor call(const Tensor& x, std::int64_t b) {
    Tensor y = net_(x);
    ++calls_;
    const Size3& r = plan_.roi;
    VOXINFER_CHECK(y.defined() && y.dtype() == DType::f32 && y.rank() == 5 && y.dim(0) == b && y.dim(1) >= 1 &&
                       y.dim(2) == r[0] && y.dim(3) == r[1] && y.dim(4) == r[2],
                   invalid_model,
                   "sliding window: the network returned " + (y.defined() ? y.shape().str() : std::string("nothing")) +
                       " for a batch " + x.shape().str() + "; expected f32 [" + std::to_string(b) + ", K, " +
                       std::to_string(r[0]) + ", " + std::to_string(r[1]) + ", " + std::to_string(r[2]) + "]");
    if (k_ == 0) {
      k_ = y.dim(1);
      allocate();
    }
    VOXINFER_CHECK(y.dim(1) == k_, invalid_model,
                   "sliding window: the network returned " + std::to_string(y.dim(1)) + " channels after " +
                       std::to_string(k_));
    y = y.contiguous();
    track_.add(y.nbytes());
    return y;
  }

  void allocate() {
    const Size3& p = plan_.padded_size;
    acc_ = Tensor(Shape{k_, ring_, p[1], p[2]}, DType::f32);
    wsum_ = Tensor(Shape{ring_, p[1], p[2]}, DType::f32);
    track_.add(acc_.nbytes() + wsum_.nbytes());
  }

  // acc[k, slot(p0)] += w * y, wsum[slot(p0)] += w, tile after tile (deterministic order).
  void accumulate(const Tensor& y, std::size_t first) {
    const Size3& r = plan_.roi;
    const Size3& p = plan_.padded_size;
    const std::int64_t plane = p[1] * p[2], tile_plane = r[1] * r[2];
    const float* imp = imp_.data<float>();
    float* acc = acc_.data<float>();
    float* ws = wsum_.data<float>();
    const float* pred = y.data<float>();
    for (std::int64_t n = 0; n < y.dim(0); ++n) {
      const Size3& st = plan_.tiles[first + static_cast<std::size_t>(n)];
      parallel_for(r[0], 1, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t t0 = b; t0 < e; ++t0) {
          const std::int64_t slot = (st[0] + t0) % ring_;
          const float* w = imp + t0 * tile_plane;
          float* wp = ws + slot * plane + st[1] * p[2] + st[2];
          for (std::int64_t t1 = 0; t1 < r[1]; ++t1)
            for (std::int64_t t2 = 0; t2 < r[2]; ++t2) wp[t1 * p[2] + t2] += w[t1 * r[2] + t2];
          for (std::int64_t k = 0; k < k_; ++k) {
            const float* src = pred + ((n * k_ + k) * r[0] + t0) * tile_plane;
            float* dp = acc + (k * ring_ + slot) * plane + st[1] * p[2] + st[2];
            for (std::int64_t t1 = 0; t1 < r[1]; ++t1) {
              const float* s = src + t1 * r[2];
              const float* wr = w + t1 * r[2];
              float* d = dp + t1 * p[2];
              for (std::int64_t t2 = 0; t2 < r[2]; ++t2) d[t2] += wr[t2] * s[t2];
            }
          }
        }
      });
    }
  }

  // Normalises planes [emitted_, end) into a slab, hands it over and clears their slots.
  void emit_planes(std::int64_t end, const SlabConsumer& emit) {
    if (end <= emitted_) return;
    const Size3& p = plan_.padded_size;
    const Size3& s = plan_.image_size;
    const Size3& lo = plan_.pad_lo;
    const std::int64_t plane = p[1] * p[2];
    const std::int64_t oa = std::max(emitted_, lo[0]), oe = std::min(end, lo[0] + s[0]);
    if (oa < oe && k_ > 0) {
      const std::int64_t n = oe - oa;
      Tensor slab(Shape{k_, n, s[1], s[2]}, DType::f32);
      track_.add(slab.nbytes());
      const float* acc = acc_.data<float>();
      const float* ws = wsum_.data<float>();
      float* out = slab.data<float>();
      parallel_for(k_ * n, 1, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t q = b; q < e; ++q) {
          const std::int64_t k = q / n, i = q % n;
          const std::int64_t slot = (oa + i) % ring_;
          const float* a = acc + (k * ring_ + slot) * plane;
          const float* w = ws + slot * plane;
          float* d = out + q * s[1] * s[2];
          for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
            for (std::int64_t i2 = 0; i2 < s[2]; ++i2) {
              const std::int64_t off = (lo[1] + i1) * p[2] + lo[2] + i2;
              d[i1 * s[2] + i2] = a[off] / w[off];
            }
        }
      });
      emit(slab, oa - lo[0]);
      track_.sub(slab.nbytes());
    }
    if (stream_ && k_ > 0) {
      float* acc = acc_.data<float>();
      float* ws = wsum_.data<float>();
      for (std::int64_t q = emitted_; q < end; ++q) {
        const std::int64_t slot = q % ring_;
        std::fill(ws + slot * plane, ws + (slot + 1) * plane, 0.f);
        for (std::int64_t k = 0; k < k_; ++k)
          std::fill(acc + (k * ring_ + slot) * plane, acc + (k * ring_ + slot + 1) * plane, 0.f);
      }
    }
    emitted_ = end;
  }

  const SlidingWindowOptions& opt_;
  const TileCallback& net_;
  bool stream_;
  Tensor img_, imp_, acc_, wsum_;
  SlidingWindowPlan plan_;
  std::vector<std::array<bool, 3>> mirrors_;
  std::int64_t ring_ = 0, k_ = 0, emitted_ = 0, batches_ = 0, calls_ = 0;
  Tracker track_;
};

}  // namespace

SlidingWindowOptions SlidingWindowOptions::from_spec(const InferenceSpec& spec) {
  SlidingWindowOptions o;
  o.roi_size = spec.roi_size;
  o.overlap = spec.overlap;
  o.blend = spec.blend;
  o.sigma_scale = spec.sigma_scale;
  o.style = spec.style;
  o.mirror_axes = spec.mirror_axes;
  o.batch = spec.batch;
  o.pad_value = static_cast<float>(spec.pad_value);
  o.pad_replicate = spec.pad_replicate;
  return o;
}

std::vector<std::int64_t> tile_starts(std::int64_t size, std::int64_t roi, double overlap, WindowStyle style) {
  VOXINFER_CHECK(roi > 0 && size >= roi, invalid_input,
                 "tile_starts: size " + std::to_string(size) + " must be at least the roi " + std::to_string(roi));
  VOXINFER_CHECK(overlap >= 0 && overlap < 1, invalid_input, "tile_starts: overlap must be in [0, 1)");
  std::vector<std::int64_t> starts;
  if (roi == 1) {  // a 2D network run over the slices of a volume: every slice once
    for (std::int64_t i = 0; i < size; ++i) starts.push_back(i);
    return starts;
  }
  // An overlap close to 1 makes the step between tiles a fraction of a voxel and the tile
  // count grow without bound (0.9999 on a 96-voxel tile: 10^4 tiles per axis per voxel).
  VOXINFER_CHECK(size == roi || static_cast<double>(roi) * (1.0 - overlap) >= 1.0 - 1e-9, invalid_input,
                 "overlap " + std::to_string(overlap) + " moves a " + std::to_string(roi) +
                     "-voxel tile by less than one voxel; use an overlap of at most " +
                     std::to_string(1.0 - 1.0 / static_cast<double>(roi)));
  if (style == WindowStyle::nnunet) {
    const double step = static_cast<double>(roi) * (1.0 - overlap);
    const auto n = static_cast<std::int64_t>(std::ceil(static_cast<double>(size - roi) / step)) + 1;
    const double actual = n > 1 ? static_cast<double>(size - roi) / static_cast<double>(n - 1) : 0.0;
    for (std::int64_t i = 0; i < n; ++i)
      starts.push_back(static_cast<std::int64_t>(std::nearbyint(actual * static_cast<double>(i))));
    return starts;
  }
  // MONAI: _get_scan_interval + dense_patch_slices.
  std::int64_t interval = roi;
  if (roi != size) interval = std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(roi) * (1.0 - overlap)));
  const auto num = static_cast<std::int64_t>(std::ceil(static_cast<double>(size) / static_cast<double>(interval)));
  std::int64_t scan = 1;
  for (std::int64_t d = 0; d < num; ++d)
    if (d * interval + roi >= size) {
      scan = d + 1;
      break;
    }
  for (std::int64_t i = 0; i < scan; ++i) {
    std::int64_t s = i * interval;
    s -= std::max<std::int64_t>(s + roi - size, 0);
    starts.push_back(s);
  }
  return starts;
}

Tensor importance_map(const Size3& roi, BlendMode blend, double sigma_scale, WindowStyle style) {
  for (std::size_t a = 0; a < 3; ++a) VOXINFER_CHECK(roi[a] > 0, invalid_input, "importance_map: roi must be positive");
  Tensor map(Shape{roi[0], roi[1], roi[2]}, DType::f32);
  float* m = map.data<float>();
  const std::int64_t n = vol3(roi);
  if (blend == BlendMode::constant) {
    std::fill(m, m + n, 1.f);
    return map;
  }
  VOXINFER_CHECK(sigma_scale > 0, invalid_input, "importance_map: sigma_scale must be positive");
  if (style == WindowStyle::nnunet) {
    // scipy.ndimage.gaussian_filter of a delta at r/2: normalised 1D kernels, truncated at
    // int(4 sigma + 0.5), multiplied, then divided by the maximum.
    std::array<std::vector<double>, 3> k;
    for (std::size_t a = 0; a < 3; ++a) {
      const double sd = sigma_scale * static_cast<double>(roi[a]);
      const auto radius = static_cast<std::int64_t>(4.0 * sd + 0.5);
      double sum = 0;
      for (std::int64_t d = -radius; d <= radius; ++d) sum += std::exp(-0.5 / (sd * sd) * static_cast<double>(d * d));
      const std::int64_t c = roi[a] / 2;
      k[a].resize(static_cast<std::size_t>(roi[a]));
      for (std::int64_t i = 0; i < roi[a]; ++i) {
        const std::int64_t d = i - c;
        k[a][static_cast<std::size_t>(i)] =
            std::abs(d) <= radius ? std::exp(-0.5 / (sd * sd) * static_cast<double>(d * d)) / sum : 0.0;
      }
    }
    const double peak = k[0][static_cast<std::size_t>(roi[0] / 2)] * k[1][static_cast<std::size_t>(roi[1] / 2)] *
                        k[2][static_cast<std::size_t>(roi[2] / 2)];
    float min_nonzero = std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < roi[0]; ++i)
      for (std::int64_t j = 0; j < roi[1]; ++j)
        for (std::int64_t l = 0; l < roi[2]; ++l) {
          const double v = k[0][static_cast<std::size_t>(i)] * k[1][static_cast<std::size_t>(j)] * k[2][static_cast<std::size_t>(l)] / peak;
          const auto f = static_cast<float>(v);
          m[(i * roi[1] + j) * roi[2] + l] = f;
          if (f > 0) min_nonzero = std::min(min_nonzero, f);
        }
    for (std::int64_t i = 0; i < n; ++i)
      if (m[i] == 0.f) m[i] = min_nonzero;
    return map;
  }
  // MONAI: f32 1D Gaussians centred at (r - 1) / 2, multiplied, clamped below.
  std::array<std::vector<float>, 3> g;
  for (std::size_t a = 0; a < 3; ++a) {
    const auto sd = static_cast<float>(sigma_scale * static_cast<double>(roi[a]));
    const float denom = -2.f * sd * sd;
    g[a].resize(static_cast<std::size_t>(roi[a]));
    for (std::int64_t i = 0; i < roi[a]; ++i) {
      const float x = static_cast<float>(i) - static_cast<float>(roi[a] - 1) / 2.f;
      g[a][static_cast<std::size_t>(i)] = std::exp(x * x / denom);
    }
  }
  float mn = std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < roi[0]; ++i)
    for (std::int64_t j = 0; j < roi[1]; ++j)
      for (std::int64_t l = 0; l < roi[2]; ++l) {
        const float v = g[0][static_cast<std::size_t>(i)] * g[1][static_cast<std::size_t>(j)] * g[2][static_cast<std::size_t>(l)];
        m[(i * roi[1] + j) * roi[2] + l] = v;
        mn = std::min(mn, v);
      }
  const float floor_value = std::max(mn, 1e-3f);
  for (std::int64_t i = 0; i < n; ++i) m[i] = std::max(m[i], floor_value);
  return map;
}

SlidingWindowPlan plan_sliding_window(const Size3& image_size, const SlidingWindowOptions& options) {
  validate(options);
  SlidingWindowPlan plan;
  plan.image_size = image_size;
  plan.roi = options.roi_size;
  plan.batch = options.batch;
  for (std::size_t a = 0; a < 3; ++a) {
    VOXINFER_CHECK(image_size[a] > 0, invalid_input, "sliding window: empty image " + size_str(image_size));
    plan.padded_size[a] = std::max(image_size[a], plan.roi[a]);
    // Peers pad symmetrically, the odd voxel after (pad_nd_image, MONAI's F.pad).
    plan.pad_lo[a] = (plan.padded_size[a] - image_size[a]) / 2;
    plan.starts[a] = tile_starts(plan.padded_size[a], plan.roi[a], options.overlap[a], options.style);
  }
  for (auto s0 : plan.starts[0])
    for (auto s1 : plan.starts[1])
      for (auto s2 : plan.starts[2]) plan.tiles.push_back({s0, s1, s2});
  // The ring must hold [first start of a batch, last start of it + r0).
  const auto ntiles = static_cast<std::int64_t>(plan.tiles.size());
  std::int64_t emitted = 0;
  for (std::int64_t first = 0; first < ntiles; first += plan.batch) {
    const std::int64_t last = std::min(first + plan.batch, ntiles) - 1;
    const std::int64_t lo = plan.tiles[static_cast<std::size_t>(first)][0];
    plan.ring_planes = std::max(plan.ring_planes, plan.tiles[static_cast<std::size_t>(last)][0] + plan.roi[0] - lo);
    const std::int64_t next = last + 1 < ntiles ? plan.tiles[static_cast<std::size_t>(last + 1)][0] : plan.padded_size[0];
    const std::int64_t oa = std::max(emitted, plan.pad_lo[0]), oe = std::min(next, plan.pad_lo[0] + image_size[0]);
    if (next > emitted) {
      plan.max_slab_planes = std::max(plan.max_slab_planes, oe - oa);
      emitted = next;
    }
  }
  plan.tta_passes = 1 + static_cast<int>(mirror_combinations(options.mirror_axes).size());
  return plan;
}

std::size_t predicted_peak_bytes(const SlidingWindowPlan& plan, std::int64_t in_channels, std::int64_t out_channels,
                                 bool stream) {
  const auto& p = plan.padded_size;
  const auto& s = plan.image_size;
  const std::int64_t planes = stream ? plan.ring_planes : p[0];
  const std::int64_t slab = stream ? plan.max_slab_planes : s[0];
  const std::int64_t tile = vol3(plan.roi);
  std::int64_t floats = (out_channels + 1) * planes * p[1] * p[2];  // accumulator + weight sum
  floats += out_channels * slab * s[1] * s[2];                      // emitted slab / result
  floats += tile;                                                   // importance map
  floats += plan.batch * (in_channels + out_channels) * tile;       // batch in, network out
  if (plan.tta_passes > 1) floats += plan.batch * (in_channels + out_channels) * tile;  // flipped input, sum
  return static_cast<std::size_t>(floats) * kF32;
}

void sliding_window_stream(const Tensor& image, const SlidingWindowOptions& options, const TileCallback& network,
                           const SlabConsumer& consumer, SlidingWindowStats* stats) {
  Runner runner(image, options, network, true);
  runner.run(consumer, stats);
}

Tensor sliding_window(const Tensor& image, const SlidingWindowOptions& options, const TileCallback& network,
                      SlidingWindowStats* stats) {
  Runner runner(image, options, network, false);
  Tensor result;
  runner.run([&](const Tensor& slab, std::int64_t begin) {
    (void)begin;
    result = slab;  // whole-volume mode emits once: the slab is the full result
  }, stats);
  return result;
}

Tensor flip_spatial(const Tensor& t, const std::array<bool, 3>& axes) {
  VOXINFER_CHECK(t.dtype() == DType::f32 && t.rank() == 5, invalid_input,
                 "flip_spatial: expected an f32 [B, C, r0, r1, r2] tensor, got " + t.shape().str());
  Tensor out(t.shape(), DType::f32);
  add_flipped(out, t.contiguous(), axes);  // out starts at zero
  return out;
}

}  // namespace voxinfer
