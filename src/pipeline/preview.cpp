// Preview rendering: three orthogonal slices with overlay and a legend drawn with a
// small built-in 5x7 bitmap font.
#include "voxinfer/pipeline/preview.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "voxinfer/pipeline/preprocess.h"

namespace voxinfer {
namespace {

// 5x7 glyphs, one string of 7 rows x 5 columns per character ('#' = ink).
const std::map<char, const char*>& font() {
  static const std::map<char, const char*> f = {
      {'A', " ### #   ##   #######   ##   ##   #"}, {'B', "#### #   ##### #   ##   ##   ##### "},
      {'C', " ### #   ##    #    #    #   # ### "}, {'D', "#### #   ##   ##   ##   ##   ##### "},
      {'E', "######    #### #    #    #    #####"}, {'F', "######    #### #    #    #    #    "},
      {'G', " ### #   ##    # ####   ##   # ### "}, {'H', "#   ##   #######   ##   ##   ##   #"},
      {'I', " ###   #    #    #    #    #   ### "}, {'J', "  ###   #    #    #    # #  #  ##  "},
      {'K', "#   ##  # # #  ##   # #  #  # #   #"}, {'L', "#    #    #    #    #    #    #####"},
      {'M', "#   ### ### # ##   ##   ##   ##   #"}, {'N', "#   ###  ## # ##  ###   ##   ##   #"},
      {'O', " ### #   ##   ##   ##   ##   # ### "}, {'P', "#### #   ##   ##### #    #    #    "},
      {'Q', " ### #   ##   ##   ## # ##  #  ## #"}, {'R', "#### #   ##   ##### # #  #  # #   #"},
      {'S', " #####    #     ###     #    ##### "}, {'T', "#####  #    #    #    #    #    #  "},
      {'U', "#   ##   ##   ##   ##   ##   # ### "}, {'V', "#   ##   ##   ##   ##   # # #   #  "},
      {'W', "#   ##   ##   ##   ## # ### ###   #"}, {'X', "#   ##   # # #   #   # # #   ##   #"},
      {'Y', "#   ##   # # #   #    #    #    #  "}, {'Z', "#####    #   #   #   #   #    #####"},
      {'0', " ### #   ##  ### # ###  ##   # ### "}, {'1', "  #   ##    #    #    #    #   ### "},
      {'2', " ### #   #    #  ##  #   #    #####"}, {'3', " ### #   #    #  ##     ##   # ### "},
      {'4', "   #   ##  # # #   # #####   #    #"}, {'5', "######    ####     #    ##   # ### "},
      {'6', " ### #    #    #### #   ##   # ### "}, {'7', "#####    #   #   #    #    #    #  "},
      {'8', " ### #   ##   # ### #   ##   # ### "}, {'9', " ### #   ##   # ####    #    # ### "},
      {'-', "          #####                    "}, {'_', "                              #####"},
      {'.', "                              #    "}, {':', "     #              #              "},
      {'(', "   #   #   #    #    #     #     # "}, {')', " #     #     #    #    #   #   #   "},
      {'/', "    #    #   #   #   #    #    #   "}, {',', "                         #   #     "},
  };
  return f;
}

constexpr int kScale = 2;  // font pixels per glyph dot

void draw_text(RgbImage& img, int x0, int y0, const std::string& text, std::array<int, 3> color) {
  int x = x0;
  for (char ch : text) {
    const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    const auto it = font().find(c);
    if (it != font().end()) {
      for (int r = 0; r < 7; ++r)
        for (int col = 0; col < 5; ++col)
          if (it->second[r * 5 + col] == '#')
            for (int dy = 0; dy < kScale; ++dy)
              for (int dx = 0; dx < kScale; ++dx) {
                const int px = x + col * kScale + dx, py = y0 + r * kScale + dy;
                if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
                auto* p = &img.rgb[(static_cast<std::size_t>(py) * static_cast<std::size_t>(img.width) + static_cast<std::size_t>(px)) * 3];
                p[0] = static_cast<std::uint8_t>(color[0]);
                p[1] = static_cast<std::uint8_t>(color[1]);
                p[2] = static_cast<std::uint8_t>(color[2]);
              }
    }
    x += 6 * kScale;
  }
}

void fill_rect(RgbImage& img, int x0, int y0, int w, int h, std::array<int, 3> c) {
  for (int y = std::max(0, y0); y < std::min(img.height, y0 + h); ++y)
    for (int x = std::max(0, x0); x < std::min(img.width, x0 + w); ++x) {
      auto* p = &img.rgb[(static_cast<std::size_t>(y) * static_cast<std::size_t>(img.width) + static_cast<std::size_t>(x)) * 3];
      p[0] = static_cast<std::uint8_t>(c[0]);
      p[1] = static_cast<std::uint8_t>(c[1]);
      p[2] = static_cast<std::uint8_t>(c[2]);
    }
}

const std::array<int, 3> kPalette[] = {{230, 25, 75}, {60, 180, 75},  {255, 225, 25}, {0, 130, 200},  {245, 130, 48},
                                       {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212},
                                       {0, 128, 128},  {220, 190, 255}, {170, 110, 40}, {255, 250, 200}, {128, 0, 0}};

struct Panel {
  int w = 0, h = 0;
  std::vector<float> gray;   // [h][w]
  std::vector<int> label;    // [h][w]
};

}  // namespace

std::array<int, 3> label_color(int value, std::span<const LabelSpec> specs) {
  for (const auto& s : specs)
    if (s.value == value && s.color) return *s.color;
  return kPalette[static_cast<std::size_t>(std::abs(value)) % (sizeof kPalette / sizeof kPalette[0])];
}

RgbImage render_preview(const Volume& image_in, const Volume& labels_in, std::span<const LabelSpec> specs) {
  // Work in LPS index order so that the display convention is fixed.
  const Volume image = reorient(image_in, "LPS");
  const Volume labels = reorient(labels_in, "LPS");
  const std::int64_t nx = image.nx(), ny = image.ny(), nz = image.nz();
  // Slice positions: the centre of the labelled voxels, or the volume's centre.
  double cx = 0, cy = 0, cz = 0;
  std::int64_t n = 0;
  std::map<int, std::int64_t> present;
  for (std::int64_t z = 0; z < nz; ++z)
    for (std::int64_t y = 0; y < ny; ++y)
      for (std::int64_t x = 0; x < nx; ++x) {
        const int v = static_cast<int>(labels.at(0, z, y, x));
        if (!v) continue;
        present[v]++;
        cx += static_cast<double>(x);
        cy += static_cast<double>(y);
        cz += static_cast<double>(z);
        ++n;
      }
  const std::int64_t sx = n ? static_cast<std::int64_t>(cx / static_cast<double>(n)) : nx / 2;
  const std::int64_t sy = n ? static_cast<std::int64_t>(cy / static_cast<double>(n)) : ny / 2;
  const std::int64_t sz = n ? static_cast<std::int64_t>(cz / static_cast<double>(n)) : nz / 2;
  // Grey window: 1st to 99th percentile of the image.
  std::vector<float> sample;
  const std::int64_t step = std::max<std::int64_t>(1, image.voxels() / 200000);
  for (std::int64_t i = 0; i < image.voxels(); i += step) sample.push_back(image.channel(0)[i]);
  std::sort(sample.begin(), sample.end());
  const float lo = sample.empty() ? 0.f : sample[sample.size() / 100];
  const float hi = sample.empty() ? 1.f : sample[sample.size() * 99 / 100];
  const double target = 256;  // panel edge in pixels (longest axis)

  // A panel samples (u, v) -> voxel through a function, scaled to physical aspect.
  auto make_panel = [&](std::int64_t nu, double su, std::int64_t nv, double sv, auto voxel) {
    Panel p;
    const double ext_u = static_cast<double>(nu) * su, ext_v = static_cast<double>(nv) * sv;
    const double scale = target / std::max(ext_u, ext_v);  // pixels per millimetre
    p.w = std::max(1, static_cast<int>(std::lround(ext_u * scale)));
    p.h = std::max(1, static_cast<int>(std::lround(ext_v * scale)));
    p.gray.resize(static_cast<std::size_t>(p.w) * static_cast<std::size_t>(p.h));
    p.label.resize(p.gray.size());
    for (int r = 0; r < p.h; ++r)
      for (int c = 0; c < p.w; ++c) {
        const auto u = std::min<std::int64_t>(nu - 1, static_cast<std::int64_t>((c + 0.5) / p.w * static_cast<double>(nu)));
        const auto v = std::min<std::int64_t>(nv - 1, static_cast<std::int64_t>((r + 0.5) / p.h * static_cast<double>(nv)));
        auto [g, l] = voxel(u, v);
        p.gray[static_cast<std::size_t>(r * p.w + c)] = g;
        p.label[static_cast<std::size_t>(r * p.w + c)] = l;
      }
    return p;
  };
  const Geometry& geo = image.geometry;
  auto at = [&](std::int64_t x, std::int64_t y, std::int64_t z) {
    return std::pair<float, int>(image.at(0, z, y, x), static_cast<int>(labels.at(0, z, y, x)));
  };
  // In LPS index order x increases towards the patient's left, y towards posterior and z
  // towards superior: column = x puts the patient's left on the right of the picture
  // (radiological convention), row = y puts anterior at the top, row = nz-1-z superior.
  const Panel axial = make_panel(nx, geo.spacing[0], ny, geo.spacing[1], [&](std::int64_t u, std::int64_t v) { return at(u, v, sz); });
  const Panel coronal = make_panel(nx, geo.spacing[0], nz, geo.spacing[2], [&](std::int64_t u, std::int64_t v) { return at(u, sy, nz - 1 - v); });
  const Panel sagittal = make_panel(ny, geo.spacing[1], nz, geo.spacing[2], [&](std::int64_t u, std::int64_t v) { return at(sx, u, nz - 1 - v); });

  const int gap = 8;
  const int legend_rows = static_cast<int>(std::max<std::size_t>(1, specs.size()));
  const int legend_h = 12 + legend_rows * 20;
  RgbImage img;
  img.width = gap + axial.w + gap + coronal.w + gap + sagittal.w + gap;
  img.height = gap + std::max({axial.h, coronal.h, sagittal.h}) + gap + legend_h;
  img.rgb.assign(static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3, 0);
  int x0 = gap;
  for (const Panel* p : {&axial, &coronal, &sagittal}) {
    for (int r = 0; r < p->h; ++r)
      for (int c = 0; c < p->w; ++c) {
        const float gv = std::clamp((p->gray[static_cast<std::size_t>(r * p->w + c)] - lo) / std::max(hi - lo, 1e-6f), 0.f, 1.f) * 255.f;
        double rgb[3] = {gv, gv, gv};
        const int l = p->label[static_cast<std::size_t>(r * p->w + c)];
        if (l) {
          const auto col = label_color(l, specs);
          for (int k = 0; k < 3; ++k) rgb[k] = 0.55 * rgb[k] + 0.45 * col[static_cast<std::size_t>(k)];
        }
        auto* px = &img.rgb[(static_cast<std::size_t>(gap + r) * static_cast<std::size_t>(img.width) + static_cast<std::size_t>(x0 + c)) * 3];
        for (int k = 0; k < 3; ++k) px[k] = static_cast<std::uint8_t>(std::lround(rgb[k]));
      }
    x0 += p->w + gap;
  }
  draw_text(img, gap, gap + 2, "R", {255, 255, 0});
  draw_text(img, gap + axial.w - 12, gap + 2, "L", {255, 255, 0});
  int y = gap + std::max({axial.h, coronal.h, sagittal.h}) + gap;
  for (const auto& s : specs) {
    fill_rect(img, gap, y, 14, 14, label_color(s.value, specs));
    const auto it = present.find(s.value);
    draw_text(img, gap + 22, y + 1, std::to_string(s.value) + " " + s.name + (it == present.end() ? " (NONE)" : ""), {230, 230, 230});
    y += 20;
  }
  if (specs.empty()) draw_text(img, gap, y, "NO LABELS", {230, 230, 230});
  return img;
}

}  // namespace voxinfer
