"""DiT (Peebles & Xie 2023) with the sCM architecture rules (spec/math.md §2). Knows nothing of TrigFlow.

F, logvar = DiT(cfg)(x, t, labels, guidance): patchify -> + fixed 2-D sin-cos positions -> `depth` blocks
conditioned on c = emb(c_noise(t)) [+ class] [+ guidance] through adaptive double normalization
(y = norm(x) * pnorm(s(c)) + pnorm(b(c))) and zero-initialised gates -> final double-norm + zero-initialised
projection -> unpatchify. logvar = w_phi(t), a small MLP on the time embedding only.

Sizes (depth, hidden, heads) and exact parameter counts at the reference setting 32x32x4 latents, patch 2,
1000 classes, no guidance input, logvar_channels 128 (checked by tests/models/test_dit.py from abstract init):
  S     (12,  384,  6)     32,875,537
  B     (12,  768, 12)    130,320,145
  L     (24, 1024, 16)    457,840,913
  XL    (28, 1152, 16)    674,832,913
  1.5B  (36, 1536, 24)  1,538,735,377

Logical axis names of the parameters (`out_sharding` metadata; `logical_axes(state)` lists them):
  "embed"    residual-stream channels (hidden_size)
  "cond"     conditioning-vector channels (time/class/guidance embeddings, adaptive-norm input)
  "mlp"      hidden channels of an MLP (block MLPs, time/guidance/logvar MLPs)
  "heads", "head_dim"   attention projections
  "patch"    flattened patch channels p*p*C (patch embedding input, final projection output)
  "classes"  class-embedding rows (num_classes + 1, the last one is the null class)
  "freq"     sin-cos features entering the scalar MLPs
  None       the sub-layer index of adaptive-norm weights and the logvar output (never sharded)
Activations are constrained at block boundaries to ("batch", "length", "embed") (q/k/v: "heads", "head_dim";
MLP hidden: "mlp"); without `nnx.logical_axis_rules` and a mesh these constraints are no-ops.
Parameters are created unsharded (`eager_sharding=False`), so a model builds with or without a mesh; get
PartitionSpecs with `nnx.get_partition_spec(abstract_state)` under `nnx.logical_axis_rules(rules)`. The rules
must name every logical axis (map the unsharded ones to None): flax keeps an unmapped name as a mesh axis name.

Attention: `cfg.attention` picks the kernel and `attention=` overrides it per call. "cudnn" is a custom_vjp, so
`jax.jvp` cannot pass through it: run the sCM tangent pass with attention="blockwise". Blockwise tiles of 128
suit CPU; on GPU, larger tiles (block_q 1024-4096, block_k 256-512) come within 1.2-1.5x of the reference JVP's
time at a fraction of its memory (bench/results/attention_jvp.md).
"""
import dataclasses

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.models.attention import ATTENTION_KINDS
from scm_jax.models.embeddings import LogvarHead, ScalarEmbedder, sincos_2d
from scm_jax.models.layers import (REMAT_POLICIES, Mlp, Modulation, SelfAttention, check_inputs, checkpointed,
                                   constrain, modulate, names, require)

_F32 = jnp.float32
_DTYPES = ("float32", "bfloat16")

