"""voxinfer.SegmentationPipeline on every package kind the command line accepts: an nnU-Net
v2 results folder (shipped), a MONAI bundle and a pipeline.json package (networks written at
test time); labels equal the command line's, statistics as its --stats JSON."""

import json
import shutil

import numpy as np
import pytest

import voxinfer
from conftest import TEST_DATA, TensorProto, helper, numpy_helper, save_model

NNUNET = TEST_DATA / "nnunet_v2_small"
NNUNET_FOLDER = NNUNET / "Dataset311_VoxAbdCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
NNUNET_INPUT = NNUNET / "inputs" / "ct3mm_z78-111_LPS_zeropad_0000.nii.gz"


def threshold_network(path):
    """Two logits per voxel, (0.5 - x) * 8 and (x - 0.5) * 8: label 1 where x > 0.5."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    gain = numpy_helper.from_array(np.array(8.0, np.float32), "gain")
    nodes = [helper.make_node("Sub", ["image", "half"], ["d"]), helper.make_node("Mul", ["d", "gain"], ["up"]),
             helper.make_node("Neg", ["up"], ["down"]),
             helper.make_node("Concat", ["down", "up"], ["pred"], axis=1)]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])
    y = helper.make_tensor_value_info("pred", TensorProto.FLOAT, ["N", 2, "D", "H", "W"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, nodes, [x], [y], [half, gain])


def ramp_volume(path):
    """A 19 x 13 x 7 volume, 3 x 2.5 x 4 mm, LPS, values rising along x and z."""
    z, y, x = np.meshgrid(np.arange(7), np.arange(13), np.arange(19), indexing="ij")
    arr = (x * 40.0 + z * 15.0 - 300.0).astype(np.float32)
    v = voxinfer.Volume(arr, spacing=(3, 2.5, 4), origin=(10, -20, 5))
    voxinfer.write_volume(str(path), v, pixel_type="float32")
    return v


def labels_of(path):
    return voxinfer.read_volume(str(path)).array


def test_nnunet_folder_matches_nnunet_and_the_command_line(cli, tmp_path):
    p = voxinfer.SegmentationPipeline(str(NNUNET_FOLDER), folds=[0], tta=False, threads=2)
    assert p.kind == "nnunet"
    assert [l["name"] for l in p.labels] == ["spleen", "kidney", "liver", "stomach", "aorta"]
    volume = voxinfer.read_volume(str(NNUNET_INPUT))
    r = p.run(volume)
    assert r.labels.shape == volume.shape
    np.testing.assert_allclose(r.labels.affine, volume.affine)
    reference = labels_of(NNUNET / "predictions" / "f0_step0.5_nomirror" / "ct3mm_z78-111_LPS_zeropad.nii.gz")
    assert np.mean(r.labels.array == reference) >= 0.9999  # nnU-Net 2.8.1's own label map
    cli("segment", "--model", NNUNET_FOLDER, "-i", NNUNET_INPUT, "-o", tmp_path / "l.nii.gz", "--folds", "0",
        "--disable-tta", "--stats", tmp_path / "s.json", "--threads", "2")
    np.testing.assert_array_equal(r.labels.array, labels_of(tmp_path / "l.nii.gz"))
    cli_stats = json.loads((tmp_path / "s.json").read_text())["labels"]
    assert [(s["value"], s["name"], s["voxels"]) for s in r.stats] == \
        [(s["value"], s["name"], s["voxels"]) for s in cli_stats]
    for mine, theirs in zip(r.stats, cli_stats):
        assert mine["volume_ml"] == pytest.approx(theirs["volume_ml"])
        assert (mine["mean"] is None) == (theirs["mean"] is None)
    counts = {s["value"]: s["voxels"] for s in r.stats}
    for value, n in counts.items():
        assert int(np.sum(r.labels.array == value)) == n
    assert r.info["tiles"] > 0


def test_nnunet_probabilities_and_channel_list():
    p = voxinfer.SegmentationPipeline(str(NNUNET_FOLDER), folds=[0], tta=False)
    volume = voxinfer.read_volume(str(NNUNET_INPUT))
    r = p.run([volume], probabilities=True)
    assert r.probabilities.shape == (6,) + volume.shape[1:]
    np.testing.assert_allclose(r.probabilities.array.sum(axis=0), 1, atol=1e-3)
    agree = np.mean(np.argmax(r.probabilities.array, axis=0) == r.labels.array[0])
    assert agree > 0.999
    with pytest.raises(voxinfer.InvalidInputError, match="channel"):
        p.run([volume, volume])


def test_monai_bundle_matches_the_command_line(cli, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(TEST_DATA / "monai_bundle_tiny" / "configs", bundle / "configs")
    threshold_network(bundle / "models" / "model.onnx")
    v = ramp_volume(tmp_path / "in.nii.gz")
    p = voxinfer.SegmentationPipeline(str(bundle))
    assert p.kind == "monai_bundle"
    r = p.run(v)
    assert r.labels.shape == v.shape
    assert 0 < r.labels.array.mean() < 1  # both labels present
    cli("segment", "--model", bundle, "-i", tmp_path / "in.nii.gz", "-o", tmp_path / "l.nii.gz")
    np.testing.assert_array_equal(r.labels.array, labels_of(tmp_path / "l.nii.gz"))


def test_pipeline_json_package_matches_the_command_line(cli, tmp_path):
    pkg = tmp_path / "pkg"
    threshold_network(pkg / "model.onnx")
    (pkg / "pipeline.json").write_text(json.dumps({
        "task": "segmentation", "model": "model.onnx", "axes": "zyx",
        "input": {"channels": 1},
        "preprocess": {"intensity": [{"op": "scale", "from": [-300, 600], "to": [0, 1]}]},
        "inference": {"roi_size": [4, 8, 8], "overlap": 0.25},
        "postprocess": {"activation": "softmax"},
        "labels": [{"value": 1, "name": "bright"}],
    }))
    v = ramp_volume(tmp_path / "in.nii.gz")
    p = voxinfer.SegmentationPipeline(str(pkg), tta=False)
    assert p.kind == "package" and p.labels[0]["name"] == "bright"
    r = p.run(v)
    expected = ((v.array + 300) / 900 > 0.5).astype(np.float32)
    np.testing.assert_array_equal(r.labels.array, expected)
    assert r.stats[0]["name"] == "bright" and r.stats[0]["voxels"] == int(expected.sum())
    cli("segment", "--model", pkg, "-i", tmp_path / "in.nii.gz", "-o", tmp_path / "l.nii.gz", "--no-tta")
    np.testing.assert_array_equal(r.labels.array, labels_of(tmp_path / "l.nii.gz"))
    with pytest.raises(voxinfer.InvalidInputError, match="nnU-Net"):
        p.run(v, probabilities=True)
    with pytest.raises(voxinfer.InvalidInputError):
        voxinfer.SegmentationPipeline(str(pkg), folds=[0])
    with pytest.raises(voxinfer.InvalidInputError):
        p.run(np.zeros((3, 3, 3)))


def test_nnunet_options_are_checked():
    with pytest.raises(voxinfer.InvalidInputError, match="overlap"):
        voxinfer.SegmentationPipeline(str(NNUNET_FOLDER), overlap=0.5)
    with pytest.raises(voxinfer.InvalidInputError, match="step_size"):
        voxinfer.SegmentationPipeline(str(NNUNET_FOLDER), step_size=0)
    with pytest.raises(voxinfer.InvalidModelError, match="fold_4"):
        voxinfer.SegmentationPipeline(str(NNUNET_FOLDER), folds=[0, 4])
