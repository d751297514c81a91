"""voxinfer: a CPU inference engine for 3D medical volumes, on NumPy arrays.

    import voxinfer
    session = voxinfer.Session("model.onnx", threads=2)
    logits = session.run(x)                       # x: float32 [N, C, D, H, W], read in place

    volume = voxinfer.read_volume("ct.nii.gz")    # or a DICOM folder
    volume.array                                  # float32 [C, Z, Y, X] view
    volume.spacing, volume.origin, volume.direction, volume.affine

    pipeline = voxinfer.SegmentationPipeline("nnUNet_results/Dataset.../nnUNetTrainer__nnUNetPlans__3d_fullres")
    result = pipeline.run(volume)                 # result.labels: Volume on the input's grid
    voxinfer.write_volume("labels.nii.gz", result.labels, pixel_type="uint8")

Errors raise voxinfer.Error subclasses (InvalidInputError, InvalidModelError,
UnsupportedError, IoError, InternalError) with the command line's one-line messages.
See docs/python.md.
"""

from ._voxinfer import (  # noqa: F401
    ClassificationPipeline,
    Error,
    InternalError,
    InvalidInputError,
    InvalidModelError,
    IoError,
    SegmentationPipeline,
    SegmentationResult,
    Session,
    TensorInfo,
    UnsupportedError,
    Volume,
    __version__,
    num_threads,
    read_volume,
    set_num_threads,
    write_volume,
)
from ._geometry import from_nibabel, from_simpleitk, to_nibabel, to_simpleitk  # noqa: F401
from .monai import Predictor  # noqa: F401

__all__ = [
    "ClassificationPipeline",
    "Error",
    "InternalError",
    "InvalidInputError",
    "InvalidModelError",
    "IoError",
    "Predictor",
    "SegmentationPipeline",
    "SegmentationResult",
    "Session",
    "TensorInfo",
    "UnsupportedError",
    "Volume",
    "from_nibabel",
    "from_simpleitk",
    "num_threads",
    "read_volume",
    "set_num_threads",
    "to_nibabel",
    "to_simpleitk",
    "write_volume",
]
