// NiiVue's conform() (index.ts conform, ImageProcessing.ts conformVox2Vox, getScale,
// resampleVolume, scalecropUint8; IntensityCalibration.ts calMinMax for the global range),
// re-implemented from its definition. NiiVue computes in JavaScript doubles and stores its
// matrices in gl-matrix's Float32Arrays, so every stored matrix or vector element is rounded
// to float here too, and every sum keeps NiiVue's order. This file is compiled with
// -ffp-contract=off: a fused multiply-add would round differently.
#include "voxinfer/pipeline/conform.h"

#include <cmath>
#include <limits>
#include <vector>

#include "voxinfer/core/error.h"

namespace voxinfer {
namespace {

// gl-matrix's mat4/vec4 storage: column-major Float32Array. The helpers take and return the
// storage as NiiVue's code indexes it; arithmetic is in double, each store rounds to float.
using Mat4 = std::array<float, 16>;
using Vec4 = std::array<float, 4>;

float f32(double v) { return static_cast<float>(v); }

Mat4 transpose(const Mat4& a) {
  Mat4 o{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) o[c * 4 + r] = a[r * 4 + c];
  return o;
}

// out = a * b in gl-matrix's storage (mat4.multiply), summed in its order.
Mat4 multiply(const Mat4& a, const Mat4& b) {
  Mat4 o{};
  for (int col = 0; col < 4; ++col) {
    const double b0 = b[col * 4 + 0], b1 = b[col * 4 + 1], b2 = b[col * 4 + 2], b3 = b[col * 4 + 3];
    for (int row = 0; row < 4; ++row)
      o[col * 4 + row] = f32(b0 * double(a[row]) + b1 * double(a[4 + row]) + b2 * double(a[8 + row]) +
                             b3 * double(a[12 + row]));
  }
  return o;
}

// mat4.invert: cofactors over 2x2 sub-determinants, then a multiplication by 1 / det.
Mat4 invert(const Mat4& m) {
  const double a00 = m[0], a01 = m[1], a02 = m[2], a03 = m[3];
  const double a10 = m[4], a11 = m[5], a12 = m[6], a13 = m[7];
  const double a20 = m[8], a21 = m[9], a22 = m[10], a23 = m[11];
  const double a30 = m[12], a31 = m[13], a32 = m[14], a33 = m[15];
  const double b00 = a00 * a11 - a01 * a10, b01 = a00 * a12 - a02 * a10, b02 = a00 * a13 - a03 * a10;
  const double b03 = a01 * a12 - a02 * a11, b04 = a01 * a13 - a03 * a11, b05 = a02 * a13 - a03 * a12;
  const double b06 = a20 * a31 - a21 * a30, b07 = a20 * a32 - a22 * a30, b08 = a20 * a33 - a23 * a30;
  const double b09 = a21 * a32 - a22 * a31, b10 = a21 * a33 - a23 * a31, b11 = a22 * a33 - a23 * a32;
  double det = b00 * b11 - b01 * b10 + b02 * b09 + b03 * b08 - b04 * b07 + b05 * b06;
  VOXINFER_CHECK(det != 0 && std::isfinite(det), invalid_input, "conform: the image's affine is singular");
  det = 1.0 / det;
  Mat4 o{};
  o[0] = f32((a11 * b11 - a12 * b10 + a13 * b09) * det);
  o[1] = f32((a02 * b10 - a01 * b11 - a03 * b09) * det);
  o[2] = f32((a31 * b05 - a32 * b04 + a33 * b03) * det);
  o[3] = f32((a22 * b04 - a21 * b05 - a23 * b03) * det);
  o[4] = f32((a12 * b08 - a10 * b11 - a13 * b07) * det);
  o[5] = f32((a00 * b11 - a02 * b08 + a03 * b07) * det);
  o[6] = f32((a32 * b02 - a30 * b05 - a33 * b01) * det);
  o[7] = f32((a20 * b05 - a22 * b02 + a23 * b01) * det);
  o[8] = f32((a10 * b10 - a11 * b08 + a13 * b06) * det);
  o[9] = f32((a01 * b08 - a00 * b10 - a03 * b06) * det);
  o[10] = f32((a30 * b04 - a31 * b02 + a33 * b00) * det);
  o[11] = f32((a21 * b02 - a20 * b04 - a23 * b00) * det);
  o[12] = f32((a11 * b07 - a10 * b09 - a12 * b06) * det);
  o[13] = f32((a00 * b09 - a01 * b07 + a02 * b06) * det);
  o[14] = f32((a31 * b01 - a30 * b03 - a32 * b00) * det);
  o[15] = f32((a20 * b03 - a21 * b01 + a22 * b00) * det);
  return o;
}

// vec4.transformMat4.
Vec4 transform(const Vec4& v, const Mat4& m) {
  const double x = v[0], y = v[1], z = v[2], w = v[3];
  Vec4 o{};
  for (int r = 0; r < 4; ++r)
    o[r] = f32(double(m[r]) * x + double(m[4 + r]) * y + double(m[8 + r]) * z + double(m[12 + r]) * w);
  return o;
}

struct Vox2Vox {
  Mat4 out_affine;   // storage as NiiVue holds it: row-major reading gives the RAS affine
  Mat4 inv_vox2vox;  // storage indexed [0..3] = the input i of an output (x, y, z, 1), ...
};

// conformVox2Vox: the output grid keeps the input's centre (the world position of voxel
// dims / 2, not (dims - 1) / 2), with FreeSurfer's LIA (or RAS) axes.
Vox2Vox conform_vox2vox(const Eigen::Matrix4d& in_affine, const std::array<std::int64_t, 3>& in_dims,
                        const ConformOptions& o) {
  Mat4 affine{};  // mat4.fromValues(row-major affine): the storage is the affine read row by row
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) affine[r * 4 + c] = f32(in_affine(r, c));
  const Vec4 half{f32(double(in_dims[0]) / 2), f32(double(in_dims[1]) / 2), f32(double(in_dims[2]) / 2), 1.f};
  const Vec4 centre = transform(half, transpose(affine));

