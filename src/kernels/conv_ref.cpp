// Reference 3D convolution and transposed convolution: plain loops over NCDHW, the oracle
// every optimized kernel is tested against. Accumulates in double so that the oracle is
// more accurate than anything it judges; never optimized beyond hoisting loop invariants.
#include <cmath>
#include <cstdint>
#include <string>

#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels {

std::string ConvParams::str() const {
  auto f = [](const char* name, std::int64_t v) { return std::string(name) + "=" + std::to_string(v); };
  std::string s;
  s += f("n", n) + " " + f("ic", ic) + " " + f("id", id) + " " + f("ih", ih) + " " + f("iw", iw);
  s += " " + f("oc", oc) + " " + f("od", od) + " " + f("oh", oh) + " " + f("ow", ow);
  s += " " + f("kd", kd) + " " + f("kh", kh) + " " + f("kw", kw);
  s += " " + f("sd", sd) + " " + f("sh", sh) + " " + f("sw", sw);
  s += " " + f("dd", dd) + " " + f("dh", dh) + " " + f("dw", dw);
  s += " " + f("pd", pd) + " " + f("ph", ph) + " " + f("pw", pw);
  s += " " + f("groups", groups);
  return s;
}

float apply_activation(const Epilogue& ep, std::int64_t o, float v) {
  switch (ep.act) {
    case Activation::none: return v;
    case Activation::relu: return v > 0.f ? v : 0.f;
    case Activation::leaky_relu: return v >= 0.f ? v : ep.alpha * v;
    case Activation::prelu: {
      const float slope = ep.slope ? ep.slope[ep.slope_per_channel ? o : 0] : 0.f;
      return v >= 0.f ? v : slope * v;
    }
    case Activation::sigmoid: return 1.f / (1.f + std::exp(-v));
    case Activation::clip: return std::fmin(std::fmax(v, ep.alpha), ep.beta);
  }
  return v;
}

namespace {

// dst[idx] = act(acc + bias[o] + residual[idx]).
inline float epilogue(const Epilogue& ep, std::int64_t o, std::int64_t idx, double acc) {
  float v = static_cast<float>(acc);
  if (ep.bias) v += ep.bias[o];
  if (ep.residual) v += ep.residual[idx];
  return apply_activation(ep, o, v);
}

}  // namespace

void conv3d_ref(const ConvParams& p, const float* src, const float* wei, const Epilogue& ep, float* dst) {
  const std::int64_t icg = p.ic / p.groups, ocg = p.oc / p.groups;
  const std::int64_t ksz = p.kd * p.kh * p.kw;
  const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  for (std::int64_t n = 0; n < p.n; ++n)
    for (std::int64_t g = 0; g < p.groups; ++g)
      for (std::int64_t ol = 0; ol < ocg; ++ol) {
        const std::int64_t o = g * ocg + ol;
        for (std::int64_t od = 0; od < p.od; ++od)
          for (std::int64_t oh = 0; oh < p.oh; ++oh)
            for (std::int64_t ow = 0; ow < p.ow; ++ow) {
              double acc = 0;
              for (std::int64_t il = 0; il < icg; ++il) {
                const std::int64_t i = g * icg + il;
                const float* s = src + (n * p.ic + i) * isp;
                const float* w = wei + (o * icg + il) * ksz;
                for (std::int64_t kd = 0; kd < p.kd; ++kd) {
                  const std::int64_t d = od * p.sd - p.pd + kd * p.dd;
                  if (d < 0 || d >= p.id) continue;
                  for (std::int64_t kh = 0; kh < p.kh; ++kh) {
                    const std::int64_t h = oh * p.sh - p.ph + kh * p.dh;
                    if (h < 0 || h >= p.ih) continue;
                    for (std::int64_t kw = 0; kw < p.kw; ++kw) {
                      const std::int64_t x = ow * p.sw - p.pw + kw * p.dw;
                      if (x < 0 || x >= p.iw) continue;
                      acc += static_cast<double>(s[(d * p.ih + h) * p.iw + x]) *
                             static_cast<double>(w[(kd * p.kh + kh) * p.kw + kw]);
                    }
                  }
                }
              }
              const std::int64_t idx = (n * p.oc + o) * osp + (od * p.oh + oh) * p.ow + ow;
              dst[idx] = epilogue(ep, o, idx, acc);
            }
      }
}

void conv_transpose3d_ref(const ConvParams& p, const float* src, const float* wei, const Epilogue& ep, float* dst) {
  // Gather form: output voxel o receives input voxel i through tap k when
  // o = i * stride - pad + k * dilation.
  const std::int64_t icg = p.ic / p.groups, ocg = p.oc / p.groups;
  const std::int64_t ksz = p.kd * p.kh * p.kw;
  const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  // Input index along one axis for output index `o` and tap `k`, or -1.
  auto in_index = [](std::int64_t o, std::int64_t k, std::int64_t s, std::int64_t d, std::int64_t pad,
                     std::int64_t in) -> std::int64_t {
    const std::int64_t t = o + pad - k * d;
    if (t < 0 || t % s != 0) return -1;
    const std::int64_t i = t / s;
    return i < in ? i : -1;
  };
  for (std::int64_t n = 0; n < p.n; ++n)
    for (std::int64_t g = 0; g < p.groups; ++g)
      for (std::int64_t ol = 0; ol < ocg; ++ol) {
        const std::int64_t o = g * ocg + ol;
        for (std::int64_t od = 0; od < p.od; ++od)
          for (std::int64_t oh = 0; oh < p.oh; ++oh)
            for (std::int64_t ow = 0; ow < p.ow; ++ow) {
              double acc = 0;
              for (std::int64_t il = 0; il < icg; ++il) {
                const std::int64_t i = g * icg + il;
                const float* s = src + (n * p.ic + i) * isp;
                const float* w = wei + (i * ocg + ol) * ksz;
                for (std::int64_t kd = 0; kd < p.kd; ++kd) {
                  const std::int64_t d = in_index(od, kd, p.sd, p.dd, p.pd, p.id);
                  if (d < 0) continue;
                  for (std::int64_t kh = 0; kh < p.kh; ++kh) {
                    const std::int64_t h = in_index(oh, kh, p.sh, p.dh, p.ph, p.ih);
                    if (h < 0) continue;
                    for (std::int64_t kw = 0; kw < p.kw; ++kw) {
                      const std::int64_t x = in_index(ow, kw, p.sw, p.dw, p.pw, p.iw);
                      if (x < 0) continue;
                      acc += static_cast<double>(s[(d * p.ih + h) * p.iw + x]) *
                             static_cast<double>(w[(kd * p.kh + kh) * p.kw + kw]);
                    }
                  }
                }
              }
              const std::int64_t idx = (n * p.oc + o) * osp + (od * p.oh + oh) * p.ow + ow;
              dst[idx] = epilogue(ep, o, idx, acc);
            }
      }
}

}  // namespace voxinfer::kernels
