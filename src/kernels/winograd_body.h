// Body of the Winograd F(2x2x2, 3x3x3) compute functions, over a vector-traits type T (see
// conv3d_direct_body.h), included by the per-ISA kernel files after their traits.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/conv3d_direct_body.h"
#include "kernels/winograd.h"

namespace voxinfer::kernels::winograd {

// Tile number `t` of an image -> its output tile coordinates.
inline void tile_coords(const Plan& p, std::int64_t t, std::int64_t& tz, std::int64_t& ty, std::int64_t& tx) {
  tx = t % p.tw;
  ty = (t / p.tw) % p.th;
  tz = t / (p.tw * p.th);
}

// V[xi][b][t][lane] for the chunk's tiles t < nt, starting at tile t0 (tiles past the image are zero).
template <class T>
void input_transform(const Plan& p, const float* src_n, float* v, std::int64_t t0) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t isp = (p.src_planes ? p.src_planes : p.id) * p.ih * p.iw;
  const std::int64_t ntiles = p.tiles();
  for (std::int64_t b = 0; b < p.icb; ++b) {
    const float* sb = src_n + b * isp * B;
    for (std::int64_t t = 0; t < p.nt; ++t) {
      float* vt = v + (b * p.nt + t) * B;
      const std::int64_t step = p.v_step();  // floats between consecutive xi
      if (t0 + t >= ntiles) {
        for (int xi = 0; xi < 64; ++xi) T::store(vt + xi * step, T::zero());
        continue;
      }
      std::int64_t tz, ty, tx;
      tile_coords(p, t0 + t, tz, ty, tx);
      const std::int64_t z0 = p.d_begin + 2 * tz - p.pd, y0 = 2 * ty - p.ph, x0 = 2 * tx - p.pw;
      // Per input plane z: 16 loads, B^T along x then y in registers; then B^T along z from
      // the four planes (64 vectors do not fit the register file at once).
      V q[4][4][4];
      const bool inside_x = x0 >= 0 && x0 + 4 <= p.iw;
      for (int z = 0; z < 4; ++z) {
        V a[4][4];
        const std::int64_t iz = z0 + z;
        for (int y = 0; y < 4; ++y) {
          const std::int64_t iy = y0 + y;
          const bool row = iz >= 0 && iz < p.id && iy >= 0 && iy < p.ih;
          const std::int64_t pz = p.src_planes && iz >= 0 ? iz % p.src_planes : iz;  // plane in src
          const float* sr = sb + ((pz * p.ih + iy) * p.iw + x0) * B;
          if (row && inside_x) {  // most tiles: four plain loads
            for (int x = 0; x < 4; ++x) a[y][x] = T::load(sr + x * B);
          } else {
            for (int x = 0; x < 4; ++x) {
              const std::int64_t ix = x0 + x;
              a[y][x] = row && ix >= 0 && ix < p.iw ? T::load(sr + x * B) : T::zero();
            }
          }
          const V a0 = a[y][0], a1 = a[y][1], a2 = a[y][2], a3 = a[y][3];
          a[y][0] = T::sub(a0, a2), a[y][1] = T::add(a1, a2), a[y][2] = T::sub(a2, a1), a[y][3] = T::sub(a1, a3);
        }
        for (int x = 0; x < 4; ++x) {
          const V a0 = a[0][x], a1 = a[1][x], a2 = a[2][x], a3 = a[3][x];
          q[z][0][x] = T::sub(a0, a2), q[z][1][x] = T::add(a1, a2), q[z][2][x] = T::sub(a2, a1), q[z][3][x] = T::sub(a1, a3);
        }
      }
      for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 4; ++x) {
          const V a0 = q[0][y][x], a1 = q[1][y][x], a2 = q[2][y][x], a3 = q[3][y][x];
          T::store(vt + ((0 * 4 + y) * 4 + x) * step, T::sub(a0, a2));
          T::store(vt + ((1 * 4 + y) * 4 + x) * step, T::add(a1, a2));
          T::store(vt + ((2 * 4 + y) * 4 + x) * step, T::sub(a2, a1));
          T::store(vt + ((3 * 4 + y) * 4 + x) * step, T::sub(a1, a3));
        }
    }
  }
}

// M[xi][t][ob][lane] = sum over input channels of V[xi][.][t][.] * U[xi][ic][ob0 + ob][.] for
// the group's blocks ob < count, in register tiles of UR tiles x NB output-channel blocks.
template <class T, int UR, int NB>
void gemm(const Plan& p, const float* v, float* m, std::int64_t ob0, std::int64_t count) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t icp = p.icb * B;
  for (int xi = 0; xi < 64; ++xi) {
    const float* vx = v + xi * p.v_step();
    const float* ux = p.u + xi * icp * p.ocb * B;
    float* mx = m + xi * p.m_step();
    for (std::int64_t ob = 0; ob < count; ob += NB)
      for (std::int64_t t0 = 0; t0 < p.nt; t0 += UR) {
        V acc[UR][NB];
        for (int u = 0; u < UR; ++u)
          for (int j = 0; j < NB; ++j) acc[u][j] = T::zero();
        for (std::int64_t b = 0; b < p.icb; ++b) {
          const float* vb = vx + (b * p.nt + t0) * B;
          const float* ub = ux + (b * B * p.ocb + ob0 + ob) * B;
          for (int l = 0; l < B; ++l) {
            V w[NB];
            for (int j = 0; j < NB; ++j) {
              w[j] = T::load(ub + (l * p.ocb + j) * B);
              if constexpr (requires { T::pin(w[j]); }) T::pin(w[j]);
            }
            for (int u = 0; u < UR; ++u) {
              const V x = T::bcast(vb + u * B + l);
              for (int j = 0; j < NB; ++j) acc[u][j] = T::fma(w[j], x, acc[u][j]);
            }
          }
        }
        for (int u = 0; u < UR; ++u)
          for (int j = 0; j < NB; ++j) T::store(mx + ((t0 + u) * p.gb + ob + j) * B, acc[u][j]);
      }
  }
}

