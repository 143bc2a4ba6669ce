"""Softmax attention three ways, all on [B, T, N, D] (batch, length, heads, head_dim) arrays.

- `reference_attention`: plain softmax attention; materialises the T x T scores. Differentiable both ways.
- `blockwise_attention`: flash-style online softmax over key blocks, query tiles processed one at a time,
  with a `jax.custom_jvp` implementing the sCM tangent rule (spec/math.md §2)
      t_y = (p ⊙ t_s) V - (p · t_s) y + p t_V,   t_s = (t_Q K^T + Q t_K^T) / sqrt(D)
  in the same blockwise pass (the online-softmax stats are carried for primal and tangent together), so the
  T x T matrix is never materialised forward. Reverse mode transposes that linear rule, recomputing each key
  block from the saved running max (T^2 / block_k floats per head), so the backward stays near-linear in T too.
  Lengths that are not a multiple of the tiles are padded and the padded keys masked out.
- `cudnn_attention`: `jax.nn.dot_product_attention(implementation="cudnn")`, GPU only, bf16/fp16 only. It is a
  `custom_vjp`, so it can be reverse- but not forward-differentiated: tangent passes must use "blockwise".

Scores, softmax statistics and accumulators are float32 whatever the input dtype; outputs have the input dtype.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

ATTENTION_KINDS = ("reference", "blockwise", "cudnn")
_F32 = jnp.float32


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(Q K^T / sqrt(D)) V with float32 scores; [B, T, N, D] in and out."""
    s = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=_F32) / math.sqrt(q.shape[-1])
    p = jax.nn.softmax(s, axis=-1)
    y = jnp.einsum("bnqk,bknd->bqnd", p.astype(v.dtype), v, preferred_element_type=_F32)
    return y.astype(q.dtype)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """cuDNN fused attention (forward and VJP only; `jax.jvp` through it fails: it is a custom_vjp)."""
    if jax.default_backend() != "gpu":
        raise ValueError(
            f"attention='cudnn' needs a GPU, but the JAX backend is {jax.default_backend()!r}; "
            "use attention='reference' or 'blockwise' on this machine."
        )
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kind: str, block_q: int = 128, block_k: int = 128
) -> jax.Array:
    """Dispatch on `kind` (a static string resolved at trace time)."""
    if kind == "reference":
        return reference_attention(q, k, v)
    if kind == "blockwise":
        return blockwise_attention(q, k, v, block_q, block_k)
    if kind == "cudnn":
        return cudnn_attention(q, k, v)
    raise ValueError(f"unknown attention {kind!r}; expected one of {ATTENTION_KINDS}.")


# ---------------------------------------------------------------------------------------------------------
# Blockwise attention.


