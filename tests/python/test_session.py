"""voxinfer.Session: model information, results against NumPy and the command line,
zero-copy inputs, and the call forms."""

import numpy as np
import pytest

import voxinfer
from conftest import conv3d_relu_reference


def random_input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_inputs_and_outputs_show_symbolic_dims(models):
    s = voxinfer.Session(str(models["conv"]))
    assert [i.name for i in s.inputs] == ["image"]
    assert [o.name for o in s.outputs] == ["logits"]
    assert s.inputs[0].shape == ("N", 2, "D", "H", "W")
    assert s.inputs[0].dtype == np.float32
    assert "image" in repr(s)


def test_run_matches_numpy_reference(models):
    s = voxinfer.Session(str(models["conv"]), threads=2)
    x = random_input((1, 2, 7, 6, 9))
    y = s.run(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (1, 3, 7, 6, 9)
    ref = conv3d_relu_reference(x, models["conv_weights"])
    np.testing.assert_allclose(y, ref, atol=1e-4 * max(1, np.abs(ref).max()), rtol=0)


def test_run_equals_command_line_bitwise(models, cli, tmp_path):
    x = random_input((2, 2, 11, 8, 13), seed=3)
    np.save(tmp_path / "x.npy", x)
    cli("run", models["conv"], "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--threads", "2")
    y = voxinfer.Session(str(models["conv"]), threads=2).run(x)
    np.testing.assert_array_equal(y, np.load(tmp_path / "y.npy"))


def test_call_forms_dict_list_and_single_array(models):
    s = voxinfer.Session(str(models["two"]))
    a, b = random_input((1, 2, 3, 4, 5), 1), random_input((1, 2, 3, 4, 5), 2)
    d = s.run({"a": a, "b": b})
    assert set(d) == {"sum", "scaled"}
    np.testing.assert_allclose(d["sum"], a + b, rtol=1e-6)
    np.testing.assert_allclose(d["scaled"], 2 / (1 + np.exp(-a)), rtol=1e-5)
    lst = s.run([a, b])
    assert isinstance(lst, list) and len(lst) == 2
    np.testing.assert_array_equal(lst[0], d["sum"])
    np.testing.assert_array_equal(s.run((a, b))[1], d["scaled"])
    # One input, one output: the array itself; a list in gives a list out.
    c = voxinfer.Session(str(models["conv"]))
    x = random_input((1, 2, 4, 4, 4))
    assert isinstance(c.run(x), np.ndarray)
    assert isinstance(c.run([x]), list)
    np.testing.assert_array_equal(c(x), c.run(x))


def test_float32_contiguous_inputs_are_not_copied(models):
    s = voxinfer.Session(str(models["conv"]))
    x = random_input((1, 2, 8, 8, 8))
    before = voxinfer._voxinfer._input_copies()
    y = s.run(x)
    s.run({"image": x})
    assert voxinfer._voxinfer._input_copies() == before
    # Only 4-byte aligned (not 16 or 64): still read in place, same result.
    buf = np.zeros(x.size + 1, np.float32)
    unaligned = buf[1:].reshape(x.shape)
    unaligned[...] = x
    assert unaligned.ctypes.data % 16 != 0
    np.testing.assert_array_equal(s.run(unaligned), y)
    assert voxinfer._voxinfer._input_copies() == before
    # Other dtypes and non-contiguous views are converted (one copy each), with the same result.
    np.testing.assert_allclose(s.run(x.astype(np.float64)), y, rtol=0, atol=0)
    assert voxinfer._voxinfer._input_copies() == before + 1
    xt = np.ascontiguousarray(x.transpose(0, 1, 4, 3, 2)).transpose(0, 1, 4, 3, 2)
    assert not xt.flags.c_contiguous
    np.testing.assert_array_equal(s.run(xt), y)
    assert voxinfer._voxinfer._input_copies() == before + 2


def test_inputs_are_left_unchanged_and_outputs_are_owned(models):
    s = voxinfer.Session(str(models["conv"]))
    x = random_input((1, 2, 6, 6, 6))
    keep = x.copy()
    y1 = s.run(x)
    y1_copy = y1.copy()
    y2 = s.run(x * 3)
    np.testing.assert_array_equal(x, keep)
    # A later run must not write into an array returned earlier.
    np.testing.assert_array_equal(y1, y1_copy)
    assert not np.shares_memory(y1, y2)
    assert y1.flags.writeable and y1.flags.c_contiguous
    del s  # outputs outlive the session
    assert float(y2.sum()) > 0


def test_new_shapes_replan(models):
    s = voxinfer.Session(str(models["conv"]))
    for shape in [(1, 2, 5, 5, 5), (2, 2, 3, 9, 4), (1, 2, 5, 5, 5)]:
        x = random_input(shape)
        np.testing.assert_allclose(s.run(x), conv3d_relu_reference(x, models["conv_weights"]), atol=1e-4)


def test_shared_models_match_reference_and_command_line(shared_dir, cli, tmp_path):
    if shared_dir is None or not (shared_dir / "models").is_dir():
        pytest.skip("the shared model zoo (../shared/models) is absent")
    ran = 0
    for d in sorted((shared_dir / "models").iterdir()):
        if not (d / "model.onnx").is_file() or not (d / "input.npy").is_file():
            continue
        s = voxinfer.Session(str(d / "model.onnx"), threads=2)
        x = np.load(d / "input.npy")
        y = s.run([x])
        ref = [np.load(d / "output.npy")]
        tol = 1e-4 * max(1.0, float(np.abs(ref[0]).max()))
        np.testing.assert_allclose(y[0], ref[0], atol=tol, rtol=0, err_msg=d.name)
        cli("run", d / "model.onnx", "--input", d / "input.npy", "--output", tmp_path / "y.npy", "--threads", "2")
        np.testing.assert_array_equal(y[0], np.load(tmp_path / "y.npy"), err_msg=d.name)
        ran += 1
    assert ran > 0
