"""The Stable Diffusion VAE (Rombach et al. 2022; diffusers' `AutoencoderKL`) in Flax NNX: encoder and decoder.

The latent space of EDM2's and sCM's ImageNet-512 models is that of `stabilityai/sd-vae-ft-mse` (or `-ft-ema`):
block_out_channels (128, 256, 512, 512), 2 resnets per encoder block (3 per decoder block), attention in the middle
block, GroupNorm(32, eps 1e-6), SiLU, 4 latent channels, 8x downsampling. Layout is NHWC; module names are
diffusers', so the converted state dict maps one to one (`scm_jax.models.convert_vae`).

    images [N, H, W, 3] in [-1, 1] --encode--> mean, logvar [N, H/8, W/8, 4] --decode(mean)--> [N, H, W, 3]

The latents are raw: the training set's per-channel scaling is applied outside the VAE.
Weights are read from a local file only; convert diffusers' `diffusion_pytorch_model.safetensors` (or `.bin`):

    python -m scm_jax.models.convert_vae --torch_weights=diffusion_pytorch_model.safetensors --out=sd_vae.npz
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.models import weights

CONVERT_COMMAND = ("python -m scm_jax.models.convert_vae --torch_weights=diffusion_pytorch_model.safetensors "
                   "--out=sd_vae.npz")
_EPS = 1e-6
_HIGHEST = jax.lax.Precision.HIGHEST  # latents feed FID: no bf16/TF32 passes


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """diffusers' AutoencoderKL config; the defaults are sd-vae-ft-mse's."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    in_channels: int = 3
    latent_channels: int = 4

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def _conv(c_in: int, c_out: int, kernel: int, rngs: nnx.Rngs, stride: int = 1, padding="SAME") -> nnx.Conv:
    return nnx.Conv(c_in, c_out, (kernel, kernel), stride, padding=padding, precision=_HIGHEST, rngs=rngs)


