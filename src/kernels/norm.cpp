// Selects the per-ISA normalisation functions (norm.h).
#include "kernels/norm.h"

namespace voxinfer::kernels::norm {

Fns fns(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return {moments__avx512, affine__avx512};
    case Isa::avx2:
      return {moments__avx2_fma, affine__avx2_fma};
    default:
      return {moments__generic, affine__generic};
  }
}

}  // namespace voxinfer::kernels::norm
