"""Errors: one exception class per error code, with the command line's one-line messages."""

import numpy as np
import pytest

import voxinfer
from conftest import TEST_DATA


def test_exception_hierarchy():
    for cls, code in [(voxinfer.InvalidInputError, "invalid_input"), (voxinfer.InvalidModelError, "invalid_model"),
                      (voxinfer.UnsupportedError, "unsupported"), (voxinfer.IoError, "io"),
                      (voxinfer.InternalError, "internal")]:
        assert issubclass(cls, voxinfer.Error) and issubclass(cls, RuntimeError)
        assert cls.code == code
        assert cls.__module__ == "voxinfer"
    assert issubclass(voxinfer.InvalidInputError, ValueError)


def test_broken_model_is_invalid_model_with_the_command_lines_message(cli, tmp_path):
    bad = TEST_DATA / "not_a_model.onnx"
    with pytest.raises(voxinfer.InvalidModelError) as e:
        voxinfer.Session(str(bad))
    message = str(e.value)
    assert "not_a_model.onnx" in message and "\n" not in message
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 2, 2, 2), np.float32))
    r = cli("run", bad, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", check=False)
    assert r.returncode == 3
    assert r.stderr.strip() == f"voxinfer: error: {message}"


def test_missing_model_file():
    with pytest.raises(voxinfer.Error) as e:
        voxinfer.Session("no/such/model.onnx")
    assert "no/such/model.onnx" in str(e.value)
    assert e.value.code in ("invalid_input", "io")


@pytest.mark.parametrize("shape,words", [((1, 2, 4, 4), "image"), ((1, 5, 4, 4, 4), "image")])
def test_wrong_input_shape_names_the_input(models, shape, words):
    s = voxinfer.Session(str(models["conv"]))
    with pytest.raises(voxinfer.InvalidInputError) as e:
        s.run(np.zeros(shape, np.float32))
    assert words in str(e.value)


def test_wrong_input_names_and_counts(models):
    s = voxinfer.Session(str(models["two"]))
    a = np.zeros((1, 2, 2, 2, 2), np.float32)
    with pytest.raises(voxinfer.InvalidInputError, match="missing model input 'b'"):
        s.run({"a": a})
    with pytest.raises(voxinfer.InvalidInputError, match="no input named 'c'"):
        s.run({"a": a, "b": a, "c": a})
    with pytest.raises(voxinfer.InvalidInputError, match="takes 2 input"):
        s.run([a])
    with pytest.raises(voxinfer.InvalidInputError, match="dict"):
        s.run(a)
    with pytest.raises(ValueError):  # InvalidInputError is a ValueError too
        s.run({"a": "not an array", "b": a})
    with pytest.raises(voxinfer.InvalidInputError):
        s.run({"a": None, "b": a})


def test_bad_thread_count(models):
    with pytest.raises(voxinfer.InvalidInputError):
        voxinfer.Session(str(models["conv"]), threads=-1)


def test_unreadable_volume_and_bad_pixel_type(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(voxinfer.Error) as e:
        voxinfer.read_volume(str(tmp_path / "junk.nii.gz"))
    assert "junk.nii.gz" in str(e.value)
    v = voxinfer.Volume(np.full((2, 3, 4), 0.5, np.float32))
    with pytest.raises(voxinfer.InvalidInputError):
        voxinfer.write_volume(str(tmp_path / "v.nii.gz"), v, pixel_type="uint8")  # 0.5 is not a uint8
    assert not (tmp_path / "v.nii.gz").exists()
    with pytest.raises(voxinfer.InvalidInputError):
        voxinfer.write_volume(str(tmp_path / "v.nii.gz"), v, pixel_type="complex")


def test_bad_model_folder():
    with pytest.raises(voxinfer.Error):
        voxinfer.SegmentationPipeline(str(TEST_DATA / "no_such_package"))
