// make_conv_kernel: the ordered list of optimized convolution implementations. The first
// that accepts the problem wins; each rejection appends its reason to `why`.
#include <memory>
#include <string>

#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels {

std::unique_ptr<ConvKernel> make_conv_kernel(const ConvParams& p, const float* wei, const Epilogue& ep, bool transposed,
                                             Isa isa, std::string* why) {
  (void)p, (void)wei, (void)ep, (void)transposed, (void)isa;
  if (why) *why += "no optimized convolution implementation is built yet; use conv3d_ref\n";
  return nullptr;
}

}  // namespace voxinfer::kernels