def _norm(c: int, cfg: VAEConfig, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(c, num_groups=cfg.norm_num_groups, epsilon=_EPS, use_fast_variance=False, rngs=rngs)


class ResnetBlock2D(nnx.Module):
    """GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3, plus the (1x1-projected when widths differ) input."""

    def __init__(self, c_in: int, c_out: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.norm1, self.conv1 = _norm(c_in, cfg, rngs), _conv(c_in, c_out, 3, rngs)
        self.norm2, self.conv2 = _norm(c_out, cfg, rngs), _conv(c_out, c_out, 3, rngs)
        self.conv_shortcut = _conv(c_in, c_out, 1, rngs) if c_in != c_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Attention(nnx.Module):
    """Single-head self-attention over the H*W positions after a GroupNorm, added to the input."""

    def __init__(self, c: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.group_norm = _norm(c, cfg, rngs)
        self.to_q, self.to_k, self.to_v, self.to_out = (
            nnx.Linear(c, c, precision=_HIGHEST, rngs=rngs) for _ in range(4))

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        t = self.group_norm(x).reshape(n, h * w, c)
        logits = jnp.einsum("nqc,nkc->nqk", self.to_q(t), self.to_k(t), precision=_HIGHEST) / jnp.sqrt(c)
        out = jnp.einsum("nqk,nkc->nqc", jax.nn.softmax(logits, axis=-1), self.to_v(t), precision=_HIGHEST)
        return x + self.to_out(out).reshape(n, h, w, c)


class MidBlock(nnx.Module):
    """resnet, attention, resnet at the lowest resolution (diffusers' UNetMidBlock2D without time embedding)."""

    def __init__(self, c: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResnetBlock2D(c, c, cfg, rngs=rngs) for _ in range(2)])
        self.attentions = nnx.List([Attention(c, cfg, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Downsample(nnx.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv (diffusers' Downsample2D in the VAE)."""

    def __init__(self, c: int, *, rngs: nnx.Rngs):
        self.conv = _conv(c, c, 3, rngs, stride=2, padding=((0, 1), (0, 1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, c: int, *, rngs: nnx.Rngs):
        self.conv = _conv(c, c, 3, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class Block(nnx.Module):
    """`num_layers` resnets then an optional resampler, kept in the list `sampler_attr` (diffusers' names):
    DownEncoderBlock2D (`downsamplers`) / UpDecoderBlock2D (`upsamplers`)."""

    def __init__(self, c_in: int, c_out: int, num_layers: int, sampler_attr: str, sampler, cfg: VAEConfig, *,
                 rngs: nnx.Rngs):
        self.resnets = nnx.List([ResnetBlock2D(c_in if i == 0 else c_out, c_out, cfg, rngs=rngs)
                                 for i in range(num_layers)])
        self.sampler_attr = sampler_attr
        setattr(self, sampler_attr, nnx.List([] if sampler is None else [sampler(c_out, rngs=rngs)]))

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in [*self.resnets, *getattr(self, self.sampler_attr)]:
            x = layer(x)
        return x


def _output_head(coder, x: jax.Array) -> jax.Array:
    return coder.conv_out(jax.nn.silu(coder.conv_norm_out(x)))


class Encoder(nnx.Module):
    """[N, H, W, in] -> [N, H/f, W/f, 2 * latent] (mean and logvar, before quant_conv); f = 2^(blocks - 1)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        ch, last = cfg.block_out_channels, len(cfg.block_out_channels) - 1
        self.conv_in = _conv(cfg.in_channels, ch[0], 3, rngs)
        self.down_blocks = nnx.List([
            Block(ch[max(i - 1, 0)], c, cfg.layers_per_block, "downsamplers", Downsample if i < last else None,
                  cfg, rngs=rngs) for i, c in enumerate(ch)])
        self.mid_block = MidBlock(ch[-1], cfg, rngs=rngs)
        self.conv_norm_out = _norm(ch[-1], cfg, rngs)
        self.conv_out = _conv(ch[-1], 2 * cfg.latent_channels, 3, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return _output_head(self, self.mid_block(x))


class Decoder(nnx.Module):
    """[N, h, w, latent] -> [N, h*f, w*f, in]."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        ch, last = cfg.block_out_channels[::-1], len(cfg.block_out_channels) - 1
        self.conv_in = _conv(cfg.latent_channels, ch[0], 3, rngs)
        self.mid_block = MidBlock(ch[0], cfg, rngs=rngs)
        self.up_blocks = nnx.List([
            Block(ch[max(i - 1, 0)], c, cfg.layers_per_block + 1, "upsamplers", Upsample if i < last else None,
                  cfg, rngs=rngs) for i, c in enumerate(ch)])
        self.conv_norm_out = _norm(ch[-1], cfg, rngs)
        self.conv_out = _conv(ch[-1], cfg.in_channels, 3, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return _output_head(self, x)


class AutoencoderKL(nnx.Module):
    """`encode`: images in [-1, 1] -> (mean, logvar); `decode`: latents -> images (about [-1, 1], not clipped)."""

    def __init__(self, cfg: VAEConfig = VAEConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = Encoder(cfg, rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)
        self.quant_conv = _conv(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1, rngs)
        self.post_quant_conv = _conv(cfg.latent_channels, cfg.latent_channels, 1, rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[N, H, W, 3] -> mean, logvar [N, H/8, W/8, 4]; logvar clipped to [-30, 20] as diffusers does."""
        mean, logvar = jnp.split(self.quant_conv(self.encoder(x)), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """[N, h, w, 4] -> [N, 8h, 8w, 3]."""
        return self.decoder(self.post_quant_conv(z))


def config_dict(cfg: VAEConfig) -> dict:
    """The JSON-able kwargs `load_vae` rebuilds the network from."""
    return {**dataclasses.asdict(cfg), "block_out_channels": list(cfg.block_out_channels)}


def load_vae(path: str) -> AutoencoderKL:
    """The VAE with weights (and architecture) from the `.npz` that `convert_vae` wrote."""
    def create(**kw) -> AutoencoderKL:
        kw["block_out_channels"] = tuple(kw.get("block_out_channels", VAEConfig.block_out_channels))
        return AutoencoderKL(VAEConfig(**kw), rngs=nnx.Rngs(0))

    hint = f"Convert diffusers' AutoencoderKL weights once with:  {CONVERT_COMMAND}"
    return weights.load_module(path, create, missing_hint=hint)