  Mat4 mdc = o.to_ras ? Mat4{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}
                      : Mat4{-1, 0, 0, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 1};
  mdc = transpose(mdc);
  const float d = f32(o.voxel_mm);
  Mat4 mdcd = mdc;  // mat4.scale by (d, d, d): columns 0..2 times d
  for (int i = 0; i < 12; ++i) mdcd[i] = f32(double(mdc[i]) * double(d));
  Vec4 vol_centre = transform(Vec4{f32(double(o.size[0])), f32(double(o.size[1])), f32(double(o.size[2])), 1.f}, mdcd);
  for (float& v : vol_centre) v = f32(double(v) * 0.5);
  Vox2Vox r{};
  r.out_affine = transpose(mdcd);
  r.out_affine[3] = f32(double(centre[0]) - double(vol_centre[0]));
  r.out_affine[7] = f32(double(centre[1]) - double(vol_centre[1]));
  r.out_affine[11] = f32(double(centre[2]) - double(vol_centre[2]));
  const Mat4 vox2vox = multiply(affine, invert(r.out_affine));
  r.inv_vox2vox = invert(vox2vox);
  return r;
}

// calMinMax's global range: NiiVue measures it on the central half of each axis (a border of
// floor(dims / 4) voxels left out), NaN ignored, over the whole volume only when that region
// is constant.
std::pair<double, double> niivue_global_range(const Volume& v) {
  const std::int64_t n[3] = {v.nx(), v.ny(), v.nz()};
  const float* p = v.channel(0);
  auto range = [&](bool border) {
    std::int64_t lo[3], hi[3];
    for (int a = 0; a < 3; ++a) {
      const std::int64_t b = border ? n[a] / 4 : 0;
      lo[a] = b;
      hi[a] = n[a] - b;
    }
    double mn = std::numeric_limits<double>::infinity(), mx = -mn;
    for (std::int64_t z = lo[2]; z < hi[2]; ++z)
      for (std::int64_t y = lo[1]; y < hi[1]; ++y)
        for (std::int64_t x = lo[0]; x < hi[0]; ++x) {
          const double val = p[(z * n[1] + y) * n[0] + x];
          if (std::isnan(val)) continue;
          mn = std::min(mn, val);
          mx = std::max(mx, val);
        }
    return std::pair<double, double>{mn, mx};
  };
  auto r = range(true);
  if (!(r.first < r.second)) r = range(false);
  return r;
}

// getScale with f_low = 0, f_high = 0.999 (FastSurfer's conform.py): the lower limit is the
// global minimum; the upper limit is the 1000-bin histogram bin where the cumulative count
// reaches all voxels but 0.1% of the non-zero ones. Values below the global minimum fall
// outside the histogram (NiiVue indexes a negative bin), values above it go to the last bin.
std::pair<double, double> niivue_scale(const Volume& v, double global_min, double global_max) {
  const std::int64_t voxnum = v.voxels();
  const float* p = v.channel(0);
  std::int64_t nz = 0;
  for (std::int64_t i = 0; i < voxnum; ++i)
    if (std::abs(double(p[i])) >= 1e-15) ++nz;
  constexpr int kBins = 1000;
  const double bin_size = (global_max - global_min) / kBins;
  std::vector<std::int64_t> hist(kBins, 0);
  for (std::int64_t i = 0; i < voxnum; ++i) {
    double bin = std::floor((double(p[i]) - global_min) / bin_size);
    bin = std::min(bin, double(kBins - 1));  // Math.min: NaN stays NaN
    if (bin >= 0) ++hist[static_cast<std::size_t>(bin)];
  }
  std::vector<std::int64_t> cs(kBins);
  cs[0] = hist[0];
  for (int i = 1; i < kBins; ++i) cs[i] = cs[i - 1] + hist[i];
  const double f_high = 0.999;
  const double nth = double(voxnum) - std::floor((1.0 - f_high) * double(nz));
  int idx = 0;
  while (idx < kBins - 1 && !(double(cs[idx + 1]) >= nth)) ++idx;
  const double src_min = 0 * bin_size + global_min;  // the lower limit: bin 0 (f_low = 0)
  const double src_max = idx * bin_size + global_min;
  const double scale = src_min != src_max ? 255.0 / (src_max - src_min) : 1.0;
  return {src_min, scale};
}

std::uint8_t to_uint8(double value, double src_min, double scale) {
  double v = 0 + scale * (value - src_min);
  if (std::isnan(v)) return 0;  // Math.max/min keep NaN; a Uint8Array stores it as 0
  v = std::min(std::max(v, 0.0), 255.0);
  return static_cast<std::uint8_t>(v);  // truncation, as a Uint8Array store
}

}  // namespace

