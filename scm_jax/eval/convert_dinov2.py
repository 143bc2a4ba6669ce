"""Converts DINOv2 weights (the hub's `dinov2_vitl14_pretrain.pth` or timm's state dict) to the `.npz` that
`load_dinov2` reads.

    python -m scm_jax.eval.convert_dinov2 --torch_weights=dinov2_vitl14_pretrain.pth --out=dinov2_vitl14.npz

Width, depth, MLP width and patch size are read from the tensors' shapes; heads default to width / 64 (every
DINOv2 model's head width). The position embedding is resampled to the 224 px patch grid as the hub model does
at run time (bicubic with its 0.1 offset in the scale factor, no antialiasing). See scm_jax/eval/dinov2.py.
"""
import argparse
import re
from collections.abc import Mapping

import numpy as np
from flax import nnx

from scm_jax.eval import dinov2
from scm_jax.models import weights

_IGNORED = ("mask_token",)  # the hub model's masked-image-modelling token: unused for features
_CUBIC_A = -0.75  # torch's bicubic (non-antialiased) coefficient
_INTERPOLATE_OFFSET = 0.1  # the hub model's `interpolate_offset`


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.75 (torch's `upsample_bicubic2d`)."""
    x, a = np.abs(x), _CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _bicubic_matrix(n_in: int, n_out: int, scale_factor: float) -> np.ndarray:
    """[n_out, n_in] weights of torch's bicubic interpolation (align_corners=False, edge pixels replicated)."""
    src = (np.arange(n_out) + 0.5) / scale_factor - 0.5
    base = np.floor(src).astype(int)
    matrix = np.zeros((n_out, n_in))
    for tap in range(-1, 3):
        np.add.at(matrix, (np.arange(n_out), np.clip(base + tap, 0, n_in - 1)), _cubic(src - (base + tap)))
    return matrix


def resample_pos_embed(pos_embed: np.ndarray, grid: int) -> np.ndarray:
    """[1, 1 + M*M, D] -> [1, 1 + grid*grid, D] as the hub's `interpolate_pos_encoding` (identity when M == grid)."""
    m = int(round(np.sqrt(pos_embed.shape[1] - 1)))
    if m == grid:
        return pos_embed
    w = _bicubic_matrix(m, grid, (grid + _INTERPOLATE_OFFSET) / m)
    patches = np.einsum("ai,ijd,bj->abd", w, pos_embed[0, 1:].reshape(m, m, -1).astype(np.float64), w)
    return np.concatenate([pos_embed[:, :1], patches.reshape(1, grid * grid, -1).astype(pos_embed.dtype)], axis=1)


def _nnx_entry(name: str, array: np.ndarray, grid: int) -> tuple[str, np.ndarray]:
    stem, _, leaf = name.rpartition(".")
    if name == "pos_embed":
        return name, resample_pos_embed(array, grid)
    if leaf == "weight" and array.ndim == 4:  # patch embedding conv OIHW -> HWIO
        return f"{stem}.kernel", array.transpose(2, 3, 1, 0)
    if leaf == "weight" and array.ndim == 2:  # Linear [out, in] -> [in, out]
        return f"{stem}.kernel", array.T
    if leaf == "weight":  # LayerNorm
        return f"{stem}.scale", array
    return name, array


def infer_config(state_dict: Mapping[str, np.ndarray], num_heads: int | None = None) -> dict:
    """DINOv2's constructor kwargs from the state dict's shapes."""
    try:
        dim = int(state_dict["cls_token"].shape[-1])
        return dict(embed_dim=dim, depth=len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")}),
                    num_heads=num_heads or dim // 64, mlp_dim=int(state_dict["blocks.0.mlp.fc1.weight"].shape[0]),
                    patch_size=int(state_dict["patch_embed.proj.weight"].shape[-1]))
    except KeyError as e:
        raise ValueError(f"not a DINOv2 state dict (no entry {e}): is this dinov2_vitl14_pretrain.pth?") from None


def convert_state_dict(state_dict: Mapping[str, np.ndarray], num_heads: int | None = None
                       ) -> tuple[dict[str, np.ndarray], dict]:
    """hub / timm-named DINOv2 arrays -> (NNX-named float32 arrays of `dinov2.DINOv2`, its kwargs)."""
    foreign = [k for k in state_dict if k not in _IGNORED and not re.match(
        r"(cls_token|pos_embed|patch_embed\.proj\.|blocks\.\d+\.|norm\.)", k)]
    if foreign:
        raise ValueError(f"unexpected entry {foreign[0]!r} in the state dict: is this a DINOv2 ViT without "
                         "register tokens (dinov2_vitl14_pretrain.pth)?")
    config = infer_config(state_dict, num_heads)
    grid = dinov2.INPUT_SIZE // config["patch_size"]
    out = dict(_nnx_entry(k, np.asarray(v, dtype=np.float32), grid) for k, v in state_dict.items()
               if k not in _IGNORED)
    # Fails naming the entry when one is missing or misshaped.
    weights.module_from_arrays(out, lambda: dinov2.DINOv2(**config, rngs=nnx.Rngs(0)), source="the state dict")
    return out, config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_weights", required=True, help="dinov2_vitl14_pretrain.pth (or .safetensors)")
    parser.add_argument("--out", required=True, help="output .npz, e.g. dinov2_vitl14.npz")
    parser.add_argument("--num_heads", type=int, default=None, help="attention heads (default: width / 64)")
    args = parser.parse_args(argv)
    arrays, config = convert_state_dict(weights.read_state_dict(args.torch_weights), args.num_heads)
    weights.save_arrays(args.out, arrays, config)
    print(f"wrote {len(arrays)} arrays ({config}) to {args.out}")


if __name__ == "__main__":
    main()
