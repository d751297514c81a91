// Uses the installed public headers and library: tensor, geometry, threading.
#include <cstdio>

#include "voxinfer/core/cpu.h"
#include "voxinfer/core/geometry.h"
#include "voxinfer/core/tensor.h"
#include "voxinfer/core/threading.h"

int main() {
  voxinfer::Tensor t(voxinfer::Shape{2, 3}, voxinfer::DType::f32);
  t.at<float>(1, 2) = 1.5f;
  voxinfer::Geometry g;
  g.direction = voxinfer::direction_from_code("RAS");
  const float sum = voxinfer::parallel_reduce<float>(t.numel(), 2, 0.f, [&](std::int64_t b, std::int64_t e) {
    float s = 0;
    for (std::int64_t i = b; i < e; ++i) s += t.data<float>()[i];
    return s;
  }, [](float a, float b) { return a + b; });
  std::printf("consumer ok: sum=%g orientation=%s isa=%s\n", sum, g.orientation_code().c_str(),
              voxinfer::isa_name(voxinfer::active_isa()));
  return sum == 1.5f && g.orientation_code() == "RAS" ? 0 : 1;
}
