"""voxinfer.Predictor: the network of MONAI's sliding_window_inference, on arrays or torch tensors."""

import numpy as np
import pytest

import voxinfer
from conftest import TensorProto, conv3d_relu_reference, helper, save_model


def fixed_batch_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "D", "H", "W"])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, "D", "H", "W"]) for n in ("neg", "sig")]
    save_model(path, [helper.make_node("Neg", ["x"], ["neg"]), helper.make_node("Sigmoid", ["x"], ["sig"])], [x], outs)


def test_predictor_on_arrays(models):
    pred = voxinfer.Predictor(models["conv"], threads=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6, 7))
    y = pred(x)  # float64 in, converted
    np.testing.assert_allclose(y, conv3d_relu_reference(x.astype(np.float32), models["conv_weights"]), atol=1e-4)
    assert "conv.onnx" in repr(pred)
    session = voxinfer.Session(str(models["conv"]))
    np.testing.assert_array_equal(voxinfer.Predictor(session)(x), y)


def test_fixed_batch_is_split_and_outputs_selected(tmp_path):
    fixed_batch_model(tmp_path / "fixed.onnx")
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 4, 4)).astype(np.float32)
    neg, sig = voxinfer.Predictor(tmp_path / "fixed.onnx")(x)
    np.testing.assert_array_equal(neg, -x)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-x)), rtol=1e-5)
    np.testing.assert_array_equal(voxinfer.Predictor(tmp_path / "fixed.onnx", output="neg")(x), -x)
    np.testing.assert_allclose(voxinfer.Predictor(tmp_path / "fixed.onnx", output=1)(x), sig)
    with pytest.raises(voxinfer.InvalidInputError, match="no output named"):
        voxinfer.Predictor(tmp_path / "fixed.onnx", output="logits")


def test_predictor_on_torch_tensors(models):
    torch = pytest.importorskip("torch")
    pred = voxinfer.Predictor(models["conv"])
    x = torch.randn(1, 2, 6, 5, 4, dtype=torch.float64)
    y = pred(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and y.shape == (1, 3, 6, 5, 4)
    ref = conv3d_relu_reference(x.numpy().astype(np.float32), models["conv_weights"])
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-4)


def test_in_monai_sliding_window_inference(models):
    pytest.importorskip("torch")
    inferers = pytest.importorskip("monai.inferers")
    import torch

    x = torch.randn(1, 2, 20, 18, 16)
    y = inferers.sliding_window_inference(x, roi_size=(8, 8, 8), sw_batch_size=2, predictor=voxinfer.Predictor(models["conv"]),
                                          overlap=0.5)
    assert y.shape == (1, 3, 20, 18, 16)
