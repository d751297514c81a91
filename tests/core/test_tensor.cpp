#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "test_util.h"
#include "voxinfer/core/reorder.h"
#include "voxinfer/core/tensor.h"

namespace voxinfer {
namespace {

Tensor iota(const Shape& s) {
  Tensor t(s, DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

TEST(Tensor, AllocationIsAlignedAndZeroed) {
  Tensor t(Shape{3, 5, 7}, DType::f32);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw()) % kTensorAlignment, 0u);
  for (std::int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.data<float>()[i], 0.f);
  EXPECT_EQ(t.nbytes(), 3u * 5 * 7 * 4);
  EXPECT_EQ(t.stride(0), 35);
  EXPECT_EQ(t.stride(1), 7);
  EXPECT_EQ(t.stride(-1), 1);
}

TEST(Tensor, LargeAllocationsAreAlignedZeroedAndReusable) {
  // Sizes on both sides of the threshold where blocks are mapped from the system; each block
  // is dirtied and freed, so a recycled one that came back unzeroed would show.
  for (int round = 0; round < 2; ++round)
    for (const std::size_t n : {std::size_t{1000}, (std::size_t{1} << 20) - 64, std::size_t{1} << 20, (std::size_t{3} << 20) + 4}) {
      auto b = aligned_bytes(n);
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(b.get()) % kTensorAlignment, 0u) << n;
      std::size_t nonzero = 0;
      for (std::size_t i = 0; i < n; ++i) nonzero += b.get()[i] != std::byte{0};
      EXPECT_EQ(nonzero, 0u) << n;
      std::memset(b.get(), 0xab, n);
    }
}

TEST(Tensor, TypedAccessChecksTypeAndBounds) {
  Tensor t(Shape{2, 3}, DType::i32);
  t.at<std::int32_t>(1, 2) = 42;
  EXPECT_EQ(t.data<std::int32_t>()[5], 42);
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_THROW(t.at<std::int32_t>(2, 0), Error);
  EXPECT_THROW(t.at<std::int32_t>(0), Error);
}

TEST(Tensor, SliceIsAViewSharingStorage) {
  Tensor t = iota(Shape{4, 6});
  Tensor s = t.slice(1, 1, 5, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{4, 2}));
  EXPECT_EQ(s.stride(1), 2);
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s.at<float>(2, 1), 15.f);  // row 2, column 3
  s.at<float>(0, 0) = -1.f;
  EXPECT_EQ(t.at<float>(0, 1), -1.f);
  EXPECT_TRUE(s.shares_storage_with(t));
  Tensor c = s.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(c.shares_storage_with(t));
  EXPECT_EQ(c.data<float>()[5], 15.f);  // row 2, second kept column
  EXPECT_THROW(t.slice(0, 2, 5), Error);
}

TEST(Tensor, PermuteAndReshape) {
  Tensor t = iota(Shape{2, 3, 4});
  const int perm[] = {2, 0, 1};
  Tensor p = t.permute(perm);
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 4; ++c) EXPECT_EQ(p.at<float>(c, a, b), t.at<float>(a, b, c));
  EXPECT_THROW(p.reshape(Shape{24}), Error);  // not contiguous
  Tensor r = p.contiguous().reshape(Shape{24});
  EXPECT_EQ(r.data<float>()[1], 4.f);  // p[0,0,1] = t[0,1,0]
  EXPECT_THROW(t.reshape(Shape{5, 5}), Error);
  const int bad[] = {0, 0, 1};
  EXPECT_THROW(t.permute(bad), Error);
}

TEST(Tensor, RejectsBadShapes) {
  EXPECT_THROW(Shape({1, 2, 3, 4, 5, 6, 7, 8, 9}), Error);
  EXPECT_THROW(Shape({2, -1}), Error);
  EXPECT_EQ(Shape({}).numel(), 1);
  EXPECT_EQ(Shape({3, 0}).numel(), 0);
}

