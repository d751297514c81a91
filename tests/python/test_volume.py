"""voxinfer.Volume, read_volume and write_volume against nibabel (a second reader)."""

import gc

import numpy as np
import pytest

import voxinfer
from conftest import TEST_DATA

nib = pytest.importorskip("nibabel")

NIFTI = TEST_DATA / "nnunet_v2_small" / "inputs" / "ct3mm_z78-111_LPS_zeropad_0000.nii.gz"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_affine():
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.8, 1.25, 2.5])
    aff[:3, 3] = [-12.5, 40.25, 7.0]
    return aff


def test_read_volume_agrees_with_nibabel():
    v = voxinfer.read_volume(str(NIFTI))
    img = nib.load(str(NIFTI))
    data = img.get_fdata(dtype=np.float32)
    assert v.shape == (1,) + data.shape[::-1]
    assert v.array.dtype == np.float32 and v.array.flags.c_contiguous
    np.testing.assert_array_equal(v.array[0].T, data)
    np.testing.assert_allclose(v.affine, img.affine, atol=1e-4)
    # LPS geometry as SimpleITK reports it: RAS affine with x and y negated.
    lps = LPS_TO_RAS @ img.affine
    np.testing.assert_allclose(v.affine_lps, lps, atol=1e-4)
    np.testing.assert_allclose(v.spacing, np.linalg.norm(img.affine[:3, :3], axis=0), rtol=1e-6)
    np.testing.assert_allclose(v.origin, lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(v.direction, lps[:3, :3] / np.array(v.spacing), atol=1e-6)
    assert v.orientation == "".join(nib.aff2axcodes(img.affine))


@pytest.mark.parametrize("pixel_type,dtype", [("float32", np.float32), ("int16", np.int16), ("uint8", np.uint8)])
def test_write_volume_is_read_back_by_nibabel(tmp_path, pixel_type, dtype):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=(5, 7, 9)).astype(np.float32)
    v = voxinfer.Volume.from_affine(arr, oblique_affine())
    out = tmp_path / "v.nii.gz"
    voxinfer.write_volume(str(out), v, pixel_type=pixel_type)
    img = nib.load(str(out))
    assert img.get_data_dtype() == dtype
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr.T)
    np.testing.assert_allclose(img.affine, oblique_affine(), atol=1e-4)
    back = voxinfer.read_volume(str(out))
    np.testing.assert_array_equal(back.array, v.array)
    np.testing.assert_allclose(back.affine, v.affine, atol=1e-4)


def test_nibabel_round_trip_with_channels(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((6, 5, 4, 3)).astype(np.float32)  # x, y, z, channels
    img = nib.Nifti1Image(data, oblique_affine())
    v = voxinfer.from_nibabel(img)
    assert v.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(v.array.transpose(3, 2, 1, 0), data)
    np.testing.assert_allclose(v.affine, oblique_affine(), atol=1e-12)
    back = voxinfer.to_nibabel(v)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, oblique_affine(), atol=1e-12)
    # Through a file written by nibabel and read by voxinfer: the same volume.
    nib.save(back, str(tmp_path / "c.nii.gz"))
    r = voxinfer.read_volume(str(tmp_path / "c.nii.gz"))
    np.testing.assert_array_equal(r.array, v.array)
    np.testing.assert_allclose(r.affine, v.affine, atol=1e-5)


def test_from_nibabel_equals_read_volume():
    a = voxinfer.from_nibabel(nib.load(str(NIFTI)))
    b = voxinfer.read_volume(str(NIFTI))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)


def test_array_is_a_view_that_keeps_the_volume_alive():
    v = voxinfer.Volume(np.zeros((2, 3, 4)), spacing=(0.5, 1, 2), origin=(1, 2, 3))
    assert v.shape == (1, 2, 3, 4) and v.channels == 1
    assert v.spacing == (0.5, 1.0, 2.0) and v.origin == (1.0, 2.0, 3.0)
    a = v.array
    a[0, 1, 2, 3] = 7
    assert v.array[0, 1, 2, 3] == 7
    assert np.shares_memory(a, v.array)
    del v
    gc.collect()
    assert a[0, 1, 2, 3] == 7
    c = voxinfer.Volume(np.ones((2, 2, 2, 2), np.float32))
    d = c.copy()
    d.array[...] = 3
    assert c.array.max() == 1 and c.channels == 2


def test_geometry_setters_and_validation():
    v = voxinfer.Volume(np.zeros((2, 2, 2)))
    v.direction = [0, 1, 0, 1, 0, 0, 0, 0, 1]  # SimpleITK's flat, row-by-row form
    np.testing.assert_array_equal(v.direction, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    v.spacing = (2, 3, 4)
    np.testing.assert_allclose(v.affine_lps[:3, :3], v.direction * [2, 3, 4])
    with pytest.raises(voxinfer.InvalidInputError, match="spacing"):
        v.spacing = (1, 0, 1)
    with pytest.raises(voxinfer.InvalidInputError, match="direction"):
        v.direction = np.eye(3) * 2
    with pytest.raises(voxinfer.InvalidInputError):
        voxinfer.Volume(np.zeros((2, 2)))
    with pytest.raises(voxinfer.InvalidInputError):
        voxinfer.Volume.from_affine(np.zeros((2, 2, 2)), np.eye(3))
    assert v.spacing == (2.0, 3.0, 4.0)  # failed assignments leave the geometry as it was


def test_simpleitk_round_trip():
    sitk = pytest.importorskip("SimpleITK")
    v = voxinfer.read_volume(str(NIFTI))
    img = voxinfer.to_simpleitk(v)
    ref = sitk.ReadImage(str(NIFTI))
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    back = voxinfer.from_simpleitk(ref)
    np.testing.assert_array_equal(back.array, v.array)