def _tiles(x: jax.Array, block: int) -> jax.Array:
    """[B, T, N, D] -> [n, B, N, block, D], zero-padding T up to n * block."""
    b, t, h, d = x.shape
    n = -(-t // block)
    x = jnp.pad(x, ((0, 0), (0, n * block - t), (0, 0), (0, 0)))
    return x.reshape(b, n, block, h, d).transpose(1, 0, 3, 2, 4)


def _untile(y: jax.Array, t: int) -> jax.Array:
    """[n, B, N, block, D] -> [B, t, N, D] (drops padded rows)."""
    n, b, h, block, d = y.shape
    return y.transpose(1, 0, 3, 2, 4).reshape(b, n * block, h, d)[:, :t]


def _key_mask(t: int, block: int) -> np.ndarray | None:
    """[n, block] True for real keys, or None when nothing is padded (static)."""
    n = -(-t // block)
    return None if n * block == t else (np.arange(n * block) < t).reshape(n, block)


def _dot_qk(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
    return jnp.einsum("bnqd,bnkd->bnqk", q, k, preferred_element_type=_F32) * scale


def _dot_pv(p: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("bnqk,bnkd->bnqd", p.astype(v.dtype), v, preferred_element_type=_F32)


def _online_softmax(m: jax.Array, s: jax.Array, valid: jax.Array | None):
    """New running max, rescale factor a = exp(m_old - m_new) and block weights p = exp(s - m_new)."""
    if valid is not None:
        s = jnp.where(valid, s, -jnp.inf)  # padded keys get zero weight (the first block always has real keys)
    m_new = jnp.maximum(m, s.max(-1))
    return m_new, jnp.exp(m - m_new), jnp.exp(s - m_new[..., None])


def _init_stats(q: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    shape = q.shape[:-1]
    return jnp.full(shape, -jnp.inf, _F32), jnp.zeros(shape, _F32), jnp.zeros(q.shape, _F32)


def _forward_tile(q, k_blocks, v_blocks, mask, scale):
    """One query tile [B, N, bq, D] against all key blocks: y = sum_j p_j v_j / sum_j p_j (online)."""

    def step(carry, blk):
        m, l, o = carry
        k, v, valid = blk
        m, a, p = _online_softmax(m, _dot_qk(q, k, scale), valid)
        return (m, a * l + p.sum(-1), a[..., None] * o + _dot_pv(p, v)), None

    (_, l, o), _ = jax.lax.scan(step, _init_stats(q), (k_blocks, v_blocks, mask))
    return (o / l[..., None]).astype(q.dtype)


def _jvp_tile(q, tq, k_blocks, v_blocks, tk_blocks, tv_blocks, mask, scale):
    """Primal and tangent of one query tile in one pass over the key blocks (sCM tangent rule, §2)."""

    def step(carry, blk):
        m, l, o, to, tr = carry
        k, v, tk, tv, valid = blk
        m, a, p = _online_softmax(m, _dot_qk(q, k, scale), valid)
        ts = _dot_qk(tq, k, scale) + _dot_qk(q, tk, scale)  # t_s = (t_Q K^T + Q t_K^T) scale
        pts = p * ts
        o = a[..., None] * o + _dot_pv(p, v)
        to = a[..., None] * to + _dot_pv(pts, v) + _dot_pv(p, tv)  # (p ⊙ t_s) V + p t_V
        tr = a * tr + pts.sum(-1)  # p · t_s
        return (m, a * l + p.sum(-1), o, to, tr), None

    m, l, o = _init_stats(q)
    # Rematerialise each block under reverse mode so no [T, T] residual is stored.
    step = jax.checkpoint(step, prevent_cse=False)
    init = (m, l, o, jnp.zeros_like(o), jnp.zeros_like(l))
    (_, l, o, to, tr), _ = jax.lax.scan(step, init, (k_blocks, v_blocks, tk_blocks, tv_blocks, mask))
    y = o / l[..., None]
    ty = to / l[..., None] - (tr / l)[..., None] * y  # t_y = (p ⊙ t_s) V - (p · t_s) y + p t_V
    return y.astype(q.dtype), ty.astype(tq.dtype)


def _blocks(q, k, v, block_q, block_k):
    bq, bk = min(block_q, q.shape[1]), min(block_k, k.shape[1])
    return _tiles(q, bq), _tiles(k, bk), _tiles(v, bk), _key_mask(k.shape[1], bk)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def blockwise_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, block_q: int = 128, block_k: int = 128
) -> jax.Array:
    """Memory-efficient softmax attention, [B, T, N, D] in and out; equals `reference_attention`."""
    q_tiles, k_blocks, v_blocks, mask = _blocks(q, k, v, block_q, block_k)
    scale = 1.0 / math.sqrt(q.shape[-1])
    y = jax.lax.map(lambda qt: _forward_tile(qt, k_blocks, v_blocks, mask, scale), q_tiles)
    return _untile(y, q.shape[1])


@blockwise_attention.defjvp
def _blockwise_attention_jvp(block_q, block_k, primals, tangents):
    q, k, v = primals
    tq, tk, tv = tangents
    q_tiles, k_blocks, v_blocks, mask = _blocks(q, k, v, block_q, block_k)
    tq_tiles, tk_blocks, tv_blocks, _ = _blocks(tq, tk, tv, block_q, block_k)
    scale = 1.0 / math.sqrt(q.shape[-1])

    def tile(args):
        return _jvp_tile(*args, k_blocks, v_blocks, tk_blocks, tv_blocks, mask, scale)

    y, ty = jax.lax.map(tile, (q_tiles, tq_tiles))
    return _untile(y, q.shape[1]), _untile(ty, q.shape[1])
