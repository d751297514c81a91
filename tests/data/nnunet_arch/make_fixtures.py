#!/usr/bin/env python3
"""Writes small nnU-Net-style model folders with random weights, and the networks' outputs as
PyTorch computes them, for the architecture tests (tests/pipeline/test_nnunet_arch.cpp).

Each folder holds plans.json (current schema: architecture.network_class_name + arch_kwargs),
dataset.json, fold_0/checkpoint_final.pth (torch.save of a dict with network_weights, as nnU-Net's
trainer saves it) and input.npy / output.npy (the network in eval mode, deep supervision off).

Needs Debian's python3-torch and the dynamic-network-architectures package (v0.4.4, the version
nnU-Net 2.8.1 uses) on PYTHONPATH or given as the first argument:
    /usr/bin/python3 make_fixtures.py [PATH_TO_DYNAMIC_NETWORK_ARCHITECTURES]
"""
import json
import os
import sys

import numpy as np
import torch

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    # ResEnc with strided and projected skips, anisotropic kernels and strides, 2 channels.
    "resenc_3d": dict(
        cls=ResidualEncoderUNet, cls_name="dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        conv="Conv3d", norm="InstanceNorm3d", nonlin="LeakyReLU", dims=3, in_ch=2, classes=3,
        kw=dict(n_stages=4, features_per_stage=[4, 8, 16, 16], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 2, 2, 2],
                n_conv_per_stage_decoder=[1, 1, 1], conv_bias=True, norm_op_kwargs={"eps": 1e-5, "affine": True},
                dropout_op=None, dropout_op_kwargs=None, nonlin_kwargs={"inplace": True}),
        input_shape=(1, 2, 8, 32, 24)),
    # 2D PlainConvUNet with batch norm (running statistics) and ReLU.
    "plain_2d_batchnorm": dict(
        cls=PlainConvUNet, cls_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
        conv="Conv2d", norm="BatchNorm2d", nonlin="ReLU", dims=2, in_ch=1, classes=4,
        kw=dict(n_stages=3, features_per_stage=[8, 16, 24], kernel_sizes=[[3, 3], [3, 3], [3, 3]],
                strides=[[1, 1], [2, 2], [2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[1, 2],
                conv_bias=False, norm_op_kwargs={"eps": 1e-3, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                nonlin_kwargs={"inplace": True}),
        input_shape=(1, 1, 48, 40)),
    # 3D PlainConvUNet, non-affine instance norm, nonlin before norm, negative slope 0.1, 5x5x5 kernels.
    "plain_3d_nonlin_first": dict(
        cls=PlainConvUNet, cls_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
        conv="Conv3d", norm="InstanceNorm3d", nonlin="LeakyReLU", dims=3, in_ch=1, classes=2,
        kw=dict(n_stages=3, features_per_stage=[4, 8, 8], kernel_sizes=[[5, 5, 5], [3, 3, 3], [3, 3, 3]],
                strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 2, 1], n_conv_per_stage_decoder=[1, 1],
                conv_bias=True, norm_op_kwargs={"eps": 1e-5, "affine": False}, dropout_op=None, dropout_op_kwargs=None,
                nonlin_kwargs={"negative_slope": 0.1, "inplace": True}, nonlin_first=True),
        input_shape=(1, 1, 16, 16, 16)),
    # Region-based (sigmoid) heads: BraTS-style nested regions.
    "plain_3d_regions": dict(
        cls=PlainConvUNet, cls_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
        conv="Conv3d", norm="InstanceNorm3d", nonlin="LeakyReLU", dims=3, in_ch=1, classes=3,
        regions={"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}, regions_class_order=[1, 2, 3],
        kw=dict(n_stages=2, features_per_stage=[4, 8], kernel_sizes=[[3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [2, 2, 2]],
                n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1], conv_bias=True,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                nonlin_kwargs={"inplace": True}),
        input_shape=(1, 1, 8, 8, 8)),
}


def main():
    torch.manual_seed(1234)
    for name, c in CASES.items():
        conv_op = getattr(torch.nn, c["conv"])
        norm_op = getattr(torch.nn, c["norm"])
        nonlin = getattr(torch.nn, c["nonlin"])
        net = c["cls"](input_channels=c["in_ch"], conv_op=conv_op, norm_op=norm_op, nonlin=nonlin, num_classes=c["classes"],
                       deep_supervision=False, **c["kw"])
        # Random weights everywhere (the default init leaves norms at 1/0), running statistics too.
        with torch.no_grad():
            for n, p in net.named_parameters():
                scale = 1.5 / float(p[0].numel()) ** 0.5 if p.dim() > 1 else 0.2
                p.copy_(torch.randn_like(p) * scale + (1.0 if n.endswith("norm.weight") else 0.0))
            for m in net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                    m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
        net.eval()
        x = torch.randn(*c["input_shape"])
        with torch.no_grad():
            y = net(x)
        folder = os.path.join(HERE, name, "nnUNetTrainer__nnUNetPlans__" + ("2d" if c["dims"] == 2 else "3d_fullres"))
        os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
        kw = dict(c["kw"])
        kw["conv_op"] = "torch.nn.modules.conv." + c["conv"]
        kw["norm_op"] = "torch.nn." + c["norm"]
        kw["nonlin"] = "torch.nn." + c["nonlin"]
        config = {
            "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(c["input_shape"][2:]), "spacing": [1.0] * c["dims"],
            "normalization_schemes": ["ZScoreNormalization"] * c["in_ch"], "use_mask_for_norm": [False] * c["in_ch"],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {"network_class_name": c["cls_name"], "arch_kwargs": kw,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        }
        plans = {"dataset_name": name, "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
                 "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO",
                 "configurations": {"2d" if c["dims"] == 2 else "3d_fullres": config},
                 "foreground_intensity_properties_per_channel": {}}
        labels = {"background": 0}
        for k in range(1, c["classes"]):
            labels["class%d" % k] = k
        dataset = {"channel_names": {str(i): "ch%d" % i for i in range(c["in_ch"])}, "labels": labels,
                   "numTraining": 1, "file_ending": ".nii.gz"}
        if "regions" in c:
            dataset["labels"] = c["regions"]
            dataset["regions_class_order"] = c["regions_class_order"]
        with open(os.path.join(folder, "plans.json"), "w") as f:
            json.dump(plans, f, indent=1)
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump(dataset, f, indent=1)
        torch.save({"network_weights": net.state_dict(), "inference_allowed_mirroring_axes": (0, 1, 2)[:c["dims"]],
                    "trainer_name": "nnUNetTrainer", "init_args": {"configuration": "x"}},
                   os.path.join(folder, "fold_0", "checkpoint_final.pth"))
        np.save(os.path.join(HERE, name, "input.npy"), x.numpy().astype(np.float32))
        np.save(os.path.join(HERE, name, "output.npy"), y.numpy().astype(np.float32))
        print(name, tuple(y.shape), "max |y| %.3f" % float(y.abs().max()))


if __name__ == "__main__":
    main()
