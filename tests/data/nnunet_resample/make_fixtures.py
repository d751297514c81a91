#!/usr/bin/env python3
"""Writes the fixtures of tests/pipeline/test_nnunet_resample.cpp.

Run with an interpreter that has numpy 1.24.2, scipy 1.10.1 and scikit-image 0.19.3 (the
versions nnU-Net 2.8.1 was checked against): `python3 make_fixtures.py` writes, next to this
script, <case>_in.npy and <case>_out.npy (float32, [C, d0, d1, d2]) and cases.txt, one line
per case:

    name is_seg separate axis order order_z round_to_f16 n0 n1 n2

The reference below restates nnU-Net v2's resample_data_or_seg and batchgenerators'
resize_segmentation on top of skimage.transform.resize and scipy.ndimage.map_coordinates,
which do the interpolation, so the fixtures hold exactly what nnU-Net computes.
"""
import os

import numpy as np
import scipy
import skimage
from scipy.ndimage import map_coordinates
from skimage.transform import resize

HERE = os.path.dirname(os.path.abspath(__file__))


def resize_labels(seg, shape, order):
    """batchgenerators' resize_segmentation: nearest for order 0, else one mask per label
    (ascending), each resized with `order` and set where it reaches 0.5."""
    if order == 0:
        return resize(seg.astype(float), shape, 0, mode="edge", clip=True, anti_aliasing=False).astype(seg.dtype)
    out = np.zeros(shape, dtype=seg.dtype)
    for label in np.unique(seg):
        mask = resize((seg == label).astype(float), shape, order, mode="edge", clip=True, anti_aliasing=False)
        out[mask >= 0.5] = label
    return out


def nnunet_resample(data, new_shape, is_seg, axis, order, separate, order_z, dtype_out):
    """nnU-Net v2.8.1 resample_data_or_seg on a [C, d0, d1, d2] array."""
    shape = np.array(data[0].shape)
    new_shape = np.array(new_shape)
    out = np.zeros((data.shape[0], *new_shape), dtype=dtype_out)
    if not np.any(shape != new_shape):
        return data.astype(dtype_out)
    data = data.astype(float)

    def resize2d(x, s):
        if is_seg:
            return resize_labels(x, s, order)
        return resize(x, s, order, mode="edge", anti_aliasing=False)

    for c in range(data.shape[0]):
        if not separate:
            if is_seg:
                out[c] = resize_labels(data[c], new_shape, order)
            else:
                out[c] = resize(data[c], new_shape, order, mode="edge", anti_aliasing=False)
            continue
        plane_shape = np.delete(new_shape, axis)
        here_shape = new_shape.copy()
        here_shape[axis] = shape[axis]
        here = np.zeros(here_shape)
        for s in range(shape[axis]):
            index = [slice(None)] * 3
            index[axis] = s
            here[tuple(index)] = resize2d(data[c][tuple(index)], plane_shape)
        if shape[axis] == new_shape[axis]:
            out[c] = here
            continue
        # align_corners=False coordinates on every axis; only `axis` changes size here.
        grids = np.mgrid[:new_shape[0], :new_shape[1], :new_shape[2]].astype(float)
        for a in range(3):
            grids[a] = float(here.shape[a]) / new_shape[a] * (grids[a] + 0.5) - 0.5
        if not is_seg or order_z == 0:
            out[c] = map_coordinates(here, grids, order=order_z, mode="nearest")
        else:
            for label in np.unique(here):
                v = map_coordinates((here == label).astype(float), grids, order=order_z, mode="nearest")
                out[c][np.round(v) > 0.5] = label
    return out


