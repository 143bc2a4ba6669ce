"""DINOv2 ViT-L/14 (Oquab et al. 2023, facebookresearch/dinov2), the feature network of FD_DINOv2, in Flax NNX.

Features as EDM2's `calculate_metrics.py` (after Stein et al. 2023's dgm-eval) computes them: images resized to
224x224 by antialiased bicubic (torch's `F.interpolate(mode='bicubic', antialias=True)`, which
`jax.image.resize(method='bicubic')` equals), scaled to [0, 1] and normalised by the ImageNet mean / std; the
feature is the CLS token after the final LayerNorm (1024-d, what the hub model returns). The position embedding
is stored resampled to the 16x16 patch grid of 224 px, as the hub model resamples its 37x37 one at run time
(`convert_dinov2.resample_pos_embed`). Layout is NHWC; module names are the hub's / timm's.

Weights are read from a local file only; convert the public `dinov2_vitl14_pretrain.pth` (or timm's
`vit_large_patch14_dinov2` weights) once:

    python -m scm_jax.eval.convert_dinov2 --torch_weights=dinov2_vitl14_pretrain.pth --out=dinov2_vitl14.npz
"""
import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.models import weights

INPUT_SIZE = 224
FEATURE_DIM = 1024  # ViT-L
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONVERT_COMMAND = ("python -m scm_jax.eval.convert_dinov2 --torch_weights=dinov2_vitl14_pretrain.pth "
                   "--out=dinov2_vitl14.npz")
_EPS = 1e-6
_HIGHEST = jax.lax.Precision.HIGHEST


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, precision=_HIGHEST, rngs=rngs)


class LayerScale(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.gamma = nnx.Param(jnp.ones((dim,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...]


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection: [N, T, D] -> [N, T, D]."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.qkv, self.proj = _linear(dim, 3 * dim, rngs), _linear(dim, dim, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).transpose(2, 0, 3, 1, 4)
        logits = jnp.einsum("nhqc,nhkc->nhqk", q, k, precision=_HIGHEST) / jnp.sqrt(d // self.num_heads)
        out = jnp.einsum("nhqk,nhkc->nqhc", jax.nn.softmax(logits, axis=-1), v, precision=_HIGHEST)
        return self.proj(out.reshape(n, t, d))


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1, self.fc2 = _linear(dim, hidden, rngs), _linear(hidden, dim, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """Pre-norm transformer block with layer scale: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, epsilon=_EPS, rngs=rngs)
        self.attn = Attention(dim, num_heads, rngs=rngs)
        self.ls1 = LayerScale(dim, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=_EPS, rngs=rngs)
        self.mlp = Mlp(dim, mlp_dim, rngs=rngs)
        self.ls2 = LayerScale(dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nnx.Module):
    def __init__(self, dim: int, patch_size: int, *, rngs: nnx.Rngs):
        p = (patch_size, patch_size)
        self.proj = nnx.Conv(3, dim, p, p, padding="VALID", precision=_HIGHEST, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.proj(x)
        return y.reshape(y.shape[0], -1, y.shape[-1])


class DINOv2(nnx.Module):
    """Images in [-1, 1], NHWC with 3 channels, any size -> CLS features [N, embed_dim].

    The defaults are ViT-L/14's; smaller widths / depths serve the tests.
    """

    def __init__(self, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16, mlp_dim: int = 4096,
                 patch_size: int = 14, *, rngs: nnx.Rngs):
        grid = INPUT_SIZE // patch_size
        self.patch_embed = PatchEmbed(embed_dim, patch_size, rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, embed_dim)))
        self.pos_embed = nnx.Param(jnp.zeros((1, 1 + grid * grid, embed_dim)))
        self.blocks = nnx.List([Block(embed_dim, num_heads, mlp_dim, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(embed_dim, epsilon=_EPS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = preprocess(x)
        tokens = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token[...], (tokens.shape[0], 1, tokens.shape[-1]))
        h = jnp.concatenate([cls, tokens], axis=1) + self.pos_embed[...]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)[:, 0]


def preprocess(x: jax.Array) -> jax.Array:
    """[-1, 1] NHWC, any size -> 224x224 (antialiased bicubic), ImageNet-normalised: EDM2's DINOv2Detector."""
    n, _, _, c = x.shape
    x = jax.image.resize(x, (n, INPUT_SIZE, INPUT_SIZE, c), method="bicubic", antialias=True)
    return ((x + 1) / 2 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def load_dinov2(path: str) -> DINOv2:
    """DINOv2 with weights (and width / depth) from the `.npz` that `convert_dinov2` wrote."""
    hint = f"Convert the public DINOv2 weights once with:  {CONVERT_COMMAND}"
    return weights.load_module(path, lambda **kw: DINOv2(**kw, rngs=nnx.Rngs(0)), missing_hint=hint)
