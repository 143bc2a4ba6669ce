"""The Flax DINOv2 against timm's DINOv2 ViT with random weights, on CPU (no download), preprocessed as EDM2's
DINOv2Detector does (torch bicubic antialiased resize to 224, [0, 1], ImageNet mean / std).

Needs the `[torch-check]` extra (torch, timm); skipped without it. Tolerance: max abs feature error <= 1e-4
(features are O(1) after the final LayerNorm).
"""
import numpy as np
import pytest

from scm_jax.eval import convert_dinov2, dinov2
from tests.torch_check import import_reference
from tests.weight_files import assert_bad_files_refused

TOL = 1e-4
TINY = dict(embed_dim=32, depth=2, num_heads=2)


def _timm_dinov2(embed_dim, depth, num_heads):
    """timm's ViT as `vit_large_patch14_dinov2` builds it (patch 14, layer scale, CLS token), 224 px grid,
    random weights; layer scales and LayerNorm affines random too (their init is 1e-5 / 1 / 0)."""
    vit = import_reference("timm.models.vision_transformer")
    import torch

    torch.manual_seed(0)
    model = vit.VisionTransformer(img_size=224, patch_size=14, embed_dim=embed_dim, depth=depth,
                                  num_heads=num_heads, init_values=1e-5, num_classes=0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma") or (p.ndim == 1 and "norm" in name and name.endswith("weight")):
                torch.nn.init.uniform_(p, 0.5, 1.5)
            elif p.ndim == 1 and "norm" in name:
                torch.nn.init.uniform_(p, -0.2, 0.2)
            elif name in ("cls_token", "pos_embed"):
                torch.nn.init.normal_(p, std=0.5)
    return model


def _edm2_features(model, images):
    """EDM2's DINOv2Detector on uint8 NHWC images, with `model` in place of the hub's ViT-L."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True) / 255
    x = (x - torch.tensor(dinov2.IMAGENET_MEAN).reshape(1, -1, 1, 1)) / torch.tensor(
        dinov2.IMAGENET_STD).reshape(1, -1, 1, 1)
    with torch.no_grad():
        return model.forward_features(x)[:, 0].numpy()


def _max_error(model, tmp_path, size):
    import torch

    pth, npz = str(tmp_path / "dinov2.pth"), str(tmp_path / "dinov2.npz")
    torch.save(model.state_dict(), pth)
    convert_dinov2.main([f"--torch_weights={pth}", f"--out={npz}", f"--num_heads={model.blocks[0].attn.num_heads}"])
    images = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3), dtype=np.uint8)
    want = _edm2_features(model, images)
    got = np.asarray(dinov2.load_dinov2(npz)(images.astype(np.float32) / 127.5 - 1))
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


def test_resize_matches_torch_bicubic_antialias_up_and_down():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    for size in (32, 300):
        x = np.random.default_rng(size).uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
        want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(224, 224), mode="bicubic",
                             antialias=True).permute(0, 2, 3, 1).numpy()
        got = (np.asarray(dinov2.preprocess(x)) * dinov2.IMAGENET_STD + dinov2.IMAGENET_MEAN) * 2 - 1
        np.testing.assert_allclose(got, want, atol=5e-5)  # float32 kernel weights: 2e-5 measured at 300 -> 224


def test_pos_embed_resampling_matches_the_hub_model():
    """The hub's `interpolate_pos_encoding` for a 224 px input on ViT-L's 37x37 grid (518 px)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    pos = np.random.default_rng(0).normal(size=(1, 1 + 37 * 37, 8)).astype(np.float32)
    grid = torch.from_numpy(pos[:, 1:]).reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    s = (16 + 0.1) / 37
    want = F.interpolate(grid, mode="bicubic", antialias=False, scale_factor=(s, s)).permute(0, 2, 3, 1).reshape(
        1, 256, 8).numpy()
    got = convert_dinov2.resample_pos_embed(pos, 16)
    np.testing.assert_array_equal(got[:, :1], pos[:, :1])
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-5)
    assert convert_dinov2.resample_pos_embed(got, 16) is got


def test_flax_dinov2_matches_timm(tmp_path):
    error = _max_error(_timm_dinov2(**TINY), tmp_path, size=32)
    print("max abs feature error:", error)
    assert error <= TOL


def test_bad_weight_files_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unexpected entry 'register_tokens'"):
        convert_dinov2.convert_state_dict({"register_tokens": np.zeros((1, 4, 8))})
    with pytest.raises(ValueError, match="not a DINOv2 state dict"):
        convert_dinov2.convert_state_dict({"norm.weight": np.zeros(8)})
    assert_bad_files_refused(dinov2.load_dinov2, tmp_path, "convert_dinov2")


@pytest.mark.slow
def test_vit_large_matches_timm(tmp_path):
    """timm's `vit_large_patch14_dinov2` architecture (ViT-L/14, 1024-d) at 224 px, from 256 px images."""
    timm = import_reference("timm")
    model = timm.create_model("vit_large_patch14_dinov2", pretrained=False, img_size=224, num_classes=0).eval()
    error = _max_error(model, tmp_path, size=256)
    print("max abs feature error:", error)
    assert error <= TOL