def image(rng, shape, channels=1):
    """Smooth noise on piecewise-constant blocks with large jumps (air/soft tissue/bone-like),
    so that cubic overshoot at the edges is clipped."""
    out = np.empty((channels, *shape), np.float32)
    for c in range(channels):
        x = rng.standard_normal(shape) * 30.0
        levels = rng.choice([-1000.0, 40.0, 300.0, 1200.0], size=(3, 3, 3))
        idx = [np.minimum((np.arange(n) * 3) // max(n, 1), 2) for n in shape]
        x += levels[np.ix_(*idx)]
        out[c] = x
    return out


def labels(rng, shape, n_labels):
    """Blobs of labels 0..n_labels-1 (spheres of random centre and radius)."""
    g = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(float)
    seg = np.zeros(shape, np.float32)
    for label in range(1, n_labels):
        centre = [rng.uniform(0, n) for n in shape]
        radius = rng.uniform(0.25, 0.5) * max(shape)
        d = sum(((g[a] - centre[a]) / max(shape[a], 1) * max(shape)) ** 2 for a in range(3))
        seg[d < radius ** 2] = label
    return seg[None]


def main():
    rng = np.random.default_rng(20240601)
    cases = []

    def add(name, data, new_shape, is_seg=False, separate=False, axis=-1, order=3, order_z=0, f16=False):
        data = np.ascontiguousarray(data, np.float32)
        ref = nnunet_resample(data, new_shape, is_seg, axis, order, separate, order_z,
                              np.float16 if f16 else np.float32)
        np.save(os.path.join(HERE, name + "_in.npy"), data)
        np.save(os.path.join(HERE, name + "_out.npy"), ref.astype(np.float32))
        cases.append(f"{name} {int(is_seg)} {int(separate)} {axis} {order} {order_z} {int(f16)} "
                     f"{new_shape[0]} {new_shape[1]} {new_shape[2]}")

    # Whole-volume resize (no separate z), every spline order.
    add("up_o3", image(rng, (5, 6, 7), 2), (9, 11, 8), order=3)
    add("down_o3", image(rng, (12, 13, 11)), (5, 7, 4), order=3)
    add("mixed_o3", image(rng, (7, 9, 5)), (10, 6, 8), order=3)
    add("up_o1", image(rng, (5, 6, 7)), (9, 13, 10), order=1)
    add("down_o1", image(rng, (12, 13, 11)), (7, 5, 6), order=1)
    add("mixed_o0", image(rng, (6, 7, 8)), (11, 4, 13), order=0)
    add("mixed_o2", image(rng, (6, 7, 8)), (9, 5, 11), order=2)
    add("mixed_o4", image(rng, (6, 7, 8)), (9, 5, 11), order=4)
    add("mixed_o5", image(rng, (6, 7, 8)), (9, 5, 11), order=5)
    add("one_axis_o3", image(rng, (6, 7, 8)), (6, 10, 8), order=3)
    add("size1_up_o3", image(rng, (1, 9, 10)), (3, 12, 6), order=3)
    add("size1_keep_o3", image(rng, (1, 9, 10)), (1, 5, 13), order=3)
    add("size1_keep_o1", image(rng, (8, 1, 10)), (5, 1, 13), order=1)
    add("identity", image(rng, (3, 4, 5)), (3, 4, 5), order=3)
    # Separate z: 2D resize per slice along the low-resolution axis, then order_z along it.
    add("sepz0_o3_z0", image(rng, (4, 16, 15)), (9, 11, 20), separate=True, axis=0, order=3, order_z=0)
    add("sepz0_o3_z1", image(rng, (4, 16, 15)), (9, 11, 20), separate=True, axis=0, order=3, order_z=1)
    add("sepz0_down_o3_z1", image(rng, (9, 14, 13)), (4, 8, 9), separate=True, axis=0, order=3, order_z=1)
    add("sepz1_o3_z1", image(rng, (12, 4, 13)), (9, 10, 7), separate=True, axis=1, order=3, order_z=1)
    add("sepz1_o1_z0", image(rng, (12, 4, 13)), (9, 7, 15), separate=True, axis=1, order=1, order_z=0)
    add("sepz2_o1_z0", image(rng, (10, 11, 3)), (14, 7, 8), separate=True, axis=2, order=1, order_z=0)
    add("sepz2_o3_z1", image(rng, (10, 11, 3)), (7, 13, 5), separate=True, axis=2, order=3, order_z=1)
    add("sepz0_keep_o3", image(rng, (5, 12, 12)), (5, 17, 9), separate=True, axis=0, order=3, order_z=0)
    add("sepz0_zonly_o3_z1", image(rng, (5, 8, 9)), (11, 8, 9), separate=True, axis=0, order=3, order_z=1)
    add("sepz0_o3_z3", image(rng, (5, 8, 9)), (11, 6, 7), separate=True, axis=0, order=3, order_z=3)
    # Logits: order 1 (nnU-Net's resampling of probabilities), stored as float16.
    logits = rng.standard_normal((3, 6, 8, 7)).astype(np.float32) * 4.0
    add("logits_o1_f16", logits, (11, 13, 10), order=1, f16=True)
    add("logits_sepz0_f16", logits, (13, 10, 9), separate=True, axis=0, order=1, order_z=0, f16=True)
    # 0.75 * 1 + 0.25 * b is 1 + 2^-11 + 2^-25: above the half-way point between two halves,
    # which float32 would round onto (and float16 then to even, 1.0).
    b = np.float32(1.0 + 2.0 ** -9 + 2.0 ** -23)
    add("f16_double_rounding", np.array([1.0, b], np.float32).reshape(1, 1, 1, 2), (1, 1, 4), order=1, f16=True)
    # Segmentations: one-hot per label with the order, threshold 0.5.
    add("seg_o1", labels(rng, (8, 9, 10), 4), (13, 6, 15), is_seg=True, order=1)
    add("seg_o0", labels(rng, (8, 9, 10), 4), (13, 6, 15), is_seg=True, order=0)
    add("seg_o3", labels(rng, (8, 9, 10), 3), (11, 12, 7), is_seg=True, order=3)
    add("seg_sepz0_o1_z0", labels(rng, (4, 12, 11), 4), (9, 15, 8), is_seg=True, separate=True, axis=0, order=1, order_z=0)
    add("seg_sepz0_o1_z1", labels(rng, (4, 12, 11), 4), (9, 15, 8), is_seg=True, separate=True, axis=0, order=1, order_z=1)
    add("seg_sepz2_o1_z1", labels(rng, (12, 11, 4), 3), (8, 15, 9), is_seg=True, separate=True, axis=2, order=1, order_z=1)

    with open(os.path.join(HERE, "cases.txt"), "w") as f:
        f.write(f"# numpy {np.__version__} scipy {scipy.__version__} scikit-image {skimage.__version__}\n")
        f.write("\n".join(cases) + "\n")


if __name__ == "__main__":
    main()
