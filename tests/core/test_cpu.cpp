#include <gtest/gtest.h>

#include "voxinfer/core/cpu.h"
#include "voxinfer/core/error.h"

namespace voxinfer {
namespace {

TEST(Cpu, CapLimitsActiveIsa) {
  const Isa hw = hardware_isa();
  set_max_isa(Isa::generic);
  EXPECT_EQ(active_isa(), Isa::generic);
  set_max_isa(Isa::avx512);
  EXPECT_EQ(active_isa(), hw);
  if (cpu_features().avx512f) {
    EXPECT_EQ(hw, Isa::avx512);
  }
  if (hw != Isa::generic) {
    EXPECT_TRUE(cpu_features().avx2 && cpu_features().fma);
  }
}

TEST(Cpu, ParseIsa) {
  EXPECT_EQ(parse_isa("avx2"), Isa::avx2);
  EXPECT_STREQ(isa_name(Isa::avx512), "avx512");
  EXPECT_THROW(parse_isa("sse9"), Error);
}

TEST(Error, CodesMapToExitStatuses) {
  EXPECT_EQ(exit_status(ErrorCode::invalid_input), 2);
  EXPECT_EQ(exit_status(ErrorCode::invalid_model), 3);
  EXPECT_EQ(exit_status(ErrorCode::unsupported), 3);
  EXPECT_EQ(exit_status(ErrorCode::internal), 1);
  Error e(ErrorCode::io, "x.nii: cannot open");
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_STREQ(e.what(), "x.nii: cannot open");
}

}  // namespace
}  // namespace voxinfer
