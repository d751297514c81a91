#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"

namespace voxinfer {
namespace {

// K = 3 logits per voxel from the first input channel: [0, x - 0.5, 0.7 * sin(5x)].
Tensor toy_network(const Tensor& x) {
  const std::int64_t b = x.dim(0), c = x.dim(1), r = x.dim(2) * x.dim(3) * x.dim(4);
  Tensor y(Shape{b, 3, x.dim(2), x.dim(3), x.dim(4)}, DType::f32);
  for (std::int64_t n = 0; n < b; ++n)
    for (std::int64_t i = 0; i < r; ++i) {
      const float v = x.data<float>()[n * c * r + i];
      y.data<float>()[(n * 3) * r + i] = 0;
      y.data<float>()[(n * 3 + 1) * r + i] = v - 0.5f;
      y.data<float>()[(n * 3 + 2) * r + i] = 0.7f * std::sin(5 * v);
    }
  return y;
}

// K = 2: background 0, foreground x - 0.5.
Tensor two_class(const Tensor& x) {
  const std::int64_t b = x.dim(0), c = x.dim(1), r = x.dim(2) * x.dim(3) * x.dim(4);
  Tensor y(Shape{b, 2, x.dim(2), x.dim(3), x.dim(4)}, DType::f32);
  for (std::int64_t n = 0; n < b; ++n)
    for (std::int64_t i = 0; i < r; ++i) y.data<float>()[(n * 2 + 1) * r + i] = x.data<float>()[n * c * r + i] - 0.5f;
  return y;
}

Geometry tilted() {
  const double a = 0.3;
  Geometry g;
  g.direction << std::cos(a), -std::sin(a), 0, std::sin(a), std::cos(a), 0, 0, 0, 1;
  g.spacing = {1.3, 0.9, 2.1};
  g.origin = {-4, 3, 1};
  return g;
}

void expect_equal(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  for (std::int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << "element " << i;
}

// Whole-volume reference: logits on the model grid as a Volume.
Volume whole_logits(const Volume& model, AxisOrder axes, const SlidingWindowOptions& o) {
  const Tensor logits = sliding_window(to_model_tensor(model, axes), o, toy_network);
  return volume_from_model_tensor(logits, axes, model.geometry);
}

TEST(SlabResampler, SameGridIsTheArgmaxOfTheWholeVolume) {
  Volume model;
  model.data = test::random_tensor(Shape{1, 19, 11, 13}, 3, 0.f, 1.f);
  model.geometry = tilted();
  SlidingWindowOptions o;
  o.roi_size = {8, 8, 8};
  for (AxisOrder axes : {AxisOrder::zyx, AxisOrder::xyz}) {
    const Volume logits = whole_logits(model, axes, o);
    const Tensor expected = argmax_channels(logits.data);
    SlabResampler rs(model.geometry, {13, 11, 19}, axes, model.geometry, {13, 11, 19}, Activation::softmax);
    sliding_window_stream(to_model_tensor(model, axes), o, toy_network, rs.consumer());
    const Volume labels = rs.finish();
    expect_equal(labels.data, expected.reshape(Shape{1, 19, 11, 13}));
  }
}

TEST(SlabResampler, OtherGridEqualsResamplingTheWholeLogits) {
  Volume model;
  model.data = test::random_tensor(Shape{1, 17, 12, 14}, 9, 0.f, 1.f);
  model.geometry.spacing = {1.5, 1.5, 2.0};
  model.geometry.origin = {2, -1, 0.5};
  SlidingWindowOptions o;
  o.roi_size = {6, 7, 8};
  o.overlap = {0.5, 0.3, 0.6};
  // Targets: a finer axis-aligned grid, and a rotated, permuted one (general mapping).
  Geometry fine = model.geometry;
  fine.spacing = {0.7, 1.1, 0.9};
  Geometry rotated = tilted();
  rotated.direction = Eigen::Matrix3d(rotated.direction * direction_from_code("PSL"));
  rotated.spacing = {0.8, 1.0, 1.2};
  const std::array<Geometry, 2> targets{fine, rotated};
  const std::array<std::array<std::int64_t, 3>, 2> sizes{{{30, 17, 37}, {25, 21, 19}}};
  for (AxisOrder axes : {AxisOrder::zyx, AxisOrder::xyz})
    for (std::size_t t = 0; t < 2; ++t) {
      const Volume logits = whole_logits(model, axes, o);
      const Volume resampled = resample_to_grid(logits, targets[t], sizes[t], Interpolation::linear);
      const Tensor expected = argmax_channels(resampled.data);
      SlabResampler rs(model.geometry, {14, 12, 17}, axes, targets[t], sizes[t], Activation::none);
      std::int64_t slabs = 0;
      sliding_window_stream(to_model_tensor(model, axes), o, toy_network, [&](const Tensor& s, std::int64_t b) {
        ++slabs;
        rs.consume(s, b);
      });
      EXPECT_GT(slabs, 2);
      const Volume labels = rs.finish();
      expect_equal(labels.data, expected.reshape(Shape{1, sizes[t][2], sizes[t][1], sizes[t][0]}));
    }
}

TEST(SlabResampler, SigmoidAndOrderChecks) {
  Volume model(1, 4, 4, 4);
  SlabResampler rs(model.geometry, {4, 4, 4}, AxisOrder::zyx, model.geometry, {4, 4, 4}, Activation::sigmoid, 0.5f,
                   {5, 9});
  // Channel 0 on everywhere, channel 1 on in planes z >= 2.
  Tensor slab(Shape{2, 2, 4, 4}, DType::f32);
  for (std::int64_t i = 0; i < 16 * 2; ++i) slab.data<float>()[i] = 1.f;
  for (std::int64_t i = 0; i < 16 * 2; ++i) slab.data<float>()[32 + i] = -1.f;
  EXPECT_THROW(rs.consume(slab, 2), Error);  // out of order
  rs.consume(slab, 0);
  EXPECT_THROW(rs.finish(), Error);  // planes missing
  for (std::int64_t i = 0; i < 16 * 2; ++i) slab.data<float>()[32 + i] = 2.f;
  rs.consume(slab, 2);
  const Volume labels = rs.finish();
  EXPECT_EQ(labels.at(0, 0, 0, 0), 5.f);
  EXPECT_EQ(labels.at(0, 1, 3, 3), 5.f);
  EXPECT_EQ(labels.at(0, 2, 0, 0), 9.f);
  EXPECT_EQ(labels.at(0, 3, 3, 3), 9.f);
  SlabResampler wrong(model.geometry, {4, 4, 4}, AxisOrder::zyx, model.geometry, {4, 4, 4}, Activation::sigmoid, 0.5f, {5});
  EXPECT_THROW(wrong.consume(slab, 0), Error);
}

PipelineSpec toy_spec() {
  PipelineSpec spec;
  spec.task = Task::segmentation;
  spec.model = "toy.onnx";
  spec.axes = AxisOrder::xyz;
  spec.input.channels = 1;
  spec.inference.roi_size = {16, 16, 12};
  LabelSpec l1, l2;
  l1.value = 1;
  l1.name = "bright";
  l2.value = 2;
  l2.name = "wavy";
  spec.labels = {l1, l2};
  return spec;
}

TEST(SegmentVolume, WithoutResamplingEqualsTheArgmaxOfTheSlidingWindow) {
  Volume input;
  input.data = test::random_tensor(Shape{1, 20, 18, 22}, 5, 0.f, 1.f);
  input.geometry = tilted();
  input.metadata["SeriesInstanceUID"] = "1.2.3";
  PipelineSpec spec = toy_spec();
  spec.axes = AxisOrder::zyx;
  const SegmentResult r = segment_volume(input, spec, toy_network);
  const Tensor logits = sliding_window(to_model_tensor(input, AxisOrder::zyx), SlidingWindowOptions::from_spec(spec.inference),
                                       toy_network);
  expect_equal(r.labels.data, argmax_channels(logits).reshape(Shape{1, 20, 18, 22}));
  EXPECT_EQ(r.labels.metadata.at("SeriesInstanceUID"), "1.2.3");
  EXPECT_EQ((r.labels.geometry.origin - input.geometry.origin).norm(), 0);
  ASSERT_EQ(r.statistics.size(), 2u);
  EXPECT_EQ(r.statistics[0].name, "bright");
  EXPECT_GT(r.window.tiles, 1);
}

TEST(SegmentVolume, ReorientedAndResampledSphereComesBackOnTheInputGrid) {
  // A bright ball (100) in a dark LPS volume with anisotropic voxels; plus a small bright blob.
  Geometry g;
  g.spacing = {0.9, 0.9, 2.0};
  g.origin = {-20, 15, -30};
  Volume input(1, 24, 40, 44, g);
  const Eigen::Vector3d centre = g.index_to_physical(Eigen::Vector3d(21, 19, 11));
  std::int64_t ball = 0;
  std::vector<char> in_ball(static_cast<std::size_t>(input.voxels()), 0);
  for (std::int64_t z = 0; z < 24; ++z)
    for (std::int64_t y = 0; y < 40; ++y)
      for (std::int64_t x = 0; x < 44; ++x) {
        const Eigen::Vector3d p = g.index_to_physical(Eigen::Vector3d(double(x), double(y), double(z)));
        if ((p - centre).norm() < 11.0) {
          input.at(0, z, y, x) = 100;
          in_ball[static_cast<std::size_t>((z * 40 + y) * 44 + x)] = 1;
          ++ball;
        }
      }
  // A small bright cube in a corner, about 29 mm from the ball.
  for (std::int64_t z = 1; z < 3; ++z)
    for (std::int64_t y = 1; y < 5; ++y)
      for (std::int64_t x = 1; x < 5; ++x) input.at(0, z, y, x) = 100;
  PipelineSpec spec = toy_spec();
  spec.preprocess.orientation = "RAS";
  spec.preprocess.spacing = std::array<double, 3>{1.2, 1.2, 1.5};
  IntensityOp scale;
  scale.kind = IntensityOp::Kind::scale;
  scale.from = {0, 100};
  scale.to = {0, 1};
  spec.preprocess.intensity = {scale};
  spec.labels.resize(1);
  spec.postprocess.keep_largest_component = {1};
  const SegmentResult r = segment_volume(input, spec, two_class);
  ASSERT_EQ(r.labels.nx(), 44);
  ASSERT_EQ(r.labels.nz(), 24);
  EXPECT_EQ((r.labels.geometry.spacing - g.spacing).norm(), 0);
  EXPECT_EQ((r.labels.geometry.direction - g.direction).norm(), 0);
  EXPECT_EQ(r.model_geometry.orientation_code(), "RAS");
  // Model grid: RAS of 44 x 40 x 24 voxels at 0.9/0.9/2.0 -> 1.2/1.2/1.5: round(33), round(30), round(32).
  EXPECT_EQ(r.model_size, (std::array<std::int64_t, 3>{33, 30, 32}));
  std::int64_t agree = 0, labelled = 0;
  for (std::int64_t i = 0; i < input.voxels(); ++i) {
    const bool in = in_ball[static_cast<std::size_t>(i)] != 0;
    const float l = r.labels.channel(0)[i];
    labelled += l == 1.f;
    agree += (l == 1.f) == in;
  }
  EXPECT_GT(double(agree) / double(input.voxels()), 0.99);
  EXPECT_EQ(r.labels.at(0, 1, 2, 2), 0.f);  // the cube went with keep_largest_component
  spec.postprocess.keep_largest_component.clear();
  EXPECT_EQ(segment_volume(input, spec, two_class).labels.at(0, 1, 2, 2), 1.f);  // it was found
  EXPECT_NEAR(double(labelled), double(ball), 0.05 * double(ball));
  ASSERT_EQ(r.statistics.size(), 1u);
  EXPECT_EQ(r.statistics[0].voxels, labelled);
  EXPECT_NEAR(r.statistics[0].volume_ml, double(labelled) * 0.9 * 0.9 * 2.0 / 1000, 1e-12);
  EXPECT_LE(r.window.measured_peak_bytes, r.window.predicted_peak_bytes);
}

TEST(SegmentVolume, ChannelMismatchIsAnInputError) {
  Volume input(2, 4, 4, 4);
  try {
    (void)segment_volume(input, toy_spec(), toy_network);
    ADD_FAILURE() << "two channels accepted for a one-channel model";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_input);
    EXPECT_NE(std::string(e.what()).find("1 input channel"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace voxinfer

namespace voxinfer {
namespace {

TEST(PreprocessForModel, ClassificationResizeAndCrop) {
  PipelineSpec spec;
  spec.task = Task::classification;
  spec.axes = AxisOrder::zyx;
  spec.input.channels = 1;
  spec.preprocess.resize = std::array<std::int64_t, 3>{6, 10, 12};  // z, y, x
  Volume input(1, 3, 5, 6);
  const Volume r = preprocess_for_model(input, spec);
  EXPECT_EQ(r.nz(), 6);
  EXPECT_EQ(r.ny(), 10);
  EXPECT_EQ(r.nx(), 12);
  spec.preprocess.resize.reset();
  spec.preprocess.crop = CropSpec{CropSpec::Mode::center, {2, 4, 4}, 0};
  const Volume c = preprocess_for_model(input, spec);
  EXPECT_EQ(c.nz(), 2);
  EXPECT_EQ(c.ny(), 4);
  EXPECT_EQ(c.nx(), 4);
  EXPECT_EQ(to_model_tensor(c, spec.axes).shape(), (Shape{1, 1, 2, 4, 4}));
}

}  // namespace
}  // namespace voxinfer

namespace voxinfer {
namespace {

TEST(SegmentVolume, OptionsOverrideOverlapAndTta) {
  Volume input;
  input.data = test::random_tensor(Shape{1, 20, 18, 22}, 6, 0.f, 1.f);
  PipelineSpec spec = toy_spec();
  const SegmentResult plain = segment_volume(input, spec, toy_network);
  SegmentOptions o;
  o.overlap = std::array<double, 3>{0.75, 0.75, 0.75};
  o.tta = true;  // no mirror_axes listed: all three
  std::int64_t last_done = 0;
  o.progress = [&](std::int64_t done, std::int64_t total) {
    last_done = done;
    EXPECT_LE(done, total);
  };
  const SegmentResult r = segment_volume(input, spec, toy_network, o);
  EXPECT_GT(r.window.tiles, plain.window.tiles);
  EXPECT_EQ(r.window.network_calls, 8 * r.window.tiles);
  EXPECT_EQ(last_done, r.window.tiles);
  // The toy network is pointwise, so neither overlap nor mirroring changes labels much.
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < input.voxels(); ++i) same += r.labels.channel(0)[i] == plain.labels.channel(0)[i];
  EXPECT_GT(double(same) / double(input.voxels()), 0.999);
}

TEST(SegmentVolume, AveragingProbabilitiesAppliesTheActivationBeforeBlending) {
  // Two tiles along axis 0 (planes 0-3 and 2-5), constant weights: the first call answers a
  // logit of 4 everywhere, the second -1. Planes 2-3 get both: the mean logit 1.5 has
  // sigmoid 0.818, the mean probability is (0.982 + 0.269) / 2 = 0.626; threshold 0.7.
  Volume input;
  input.data = Tensor(Shape{1, 4, 4, 6}, DType::f32);  // [C, z, y, x]: x is model axis 0 below
  std::fill_n(input.data.data<float>(), input.data.numel(), 0.f);
  PipelineSpec spec;
  spec.task = Task::segmentation;
  spec.axes = AxisOrder::xyz;
  spec.input.channels = 1;
  spec.inference.roi_size = {4, 4, 4};
  spec.inference.overlap = {0.5, 0.5, 0.5};
  spec.inference.blend = BlendMode::constant;
  spec.postprocess.activation = Activation::sigmoid;
  spec.postprocess.threshold = 0.7;
  LabelSpec on;
  on.value = 1;
  on.name = "on";
  spec.labels = {on};
  auto labels_along_x = [&](AverageSpace average) {
    spec.inference.average = average;
    int call = 0;
    const SegmentResult r = segment_volume(input, spec, [&](const Tensor& x) {
      Tensor y(Shape{x.dim(0), 1, x.dim(2), x.dim(3), x.dim(4)}, DType::f32);
      std::fill_n(y.data<float>(), y.numel(), call++ == 0 ? 4.f : -1.f);
      return y;
    });
    EXPECT_EQ(r.window.tiles, 2);
    std::vector<float> row;
    for (std::int64_t x = 0; x < 6; ++x) row.push_back(r.labels.at(0, 2, 1, x));
    return row;
  };
  EXPECT_EQ(labels_along_x(AverageSpace::logits), (std::vector<float>{1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(labels_along_x(AverageSpace::probabilities), (std::vector<float>{1, 1, 0, 0, 0, 0}));
}

}  // namespace
}  // namespace voxinfer
