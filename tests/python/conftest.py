"""Fixtures of the Python tests: the module under test, the command line built beside it,
the repository's test data, and small ONNX models written at test time."""

import os
import pathlib
import subprocess

import numpy as np
import pytest

import voxinfer

REPO = pathlib.Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"


def _cli_path():
    if os.environ.get("VOXINFER_CLI"):
        return pathlib.Path(os.environ["VOXINFER_CLI"])
    # The build tree's package lies in <build>/python/voxinfer; the command line in <build>/examples.
    build = pathlib.Path(voxinfer._voxinfer.__file__).resolve().parents[2]
    return build / "examples" / "voxinfer"


@pytest.fixture(scope="session")
def cli():
    """Runs the voxinfer command line; skips the test when it was not built."""
    path = _cli_path()
    if not path.is_file():
        pytest.skip(f"the voxinfer command line is not built ({path}); set VOXINFER_CLI")

    def run(*args, check=True):
        r = subprocess.run([str(path), *map(str, args)], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"voxinfer {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}")
        return r

    return run


@pytest.fixture(scope="session")
def shared_dir():
    d = pathlib.Path(os.environ.get("VOXINFER_SHARED_DIR", REPO.parent / "shared"))
    return d if d.is_dir() else None


onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def save_model(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="voxinfer-tests")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_model(path, cin=2, cout=3, k=3, layers=1, seed=0):
    """Conv3d (+ ReLU) x layers with random weights and symbolic N, D, H, W; returns the weights."""
    rng = np.random.default_rng(seed)
    nodes, inits, weights = [], [], []
    prev, c = "image", cin
    for i in range(layers):
        w = (rng.standard_normal((cout, c, k, k, k)) / np.sqrt(c * k**3)).astype(np.float32)
        b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "logits" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k] * 3, pads=[k // 2] * 6))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        weights.append((w, b))
        prev, c = out, cout
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", cin, "D", "H", "W"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", cout, "D", "H", "W"])
    save_model(path, nodes, [x], [y], inits)
    return weights


def conv3d_relu_reference(x, weights):
    """Same padding Conv3d + ReLU per layer, in float64 NumPy."""
    y = x.astype(np.float64)
    for w, b in weights:
        k = w.shape[2]
        p = k // 2
        n, _, d, h, wd = y.shape
        yp = np.pad(y, ((0, 0), (0, 0), (p, p), (p, p), (p, p)))
        out = np.zeros((n, w.shape[0], d, h, wd))
        for a in range(k):
            for bb in range(k):
                for cc in range(k):
                    out += np.einsum("ncdhw,oc->nodhw", yp[:, :, a:a + d, bb:bb + h, cc:cc + wd], w[:, :, a, bb, cc])
        y = np.maximum(out + b[None, :, None, None, None], 0)
    return y


def two_input_model(path):
    """sum = a + b, scaled = sigmoid(a) * 2: two inputs, two outputs, fixed channel count 2."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]),
             helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Mul", ["s", "two"], ["scaled"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2, "D", "H", "W"]) for n in ("a", "b")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2, "D", "H", "W"]) for n in ("sum", "scaled")]
    return save_model(path, nodes, ins, outs, [two])


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    m = {"conv": d / "conv.onnx", "two": d / "two.onnx", "heavy": d / "heavy.onnx"}
    m["conv_weights"] = conv_model(m["conv"])
    two_input_model(m["two"])
    conv_model(m["heavy"], cin=8, cout=16, layers=2, seed=1)
    return m