SIZES: dict[str, dict] = {
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
    "1.5B": dict(depth=36, hidden_size=1536, num_heads=24),
}


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    image_size: int
    in_channels: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0 = unconditional; else row num_classes is the null class (CFG)
    guidance_embed: bool = False  # sCD students get the guidance scale as an input
    dropout: float = 0.0
    attention: str = "reference"  # "reference" | "blockwise" | "cudnn" (GPU, bf16; not forward-differentiable)
    block_q: int = 128
    block_k: int = 128
    dtype: str = "float32"  # compute dtype; the time path is always float32
    param_dtype: str = "float32"
    remat: str = "none"  # "none" | "full" | "dots" (jax.checkpoint per block)
    time_scale: float = 10.0  # c_noise(t) = t * time_scale (sCM: c_noise(t) = t; 1 is nearly rank 2: configs/base.py)
    logvar_channels: int = 128  # width of the w_phi(t) head

    def __post_init__(self):
        for field in ("image_size", "in_channels", "patch_size", "hidden_size", "depth", "num_heads",
                      "block_q", "block_k", "logvar_channels"):
            require(getattr(self, field) > 0, f"DiTConfig.{field} must be positive, got {getattr(self, field)}.")
        require(self.image_size % self.patch_size == 0,
                f"patch_size {self.patch_size} does not divide image_size {self.image_size}; pick a divisor.")
        require(self.hidden_size % self.num_heads == 0,
                f"num_heads {self.num_heads} does not divide hidden_size {self.hidden_size}; pick a divisor.")
        require(self.hidden_size % 4 == 0,
                f"hidden_size {self.hidden_size} must be a multiple of 4 (2-D sin-cos position embedding).")
        require(self.logvar_channels % 2 == 0, f"logvar_channels {self.logvar_channels} must be even.")
        require(self.num_classes >= 0, f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}.")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}.")
        require(self.mlp_ratio > 0, f"mlp_ratio must be positive, got {self.mlp_ratio}.")
        require(self.attention in ATTENTION_KINDS,
                f"unknown attention {self.attention!r}; expected one of {ATTENTION_KINDS}.")
        require(self.remat in REMAT_POLICIES,
                f"unknown remat {self.remat!r}; expected 'none', 'full' or 'dots'.")
        for field in ("dtype", "param_dtype"):
            require(getattr(self, field) in _DTYPES,
                    f"DiTConfig.{field}={getattr(self, field)!r} is not supported; expected one of {_DTYPES}.")
        require(self.attention != "cudnn" or self.dtype == "bfloat16",
                "attention='cudnn' needs dtype='bfloat16' (cuDNN flash attention has no float32 kernel); "
                "set dtype='bfloat16' or use attention='reference'/'blockwise'.")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.in_channels


def dit_config(size: str, **overrides) -> DiTConfig:
    """A DiTConfig of a named size; the data fields (image_size, in_channels, patch_size, ...) go in overrides."""
    require(size in SIZES, f"unknown DiT size {size!r}; expected one of {tuple(SIZES)}.")
    return DiTConfig(**{**SIZES[size], **overrides})


class DiTBlock(nnx.Module):
    """x + g1 * Attn(dnorm(x)) then x + g2 * Mlp(dnorm(x)); gates start at zero so the block starts as identity."""

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        kw = dict(rate=cfg.dropout, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        self.cfg = cfg
        self.modulation = Modulation(cfg.hidden_size, cfg.hidden_size, 2, gates=True,
                                     param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads, **kw)
        self.mlp = Mlp(cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio), **kw)

    def __call__(self, x: jax.Array, c: jax.Array, key: jax.Array | None, kind: str) -> jax.Array:
        ss, g = self.modulation(c)
        g = g.astype(x.dtype)
        k_attn, k_mlp = (None, None) if key is None else jax.random.split(key)
        x = x + g[:, None, 0] * self.attn(modulate(x, ss[:, 0], ss[:, 1]), k_attn, kind, self.cfg.block_q,
                                          self.cfg.block_k)
        x = x + g[:, None, 1] * self.mlp(modulate(x, ss[:, 2], ss[:, 3]), k_mlp)
        return constrain(x, "batch", "length", "embed")


class FinalLayer(nnx.Module):
    """Double-norm modulation then a zero-initialised projection to patch channels (F = 0 at init)."""

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        pdt = jnp.dtype(cfg.param_dtype)
        self.modulation = Modulation(cfg.hidden_size, cfg.hidden_size, 1, gates=False, param_dtype=pdt, rngs=rngs)
        self.linear = nnx.Linear(
            cfg.hidden_size, cfg.patch_dim, kernel_init=nnx.initializers.zeros, dtype=jnp.dtype(cfg.dtype),
            param_dtype=pdt, rngs=rngs, kernel_metadata=names("embed", "patch"), bias_metadata=names("patch"),
        )

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        ss, _ = self.modulation(c)
        return self.linear(modulate(x, ss[:, 0], ss[:, 1]))