// Element counts that overflow 64 bits (2^32 x 2^32 wraps to 0) are refused, whatever the
// order of the dims and even with a zero among them (the strides would still overflow).
TEST(Tensor, RejectsShapesWhoseElementCountOverflows) {
  constexpr std::int64_t k32 = std::int64_t{1} << 32;
  EXPECT_THROW(Shape({k32, k32}), Error);
  EXPECT_THROW(Shape({2, k32, k32, 1}), Error);
  EXPECT_THROW(Shape({k32, 0, k32}), Error);
  EXPECT_THROW(Shape({INT64_MAX, 2}), Error);
  EXPECT_TRUE(Shape::numel_fits(std::vector<std::int64_t>{k32, 1 << 20}));
  EXPECT_FALSE(Shape::numel_fits(std::vector<std::int64_t>{k32, k32}));
  Shape s{k32};
  EXPECT_THROW(s.push_back(k32), Error);
  EXPECT_EQ(s.rank(), 1);
  EXPECT_EQ(Shape({k32, 1 << 20}).numel(), k32 << 20);
}

// Reorders: plain -> blocked -> plain is the identity, tails are zero, and the blocked
// element positions match the layout's definition, for channel counts below, equal to,
// above and not a multiple of the block.
class ReorderSweep : public ::testing::TestWithParam<std::tuple<Layout, int, int>> {};

TEST_P(ReorderSweep, RoundTripAndZeroTail) {
  const auto [layout, c0, c1] = GetParam();
  const int b = layout_block(layout);
  const Shape s{c0, c1, 3, 2, 5};
  Tensor src = test::random_tensor(s, 7 + static_cast<std::uint32_t>(c0 * 31 + c1));
  Tensor blk = reorder_to_blocked(src, layout);
  ASSERT_EQ(blk.layout(), layout);
  const bool wei = layout_is_weights(layout);
  const std::int64_t d0 = wei ? round_up(c0, b) : c0;
  EXPECT_EQ(blk.physical_numel(), d0 * round_up(c1, b) * 30);
  // Spot-check positions against the layout definition.
  const float* p = blk.data<float>();
  for (int a = 0; a < c0; ++a)
    for (int c = 0; c < c1; ++c) {
      const float v = src.at<float>(a, c, 2, 1, 4);
      const std::int64_t off = wei ? blocked_wei_offset(s, b, a, c, 2, 1, 4) : blocked_act_offset(s, b, a, c, 2, 1, 4);
      ASSERT_EQ(p[off], v);
    }
  // Padding lanes hold zeros.
  double sum_abs_blk = 0, sum_abs_src = 0;
  for (std::int64_t i = 0; i < blk.physical_numel(); ++i) sum_abs_blk += std::abs(p[i]);
  for (std::int64_t i = 0; i < src.numel(); ++i) sum_abs_src += std::abs(src.data<float>()[i]);
  EXPECT_NEAR(sum_abs_blk, sum_abs_src, 1e-3);
  Tensor back = reorder_to_plain(blk);
  EXPECT_EQ(back.shape(), s);
  EXPECT_EQ(test::max_abs_diff(back, src), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, ReorderSweep,
                         ::testing::Combine(::testing::Values(Layout::nCdhw8c, Layout::nCdhw16c, Layout::OIdhw8i8o,
                                                              Layout::OIdhw16i16o),
                                            ::testing::Values(1, 3), ::testing::Values(1, 5, 8, 13, 16, 17)),
                         [](const ::testing::TestParamInfo<ReorderSweep::ParamType>& info) {
                           return std::string(layout_name(std::get<0>(info.param))) + "_n" +
                                  std::to_string(std::get<1>(info.param)) + "_c" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(Reorder, ExplicitNCdhw8cPositions) {
  // C = 10: element (n=0, c=9, d=0, h=0, w=1) lives in channel block 1, lane 1.
  Tensor src(Shape{1, 10, 1, 1, 2}, DType::f32);
  src.at<float>(0, 9, 0, 0, 1) = 5.f;
  Tensor blk = reorder_to_blocked(src, Layout::nCdhw8c);
  // block 1 starts after 1 block * 2 spatial * 8 lanes = 16; w=1 adds 8; lane 1.
  EXPECT_EQ(blk.data<float>()[16 + 8 + 1], 5.f);
}

}  // namespace
}  // namespace voxinfer