bool is_niivue_conformed(const Volume& volume) {
  const auto it = volume.metadata.find(kVoxelTypeKey);
  return volume.channels() == 1 && volume.nx() == 256 && volume.ny() == 256 && volume.nz() == 256 &&
         it != volume.metadata.end() && it->second == "uint8" && volume.geometry.orientation_code() == "LIA";
}

Volume niivue_conform(const Volume& volume, const ConformOptions& o, ConformParameters* parameters) {
  VOXINFER_CHECK(volume.channels() == 1, invalid_input,
                 "conform: the input has " + std::to_string(volume.channels()) +
                     " channels (volumes); conform takes a single 3D volume");
  VOXINFER_CHECK(volume.voxels() > 0, invalid_input, "conform: the input is empty");
  for (int a = 0; a < 3; ++a)
    VOXINFER_CHECK(o.size[a] > 0 && o.size[a] <= 4096, invalid_input, "conform: output size out of range");
  VOXINFER_CHECK(o.voxel_mm > 0 && std::isfinite(o.voxel_mm), invalid_input, "conform: voxel size must be positive");
  volume.geometry.validate("conform input");

  const std::array<std::int64_t, 3> in_dims{volume.nx(), volume.ny(), volume.nz()};
  const Vox2Vox map = conform_vox2vox(volume.geometry.affine_ras(), in_dims, o);

  ConformParameters info;
  const auto it = volume.metadata.find(kVoxelTypeKey);
  info.uint8_input = it != volume.metadata.end() && it->second == "uint8";
  std::tie(info.global_min, info.global_max) = niivue_global_range(volume);
  if (info.uint8_input) {
    info.src_min = info.global_min;
    info.scale = 1.0;
  } else {
    std::tie(info.src_min, info.scale) = niivue_scale(volume, info.global_min, info.global_max);
  }
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) info.out_affine[r * 4 + c] = map.out_affine[r * 4 + c];
  info.inv_vox2vox = map.inv_vox2vox;

  // The output geometry: NiiVue's output affine (float32 values) as LPS spacing, direction, origin.
  Eigen::Matrix4d ras = Eigen::Matrix4d::Identity();
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) ras(r, c) = map.out_affine[r * 4 + c];
  Volume out(1, o.size[2], o.size[1], o.size[0], Geometry::from_affine_ras(ras));
  out.metadata = volume.metadata;
  out.metadata[kVoxelTypeKey] = "uint8";

  // resampleVolume: output voxel (x, y, z) samples the input at inv_vox2vox * (x, y, z, 1).
  const std::int64_t dx = in_dims[0], dy = in_dims[1], dz = in_dims[2];
  const std::int64_t dxy = dx * dy, nvox = dxy * dz;
  const float* src = volume.channel(0);
  // NiiVue reads past the last voxel when a sample lies exactly on the last plane: the value is
  // undefined there, its zero weight gives NaN, and the uint8 store gives 0.
  auto at = [&](std::int64_t i) { return i < nvox ? double(src[i]) : std::numeric_limits<double>::quiet_NaN(); };
  const Mat4& inv = map.inv_vox2vox;
  float* dst = out.channel(0);
  std::int64_t i = 0;
  for (std::int64_t z = 0; z < o.size[2]; ++z)
    for (std::int64_t y = 0; y < o.size[1]; ++y) {
      const double ix_yz = double(y) * inv[1] + double(z) * inv[2] + inv[3];
      const double iy_yz = double(y) * inv[5] + double(z) * inv[6] + inv[7];
      const double iz_yz = double(y) * inv[9] + double(z) * inv[10] + inv[11];
      for (std::int64_t x = 0; x < o.size[0]; ++x, ++i) {
        const double ix = double(x) * inv[0] + ix_yz;
        const double iy = double(x) * inv[4] + iy_yz;
        const double iz = double(x) * inv[8] + iz_yz;
        float value = 0;  // NiiVue's output starts as zeros; samples outside the input stay 0
        if (o.linear) {
          const double fx = std::floor(ix), fy = std::floor(iy), fz = std::floor(iz);
          if (fx < 0 || fy < 0 || fz < 0 || !(std::ceil(ix) < double(dx)) || !(std::ceil(iy) < double(dy)) ||
              !(std::ceil(iz) < double(dz))) {
            dst[i] = static_cast<float>(to_uint8(0, info.src_min, info.scale));
            continue;
          }
          const double rcx = ix - fx, rcy = iy - fy, rcz = iz - fz;
          const double rfx = 1 - rcx, rfy = 1 - rcy, rfz = 1 - rcz;
          const std::int64_t fff =
              static_cast<std::int64_t>(fx) + static_cast<std::int64_t>(fy) * dx + static_cast<std::int64_t>(fz) * dxy;
          double vx = 0;
          vx += at(fff) * rfx * rfy * rfz;
          vx += at(fff + dxy) * rfx * rfy * rcz;
          vx += at(fff + dx) * rfx * rcy * rfz;
          vx += at(fff + dx + dxy) * rfx * rcy * rcz;
          vx += at(fff + 1) * rcx * rfy * rfz;
          vx += at(fff + 1 + dxy) * rcx * rfy * rcz;
          vx += at(fff + 1 + dx) * rcx * rcy * rfz;
          vx += at(fff + 1 + dx + dxy) * rcx * rcy * rcz;
          value = static_cast<float>(vx);
        } else {
          // Math.round: halves up.
          const double rx = std::floor(ix + 0.5), ry = std::floor(iy + 0.5), rz = std::floor(iz + 0.5);
          if (rx >= 0 && ry >= 0 && rz >= 0 && rx < double(dx) && ry < double(dy) && rz < double(dz))
            value = src[static_cast<std::int64_t>(rx) + static_cast<std::int64_t>(ry) * dx +
                        static_cast<std::int64_t>(rz) * dxy];
        }
        dst[i] = static_cast<float>(to_uint8(value, info.src_min, info.scale));
      }
    }
  if (parameters) *parameters = info;
  return out;
}

}  // namespace voxinfer
