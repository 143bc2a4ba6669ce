"""Blockwise attention (custom JVP) against plain softmax attention: forward, JVP, VJP, memory."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.models.attention import attention, blockwise_attention, reference_attention


def _qkv(t: int, dtype=jnp.float32, heads: int = 2, dim: int = 16):
    """q, k, v and three tangents / weights (numpy RNG: jax.random costs a compile per shape on CPU)."""
    rng = np.random.default_rng(t)
    return [jnp.asarray(rng.standard_normal((2, t, heads, dim)), dtype) for _ in range(6)]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _fwd_jvp(primals, tangents, block_q, block_k):
    blockwise = functools.partial(blockwise_attention, block_q=block_q, block_k=block_k)
    return jax.jvp(blockwise, primals, tangents), jax.jvp(reference_attention, primals, tangents)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize(
    "t, block_q, block_k, dtype, tol",
    [
        (37, 16, 8, jnp.float32, 1e-5),  # neither tile divides the length: padded queries and masked keys
        (5, 128, 128, jnp.float32, 1e-5),  # tiles larger than the sequence
        (37, 16, 8, jnp.bfloat16, 2e-2),
    ],
)
def test_blockwise_forward_and_jvp_match_reference(t, block_q, block_k, dtype, tol):
    q, k, v, tq, tk, tv = _qkv(t, dtype)
    (y, ty), (y_ref, ty_ref) = _fwd_jvp((q, k, v), (tq, tk, tv), block_q, block_k)
    assert y.dtype == ty.dtype == dtype and y.shape == q.shape
    assert _rel(y, y_ref) < tol
    assert _rel(ty, ty_ref) < tol


def test_blockwise_grad_matches_reference():
    q, k, v, w, *_ = _qkv(37)

    @jax.jit
    def grads(q, k, v):
        blockwise = functools.partial(blockwise_attention, block_q=16, block_k=8)
        loss = lambda fn: lambda *qkv: jnp.sum(fn(*qkv) * w)  # noqa: E731
        argnums = (0, 1, 2)
        return jax.grad(loss(blockwise), argnums)(q, k, v), jax.grad(loss(reference_attention), argnums)(q, k, v)

    for g, g_ref in zip(*grads(q, k, v)):
        assert _rel(g, g_ref) < 1e-5


def test_blockwise_jvp_memory_is_linear():
    """The compiled JVP never holds a [T, T] score matrix (reference does: several of them)."""
    t, heads = 1024, 2
    x = jax.ShapeDtypeStruct((1, t, heads, 64), jnp.float32)

    def temp_bytes(fn):
        jvp = lambda q, k, v: jax.jvp(fn, (q, k, v), (q, k, v))  # noqa: E731
        return jax.jit(jvp).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    one_score_matrix = heads * t * t * 4
    assert temp_bytes(blockwise_attention) < one_score_matrix / 2
    assert temp_bytes(reference_attention) > one_score_matrix


def test_cudnn_without_gpu_raises_clear_error():
    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present")
    q, k, v, *_ = _qkv(8, jnp.bfloat16)
    with pytest.raises(ValueError, match="needs a GPU"):
        attention(q, k, v, "cudnn")


def test_unknown_attention_kind_raises():
    q, k, v, *_ = _qkv(8)
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        attention(q, k, v, "flash")
