"""layers.layer_norm's closed-form JVP against autodiff of the two-pass formula: value, JVP, VJP, grad of a JVP."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.models.layers import layer_norm


def _two_pass(x, eps=1e-6):
    x = x.astype(jnp.float32)
    mu = x.mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(jnp.square(x - mu).mean(-1, keepdims=True) + eps)


@pytest.mark.parametrize("eps", [1e-6, 1e-1])
def test_layer_norm_derivatives_match_autodiff(eps):
    rng = np.random.default_rng(0)
    x, t, w = (jnp.asarray(rng.standard_normal((3, 5, 24)) * s + m, jnp.float32) for s, m in ((3, 1), (1, 0), (1, 0)))
    ln = lambda a: layer_norm(a, eps)
    ref = lambda a: _two_pass(a, eps)
    np.testing.assert_array_equal(ln(x), ref(x))  # the primal is the same formula
    np.testing.assert_allclose(jax.jvp(ln, (x,), (t,))[1], jax.jvp(ref, (x,), (t,))[1], atol=2e-6)
    grad = lambda f: jax.grad(lambda a: jnp.sum(w * f(a)))(x)
    np.testing.assert_allclose(grad(ln), grad(ref), atol=2e-6)
    # sCT differentiates the primal and the tangent of one jvp: both orders must hold
    grad_of_jvp = lambda f: jax.grad(lambda a: jnp.sum(w * jax.jvp(f, (a,), (t,))[1]))(x)
    np.testing.assert_allclose(grad_of_jvp(ln), grad_of_jvp(ref), atol=2e-6)


def test_layer_norm_is_float32_for_bfloat16_inputs():
    x = jnp.ones((2, 8), jnp.bfloat16).at[:, 0].set(3)
    y, ty = jax.jvp(layer_norm, (x,), (x,))
    assert y.dtype == ty.dtype == jnp.float32
