"""The FID variant of Inception-v3 (Heusel et al.'s TF graph, as ported by `pytorch_fid.inception`), in Flax NNX.

Differences from torchvision's Inception-v3 (spec/math.md §7): the A, C and first E blocks average-pool without
counting the zero padding, the last E block max-pools, and the classifier has 1008 outputs. Images are resized
bilinearly (half-pixel centres, no antialiasing: torch's `F.interpolate(..., align_corners=False)`) to 299x299.
Layout is NHWC; the names of the modules are torchvision's, so the converted state dict maps one to one.

Weights are read from a local file only. On a machine with internet, fetch the public FID weights
(`pytorch_fid.inception.FID_WEIGHTS_URL`):

    curl -LO https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

then convert them once (needs torch, not torchvision):

    python -m scm_jax.eval.convert_inception \
        --torch_weights=pt_inception-2015-12-05-6726825d.pth --out=inception_fid.npz

and pass `inception_fid.npz` to `load_inception` (or `get_extractor("inception", weights_path=...)`).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.models import weights

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
CONVERT_COMMAND = ("python -m scm_jax.eval.convert_inception "
                   "--torch_weights=pt_inception-2015-12-05-6726825d.pth --out=inception_fid.npz")
_BN_EPSILON = 1e-3
_HIGHEST = jax.lax.Precision.HIGHEST  # FID features must not go through bf16/TF32 passes


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


class BasicConv2d(nnx.Module):
    """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size, *, stride: int = 1, padding=0, rngs: nnx.Rngs):
        (ph, pw) = _pair(padding)
        self.conv = nnx.Conv(c_in, c_out, _pair(kernel_size), stride, padding=((ph, ph), (pw, pw)),
                             use_bias=False, precision=_HIGHEST, rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, use_running_average=True, epsilon=_BN_EPSILON, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average over the valid (unpadded) pixels only: TF's pooling, `count_include_pad=False`."""
    return nnx.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, (3, 3), (2, 2), padding="VALID")


class FIDInceptionA(nnx.Module):
    def __init__(self, c_in: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(c_in, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, c_in: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), b3, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nnx.Module):
    def __init__(self, c_in: int, channels_7x7: int, *, rngs: nnx.Rngs):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(c_in, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            bd = conv(bd)
        return jnp.concatenate([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_3x3(x))], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, c_in: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nnx.Module):
    """`max_pool=False`: pytorch_fid's FIDInceptionE_1 (Mixed_7b); `True`: FIDInceptionE_2 (Mixed_7c)."""

    def __init__(self, c_in: int, *, max_pool: bool, rngs: nnx.Rngs):
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(c_in, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        if self.max_pool:  # the TF graph's (likely accidental) max pooling in the last block
            pooled = nnx.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        return jnp.concatenate([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], axis=-1)


def resize_bilinear(x: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """NHWC bilinear resize like torch's `F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing)."""
    n, _, _, c = x.shape
    return jax.image.resize(x, (n, size, size, c), method="bilinear", antialias=False)


class FIDInceptionV3(nnx.Module):
    """Images in [-1, 1], NHWC with 3 channels, any size -> (pool3 features [N, 2048], logits [N, 1008])."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32, rngs=rngs)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64, rngs=rngs)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128, rngs=rngs)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160, rngs=rngs)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160, rngs=rngs)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False, rngs=rngs)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True, rngs=rngs)
        self.fc = nnx.Linear(FEATURE_DIM, NUM_CLASSES, precision=_HIGHEST, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = resize_bilinear(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool_3x3_s2(x)))
        x = _max_pool_3x3_s2(x)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        features = jnp.mean(x, axis=(1, 2))  # pool3: adaptive average pooling to 1x1
        return features, self.fc(features)


def load_inception(path: str) -> FIDInceptionV3:
    """The FID Inception with weights from the `.npz` that `convert_inception` wrote."""
    hint = f"Convert the public FID weights once with:  {CONVERT_COMMAND}  (see scm_jax/eval/inception.py)."
    return weights.load_module(path, lambda: FIDInceptionV3(rngs=nnx.Rngs(0)), missing_hint=hint)