// A^T along x, y, z, then bias, residual, activation, stored to the 2x2x2 outputs in range,
// for the chunk's tiles from t0 and the group's blocks ob0 + [0, count).
template <class T>
void output_transform(const Plan& p, const float* m, float* dst_n, const float* res_n, std::int64_t t0, std::int64_t ob0,
                      std::int64_t count) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t osp = p.od * p.oh * p.ow;
  const std::int64_t step = p.m_step();  // floats between consecutive xi
  const std::int64_t ntiles = p.tiles();
  for (std::int64_t t = 0; t < p.nt && t0 + t < ntiles; ++t) {
    std::int64_t tz, ty, tx;
    tile_coords(p, t0 + t, tz, ty, tx);
    for (std::int64_t lb = 0; lb < count; ++lb) {
      const std::int64_t ob = ob0 + lb;
      const float* mt = m + (t * p.gb + lb) * B;
      V r[4][4][2];
      for (int z = 0; z < 4; ++z)
        for (int y = 0; y < 4; ++y) {
          const float* q = mt + (z * 4 + y) * 4 * step;
          const V a0 = T::load(q), a1 = T::load(q + step), a2 = T::load(q + 2 * step), a3 = T::load(q + 3 * step);
          r[z][y][0] = T::add(T::add(a0, a1), a2);
          r[z][y][1] = T::sub(T::sub(a1, a2), a3);
        }
      V s[4][2][2];
      for (int z = 0; z < 4; ++z)
        for (int x = 0; x < 2; ++x) {
          s[z][0][x] = T::add(T::add(r[z][0][x], r[z][1][x]), r[z][2][x]);
          s[z][1][x] = T::sub(T::sub(r[z][1][x], r[z][2][x]), r[z][3][x]);
        }
      const V bias = T::load(p.bias + ob * B);
      const bool partial = ob + 1 == p.ocb && p.oc % B != 0;
      for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 2; ++x) {
          const V o[2] = {T::add(T::add(s[0][y][x], s[1][y][x]), s[2][y][x]), T::sub(T::sub(s[1][y][x], s[2][y][x]), s[3][y][x])};
          const std::int64_t oy = 2 * ty + y, ox = 2 * tx + x;
          if (oy >= p.oh || ox >= p.ow) continue;
          for (int z = 0; z < 2; ++z) {
            const std::int64_t oz = 2 * tz + z;
            if (oz >= p.od) continue;
            const std::int64_t off = ob * osp * B + ((oz * p.oh + oy) * p.ow + ox) * B;
            V val = T::add(o[z], bias);
            if (res_n) val = T::add(val, T::load(res_n + off));
            val = direct::activation_of<T>(p.act, p.alpha, p.beta, p.slope, val, ob);
            if (partial) val = T::keep_lanes(val, static_cast<int>(p.oc % B));
            T::store(dst_n + off, val);
          }
        }
    }
  }
}

template <class T, int UR>
void run_items(const Plan& p, const float* src, float* dst, const float* res, float* scratch, std::int64_t begin,
               std::int64_t end) {
  constexpr int B = T::B;
  float* v = scratch;
  float* m = scratch + 64 * p.v_step();
  const std::int64_t isp = (p.src_planes ? p.src_planes : p.id) * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  const std::int64_t chunks = p.chunks();
  for (std::int64_t item = begin; item < end; ++item) {
    // Groups innermost: consecutive items of a slot share the chunk (and its input transform).
    const std::int64_t g = item % p.groups, c = (item / p.groups) % chunks, n = item / (p.groups * chunks);
    const float* src_n = src + n * p.icb * isp * B;
    float* dst_n = dst + n * p.ocb * osp * B;
    const float* res_n = p.residual && res ? res + n * p.ocb * osp * B : nullptr;
    const std::int64_t t0 = c * p.nt, ob0 = g * p.gb, count = std::min(p.gb, p.ocb - ob0);
    if (item == begin || g == 0) input_transform<T>(p, src_n, v, t0);
    if (p.nb == 2) gemm<T, UR, 2>(p, v, m, ob0, count);
    else gemm<T, UR, 1>(p, v, m, ob0, count);
    output_transform<T>(p, m, dst_n, res_n, t0, ob0, count);
  }
}

}  // namespace voxinfer::kernels::winograd
