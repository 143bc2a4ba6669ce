"""Imports the `[torch-check]` extra's reference packages (pytorch_fid, diffusers, timm) beside the CPU torch wheel.

PyPI's torchvision is built against CUDA torch: beside the CPU wheel its C ops fail to load, and its import then
stops registering fake kernels of two ops that nothing here uses (torchvision::nms, ::qnms). Declaring those
schemas first lets the pure-Python model code import. Tests are skipped when a package is not installed.
"""
import functools
import importlib
import importlib.util
import sys

import pytest

_KEEP = []  # the torch.library object that holds the declared schemas


@functools.cache
def _torchvision():
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]
    ops = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        ops.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(ops)
    return importlib.import_module("torchvision")


def import_reference(module: str):
    """`module` (e.g. "pytorch_fid.inception", "diffusers", "timm"), or skip the test when its package is absent."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module.split('.')[0]} is not installed")
    _torchvision()  # before the package: timm and diffusers import torchvision
    return importlib.import_module(module)
