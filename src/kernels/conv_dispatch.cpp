// make_conv_kernel: walks the ordered implementation list (conv_direct.cpp). The first
// implementation that accepts the problem wins; each rejection appends its reason to `why`.
#include <memory>
#include <string>

#include "kernels/conv_direct.h"
#include "kernels/winograd.h"
#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels {

std::unique_ptr<ConvKernel> make_conv_kernel(const ConvParams& p, const float* wei, const Epilogue& ep, bool transposed,
                                             Isa isa, std::string* why) {
  // Never pick code the CPU cannot run, whatever the caller asks for.
  if (static_cast<int>(isa) > static_cast<int>(hardware_isa())) isa = hardware_isa();
  // Winograd F(2x2x2, 3x3x3) first where it applies: 3.4x fewer multiply-adds.
  if (!transposed && (isa == Isa::avx512 || isa == Isa::avx2))
    if (auto k = winograd::create(p, wei, ep, isa, why)) return k;
  std::size_t count = 0;
  const direct::Impl* list = direct::impls(&count);
  for (std::size_t i = 0; i < count; ++i) {
    const direct::Impl& impl = list[i];
    if (static_cast<int>(impl.isa) > static_cast<int>(isa)) {
      if (why) *why += std::string(impl.name) + ": needs " + isa_name(impl.isa) + ", ISA is " + isa_name(isa) + "\n";
      continue;
    }
    if (auto k = direct::create(impl, p, wei, ep, transposed, direct::Tuning{}, why)) return k;
  }
  return nullptr;
}

}  // namespace voxinfer::kernels