class DiT(nnx.Module):
    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.patch_embed = nnx.Linear(
            cfg.patch_dim, cfg.hidden_size, kernel_init=nnx.initializers.xavier_uniform(), dtype=dt, param_dtype=pdt,
            rngs=rngs, kernel_metadata=names("patch", "embed"), bias_metadata=names("embed"),
        )
        self.t_embed = ScalarEmbedder(cfg.hidden_size, param_dtype=pdt, rngs=rngs)
        self.y_embed = nnx.Embed(
            cfg.num_classes + 1, cfg.hidden_size, embedding_init=nnx.initializers.normal(1.0), dtype=_F32,
            param_dtype=pdt, rngs=rngs, embedding_metadata=names("classes", "cond"),
        ) if cfg.num_classes else None
        self.g_embed = ScalarEmbedder(cfg.hidden_size, zero_out=True, param_dtype=pdt, rngs=rngs) \
            if cfg.guidance_embed else None
        self.blocks = nnx.List([DiTBlock(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.final = FinalLayer(cfg, rngs=rngs)
        self.logvar = LogvarHead(cfg.logvar_channels, param_dtype=pdt, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        labels: jax.Array | None = None,
        guidance: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
        attention: str | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, H, W, C], t [B] -> (F [B, H, W, C] float32, logvar = w_phi(t) [B] float32)."""
        cfg = self.cfg
        kind = cfg.attention if attention is None else attention
        self._check(x, t, labels, guidance, kind)
        c_noise = t.astype(_F32) * cfg.time_scale  # c_noise(t) = t * time_scale
        c = self._conditioning(c_noise, labels, guidance)
        p = cfg.patch_size
        h = einops.rearrange(x.astype(cfg.dtype), "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p)
        h = self.patch_embed(h) + sincos_2d(cfg.grid, cfg.hidden_size).astype(cfg.dtype)
        h = constrain(h, "batch", "length", "embed")
        for i, block in enumerate(self.blocks):
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            h = checkpointed(block, cfg.remat, kind)(h, c, key)
        F = einops.rearrange(self.final(h, c), "b (h w) (p q c) -> b (h p) (w q) c", h=cfg.grid, p=p, q=p)
        return F.astype(_F32), self.logvar(c_noise)

    def _conditioning(self, c_noise: jax.Array, labels: jax.Array | None, guidance: jax.Array | None) -> jax.Array:
        """c = emb(c_noise(t)) [+ class embedding] [+ guidance-scale embedding], float32 [B, hidden]."""
        c = self.t_embed(c_noise)
        if self.y_embed is not None:
            null = jnp.full(c_noise.shape, self.cfg.num_classes, jnp.int32)
            c = c + self.y_embed(null if labels is None else labels)
        if self.g_embed is not None:
            c = c + self.g_embed(guidance)
        return c

    def _check(self, x: jax.Array, t: jax.Array, labels, guidance, kind: str) -> None:
        check_inputs(self.cfg, x, t, labels, guidance, kind)
        require(kind != "cudnn" or self.cfg.dtype == "bfloat16",
                "attention='cudnn' needs dtype='bfloat16'; use attention='blockwise' or 'reference' here.")


def logical_axes(state: nnx.State) -> nnx.State:
    """The logical axis names of every parameter, as `PartitionSpec`s of names (map them with
    `flax.linen.logical_to_mesh(axes, rules)` or use `nnx.get_partition_spec` under `nnx.logical_axis_rules`)."""
    return jax.tree.map(
        lambda v: jax.sharding.PartitionSpec(*v.get_metadata().get("out_sharding", ())),
        state, is_leaf=lambda v: isinstance(v, nnx.Variable),
    )
