"""EDM2 U-Net (Karras et al. 2024) with the sCM architecture rules (spec/math.md §2). Knows nothing of TrigFlow.

F, logvar = UNet(cfg)(x, t, labels, guidance): NHWC. The embedding emb = mp_silu(mp_sum(W_t pos(c_noise(t)),
W_y onehot(y))) [+ g_gain W_g pos(guidance)] conditions every block; an encoder of `num_blocks` blocks per level
(2x average-pool between levels), a decoder of `num_blocks + 1` blocks per level fed the encoder's outputs by
mp_cat (2x nearest upsampling between levels), self-attention at the resolutions in `attn_resolutions`, and a
3x3 output conv scaled by a zero-initialised gain (F = 0 at init). logvar = w_phi(t), the DiT's head.

sCM's changes to EDM2: the time embedding is positional on c_noise(t) = t * time_scale (EDM2: random Fourier
features of ln(sigma) / 4), and `modulation="double_norm"` (default) conditions each block with sCM's adaptive
double normalization y = pnorm(y) * pnorm(s(emb)) + pnorm(b(emb)); `modulation="edm2"` is EDM2's
y * (1 + g W emb) with a zero-initialised gain g.

Magnitude-preserving layers as EDM2: every conv / linear weight is normalised per output channel in the forward
pass (MPConv), and mp_silu, mp_sum, mp_cat keep activations at unit variance. EDM2 also rewrites the stored
weights to unit norm after every optimizer step (forced weight normalization); this port does not (the train step
stays model-agnostic): Adam at EDM2's 1e-2 on the forward-normalised weights trains the embedded job
(bench/results/ablations.md), with the stored weights' norms growing, i.e. a slowly decaying effective step.

Sizes (channels; as EDM2 ImageNet-512: channel_mult (1, 2, 3, 4), 3 blocks per level, attention at 16 and 8) and
exact parameter counts at 64x64x4 latents, 1000 classes, logvar_channels 128 (tests/models/test_unet.py). With
EDM2's modulation they equal EDM2's published totals (280 / 498 / 778 / 1119 / 1523 M); sCM's double
normalization has separate scale and shift projections of the embedding (+5%):
  S     192    edm2   280,230,118    double_norm   293,943,490
  M     256    edm2   497,825,318    double_norm   522,204,674
  L     320    edm2   777,515,878    double_norm   815,608,642
  XL    384    edm2 1,119,301,798    double_norm 1,174,155,394
  XXL   448    edm2 1,523,183,078    double_norm 1,597,844,930

Logical axis names: conv and linear kernels ([kh, kw,] in, out) are ("embed", "mlp") on their channel axes
(the embedding's: ("cond", "mlp") / ("classes", "cond")), so the DiT's rule sets shard them (fsdp splits the
input channels). Attention runs through `scm_jax.models.attention` on [B, HW, heads, head_dim]: "reference" and
"blockwise" carry `jax.jvp` (sCM's tangent pass).
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.models.attention import ATTENTION_KINDS, attention
from scm_jax.models.embeddings import LogvarHead, positional_embedding
from scm_jax.models.layers import REMAT_POLICIES, check_inputs, checkpointed, dropout, names, pixel_norm, require

_F32 = jnp.float32
_DTYPES = ("float32", "bfloat16")
MODULATIONS = ("double_norm", "edm2")

SIZES: dict[str, dict] = {"S": dict(channels=192), "M": dict(channels=256), "L": dict(channels=320),
                          "XL": dict(channels=384), "XXL": dict(channels=448)}


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    image_size: int
    in_channels: int
    channels: int = 192                       # EDM2 model_channels; level i has channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_blocks: int = 3                       # encoder blocks per level (the decoder has one more)
    attn_resolutions: tuple[int, ...] = (16, 8)
    channels_per_head: int = 64
    num_classes: int = 0                      # 0 = unconditional; else row num_classes is the null class (CFG)
    guidance_embed: bool = False              # sCD students get the guidance scale as an input
    dropout: float = 0.0
    attention: str = "reference"              # "reference" | "blockwise" | "cudnn" (see models.attention)
    block_q: int = 128
    block_k: int = 128
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"                       # "none" | "full" | "dots" (jax.checkpoint per block)
    time_scale: float = 10.0                  # c_noise(t) = t * time_scale (configs/base.py)
    logvar_channels: int = 128
    modulation: str = "double_norm"           # sCM's adaptive double normalization | EDM2's "edm2"
    label_balance: float = 0.5                # EDM2's mp_sum / mp_cat / residual weights
    concat_balance: float = 0.5
    res_balance: float = 0.3
    attn_balance: float = 0.3

    def __post_init__(self):
        for field in ("image_size", "in_channels", "channels", "num_blocks", "channels_per_head", "logvar_channels"):
            require(getattr(self, field) > 0, f"UNetConfig.{field} must be positive, got {getattr(self, field)}.")
        require(len(self.channel_mult) > 0 and min(self.channel_mult) > 0,
                f"channel_mult={self.channel_mult} needs at least one positive multiplier.")
        require(self.image_size % 2 ** (len(self.channel_mult) - 1) == 0,
                f"image_size {self.image_size} must halve {len(self.channel_mult) - 1} times "
                f"(channel_mult={self.channel_mult}); use fewer levels or another size.")
        for c in (self.channels * m for m, r in zip(self.channel_mult, self.resolutions) if r in self.attn_resolutions):
            require(c % self.channels_per_head == 0,
                    f"channels_per_head {self.channels_per_head} must divide the {c} channels of an attention level.")
        require(self.logvar_channels % 2 == 0, f"logvar_channels {self.logvar_channels} must be even.")
        require(self.num_classes >= 0, f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}.")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}.")
        require(self.attention in ATTENTION_KINDS,
                f"unknown attention {self.attention!r}; expected one of {ATTENTION_KINDS}.")
        require(self.remat in REMAT_POLICIES, f"unknown remat {self.remat!r}; expected one of {tuple(REMAT_POLICIES)}.")
        require(self.modulation in MODULATIONS, f"unknown modulation {self.modulation!r}; expected {MODULATIONS}.")
        for field in ("dtype", "param_dtype"):
            require(getattr(self, field) in _DTYPES,
                    f"UNetConfig.{field}={getattr(self, field)!r} is not supported; expected one of {_DTYPES}.")

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(self.image_size >> level for level in range(len(self.channel_mult)))


def unet_config(size: str, **overrides) -> UNetConfig:
    """A UNetConfig of a named EDM2 size; the data fields (image_size, in_channels, ...) go in overrides."""
    require(size in SIZES, f"unknown U-Net size {size!r}; expected one of {tuple(SIZES)}.")
    return UNetConfig(**{**SIZES[size], **overrides})


def mp_silu(x: jax.Array) -> jax.Array:
    """SiLU scaled to unit variance for unit-normal input (EDM2 Eq. 81)."""
    return jax.nn.silu(x) / 0.596


def mp_sum(a: jax.Array, b: jax.Array, t: float) -> jax.Array:
    """Magnitude-preserving interpolation (1 - t) a + t b over sqrt((1 - t)^2 + t^2) (EDM2 Eq. 88)."""
    return (a + t * (b - a)) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: jax.Array, b: jax.Array, t: float) -> jax.Array:
    """Magnitude-preserving channel concatenation weighted (1 - t) : t (EDM2 Eq. 103)."""
    na, nb = a.shape[-1], b.shape[-1]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    return jnp.concatenate([a * (c / math.sqrt(na) * (1 - t)), b * (c / math.sqrt(nb) * t)], axis=-1)


def mp_embedding(c: jax.Array, dim: int) -> jax.Array:
    """Positional embedding of a per-sample scalar at unit variance: sqrt(2) [cos, sin] (float32)."""
    return math.sqrt(2) * positional_embedding(c, dim)


class MPConv(nnx.Module):
    """Conv (kernel k x k, NHWC) or linear (kernel 0) whose weight is normalised per output channel in the forward
    pass, w * gain / ||w|| (EDM2's weight normalization + magnitude-preserving scaling, Eq. 47)."""

    def __init__(self, cin: int, cout: int, kernel: int, *, axes: tuple, dtype, param_dtype, rngs: nnx.Rngs):
        shape = (kernel, kernel, cin, cout) if kernel else (cin, cout)
        spatial = (None, None) if kernel else ()
        self.dtype = dtype
        self.w = nnx.Param(jax.random.normal(rngs.params(), shape, param_dtype), **names(*spatial, *axes))

    def __call__(self, x: jax.Array, gain: jax.Array | float = 1.0) -> jax.Array:
        w = self.w[...].astype(_F32)
        fan_in = math.prod(w.shape[:-1])
        norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(w.ndim - 1)), keepdims=True))
        w = (w / (1e-4 + norm / math.sqrt(fan_in)) * (gain / math.sqrt(fan_in))).astype(self.dtype)
        if w.ndim == 2:
            return x.astype(self.dtype) @ w
        return jax.lax.conv_general_dilated(x.astype(self.dtype), w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def resample(x: jax.Array, mode: str) -> jax.Array:
    """EDM2's resample with the [1, 1] filter: 2x2 average pooling ("down") or nearest 2x upsampling ("up")."""
    if mode == "down":
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    if mode == "up":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x


class UNetBlock(nnx.Module):
    """EDM2 block: [resample] -> (enc: skip conv + pixel norm) -> conv -> modulation by emb -> conv, mp_sum'd
    with its input at res_balance; then optional self-attention mp_sum'd at attn_balance; activations clipped."""

    def __init__(self, cin: int, cout: int, cemb: int, cfg: "UNetConfig", *, flavor: str, resample_mode: str = "keep",
                 attention: bool = False, rngs: nnx.Rngs):
        kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        self.cfg, self.flavor, self.resample_mode = cfg, flavor, resample_mode
        self.num_heads = cout // cfg.channels_per_head if attention else 0
        self.conv_res0 = MPConv(cout if flavor == "enc" else cin, cout, 3, axes=("embed", "mlp"), **kw)
        split = 2 if cfg.modulation == "double_norm" else 1
        self.emb_linear = MPConv(cemb, split * cout, 0, axes=("cond", "mlp"), **kw)
        self.emb_gain = nnx.Param(jnp.zeros((), kw["param_dtype"])) if cfg.modulation == "edm2" else None
        self.conv_res1 = MPConv(cout, cout, 3, axes=("embed", "mlp"), **kw)
        self.conv_skip = MPConv(cin, cout, 1, axes=("embed", "mlp"), **kw) if cin != cout else None
        if self.num_heads:
            self.attn_qkv = MPConv(cout, 3 * cout, 1, axes=("embed", "mlp"), **kw)
            self.attn_proj = MPConv(cout, cout, 1, axes=("embed", "mlp"), **kw)

    def __call__(self, x: jax.Array, emb: jax.Array, key: jax.Array | None, kind: str) -> jax.Array:
        cfg = self.cfg
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = pixel_norm(x.astype(_F32), 1e-4).astype(x.dtype)
        y = self.modulate(self.conv_res0(mp_silu(x)), emb)
        y = self.conv_res1(dropout(mp_silu(y), cfg.dropout, key))
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, cfg.res_balance)
        if self.num_heads:
            x = mp_sum(x, self.attend(x, kind), cfg.attn_balance)
        return jnp.clip(x, -256, 256)

    def modulate(self, y: jax.Array, emb: jax.Array) -> jax.Array:
        """sCM's adaptive double normalization pnorm(y) pnorm(s) + pnorm(b), or EDM2's y (1 + g W emb)."""
        if self.emb_gain is None:
            s, b = jnp.split(self.emb_linear(emb).astype(_F32), 2, axis=-1)
            y = pixel_norm(y.astype(_F32), 1e-4) * pixel_norm(s)[:, None, None] + pixel_norm(b)[:, None, None]
            return y.astype(self.cfg.dtype)
        c = self.emb_linear(emb, gain=self.emb_gain[...]) + 1
        return y * c[:, None, None].astype(y.dtype)

    def attend(self, x: jax.Array, kind: str) -> jax.Array:
        """Self-attention over the H W positions; q, k, v pixel-normed per head (EDM2)."""
        b, h, w, c = x.shape
        qkv = self.attn_qkv(x).reshape(b, h * w, self.num_heads, c // self.num_heads, 3)
        q, k, v = (pixel_norm(a.astype(_F32), 1e-4).astype(x.dtype) for a in jnp.moveaxis(qkv, -1, 0))
        y = attention(q, k, v, kind, self.cfg.block_q, self.cfg.block_k)
        return self.attn_proj(y.reshape(b, h, w, c))


class UNet(nnx.Module):
    def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        kw = dict(dtype=_F32, param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        cblock = [cfg.channels * m for m in cfg.channel_mult]
        self.cnoise, cemb = cblock[0], max(cblock)
        self.emb_noise = MPConv(self.cnoise, cemb, 0, axes=("freq", "cond"), **kw)
        self.emb_label = MPConv(cfg.num_classes + 1, cemb, 0, axes=("classes", "cond"), **kw) \
            if cfg.num_classes else None
        if cfg.guidance_embed:  # zero gain: a no-op when added to a pretrained teacher's embedding
            self.emb_guidance = MPConv(self.cnoise, cemb, 0, axes=("freq", "cond"), **kw)
            self.guidance_gain = nnx.Param(jnp.zeros((), kw["param_dtype"]))
        self.enc, enc_channels = self._encoder(cblock, cemb, rngs)
        self.dec, self.takes_skip = self._decoder(cblock, cemb, list(enc_channels), rngs)
        self.out_conv = MPConv(cblock[0], cfg.in_channels, 3, axes=("embed", "mlp"),
                               dtype=jnp.dtype(cfg.dtype), param_dtype=kw["param_dtype"], rngs=rngs)
        self.out_gain = nnx.Param(jnp.zeros((), kw["param_dtype"]))
        self.logvar = LogvarHead(cfg.logvar_channels, param_dtype=kw["param_dtype"], rngs=rngs)

    def _encoder(self, cblock: list[int], cemb: int, rngs: nnx.Rngs) -> tuple[nnx.List, tuple[int, ...]]:
        """[input conv, (down block,) num_blocks blocks per level] and each one's output channels; the input gets
        a constant-ones channel (EDM2)."""
        cfg = self.cfg
        enc = [MPConv(cfg.in_channels + 1, cblock[0], 3, axes=("embed", "mlp"), dtype=jnp.dtype(cfg.dtype),
                      param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)]
        out = [cblock[0]]
        for level, (channels, res) in enumerate(zip(cblock, cfg.resolutions)):
            if level:
                enc.append(UNetBlock(out[-1], out[-1], cemb, cfg, flavor="enc", resample_mode="down", rngs=rngs))
                out.append(out[-1])
            for _ in range(cfg.num_blocks):
                enc.append(UNetBlock(out[-1], channels, cemb, cfg, flavor="enc",
                                     attention=res in cfg.attn_resolutions, rngs=rngs))
                out.append(channels)
        return nnx.List(enc), tuple(out)

    def _decoder(self, cblock: list[int], cemb: int, skips: list[int], rngs: nnx.Rngs
                 ) -> tuple[nnx.List, tuple[bool, ...]]:
        """Decoder blocks and, per block, whether it takes an encoder output (mp_cat) first."""
        cfg, dec, takes = self.cfg, [], []
        cout = skips[-1]
        for level in reversed(range(len(cblock))):
            res = cfg.resolutions[level]
            if level == len(cblock) - 1:
                dec += [UNetBlock(cout, cout, cemb, cfg, flavor="dec", attention=True, rngs=rngs),
                        UNetBlock(cout, cout, cemb, cfg, flavor="dec", rngs=rngs)]
                takes += [False, False]
            else:
                dec.append(UNetBlock(cout, cout, cemb, cfg, flavor="dec", resample_mode="up", rngs=rngs))
                takes.append(False)
            for _ in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), cblock[level]
                dec.append(UNetBlock(cin, cout, cemb, cfg, flavor="dec", attention=res in cfg.attn_resolutions,
                                     rngs=rngs))
                takes.append(True)
        return nnx.List(dec), tuple(takes)

    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None, guidance: jax.Array | None = None,
                 *, dropout_key: jax.Array | None = None, attention: str | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        """x [B, H, W, C], t [B] -> (F [B, H, W, C] float32, logvar = w_phi(t) [B] float32)."""
        cfg = self.cfg
        kind = cfg.attention if attention is None else attention
        self._check(x, t, labels, guidance, kind)
        c_noise = t.astype(_F32) * cfg.time_scale  # c_noise(t) = t * time_scale
        emb = self._embedding(c_noise, labels, guidance)
        h = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1).astype(cfg.dtype)
        outputs = [self.enc[0](h)]
        for i, block in enumerate(self.enc[1:], start=1):
            outputs.append(self._block(block, outputs[-1], emb, dropout_key, i, kind))
        h = outputs[-1]
        for i, (block, takes) in enumerate(zip(self.dec, self.takes_skip), start=len(self.enc)):
            if takes:
                h = mp_cat(h, outputs.pop(), cfg.concat_balance)
            h = self._block(block, h, emb, dropout_key, i, kind)
        return self.out_conv(h, gain=self.out_gain[...]).astype(_F32), self.logvar(c_noise)

    def _embedding(self, c_noise: jax.Array, labels: jax.Array | None, guidance: jax.Array | None) -> jax.Array:
        emb = self.emb_noise(mp_embedding(c_noise, self.cnoise))
        if self.emb_label is not None:
            k = self.cfg.num_classes + 1
            y = jnp.full(c_noise.shape, self.cfg.num_classes, jnp.int32) if labels is None else labels
            emb = mp_sum(emb, self.emb_label(jax.nn.one_hot(y, k, dtype=_F32) * math.sqrt(k)), self.cfg.label_balance)
        if self.cfg.guidance_embed:
            emb = emb + self.guidance_gain[...] * self.emb_guidance(mp_embedding(guidance.astype(_F32), self.cnoise))
        return mp_silu(emb)

    def _block(self, block: UNetBlock, h: jax.Array, emb: jax.Array, dropout_key: jax.Array | None, i: int,
               kind: str) -> jax.Array:
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
        return checkpointed(block, self.cfg.remat, kind)(h, emb, key)

    def _check(self, x: jax.Array, t: jax.Array, labels, guidance, kind: str) -> None:
        check_inputs(self.cfg, x, t, labels, guidance, kind)
