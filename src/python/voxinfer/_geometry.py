"""Conversions between voxinfer.Volume and nibabel / SimpleITK images, geometry included.

Axis orders: a Volume's array is [C, Z, Y, X] (SimpleITK's GetArrayFromImage order with the
channels first); nibabel's is [X, Y, Z(, C)]. Geometry: a Volume keeps ITK's LPS spacing,
origin and direction (what SimpleITK reports); nibabel's affine is RAS (Volume.affine).
"""

import numpy as np

from ._voxinfer import InvalidInputError, Volume


def from_nibabel(image):
    """A Volume from a nibabel image (NIfTI and anything with .affine and get_fdata).

    The voxels are read as float32 with the file's scaling applied; a 4D image becomes one
    channel per volume. The geometry is image.affine (RAS), converted to LPS.
    """
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.ndim == 3:
        array = data.transpose(2, 1, 0)
    elif data.ndim == 4:
        array = data.transpose(3, 2, 1, 0)
    else:
        raise InvalidInputError(f"nibabel image of shape {data.shape}: expected 3 or 4 dimensions")
    return Volume.from_affine(array, np.asarray(image.affine, dtype=np.float64))


def to_nibabel(volume, dtype=None):
    """A nibabel Nifti1Image of a Volume: data [X, Y, Z] ([X, Y, Z, C] for several channels),
    affine = volume.affine, qform and sform set (code 1, scanner), as ITK writes NIfTI.

    dtype: the image's data type (default float32); the data is a view of the volume when
    no conversion is needed.
    """
    import nibabel as nib

    array = volume.array.transpose(3, 2, 1, 0)  # [X, Y, Z, C]
    if array.shape[3] == 1:
        array = array[..., 0]
    if dtype is not None:
        array = array.astype(dtype)
    affine = volume.affine
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def from_simpleitk(image):
    """A Volume from a SimpleITK image (3D scalar or vector pixels, or 4D as channels)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        if dim != 3:
            raise InvalidInputError(f"SimpleITK vector image of dimension {dim}: expected 3")
        array = np.moveaxis(array, -1, 0)  # [Z, Y, X, C] -> [C, Z, Y, X]
    if dim == 3:
        spacing, origin = image.GetSpacing(), image.GetOrigin()
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    elif dim == 4:  # [T, Z, Y, X]: the fourth axis becomes the channels
        spacing, origin = image.GetSpacing()[:3], image.GetOrigin()[:3]
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(4, 4)[:3, :3]
    else:
        raise InvalidInputError(f"SimpleITK image of dimension {dim}: expected 3 or 4")
    return Volume(array, spacing=spacing, origin=origin, direction=direction)


def to_simpleitk(volume):
    """A SimpleITK image of a Volume: scalar float32 for one channel, vector pixels for several."""
    import SimpleITK as sitk

    if volume.channels == 1:
        image = sitk.GetImageFromArray(volume.array[0])
    else:
        image = sitk.GetImageFromArray(np.moveaxis(volume.array, 0, -1), isVector=True)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(float(v) for v in volume.direction.reshape(-1)))
    return image
