import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.formulations import trigflow
from scm_jax.objectives import scm
from scm_jax.objectives.diffusion import DiffusionOptions, diffusion_loss
from tests.fakes import tiny_mlp
from tests.oracles import F_cons, F_vel, assert_gradient_identity

S = 0.8  # data std of the Gaussian oracle (different from sigma_d on purpose)


def gaussian_batch(n=4096, d=8, seed=0):
    return {"x0": S * jax.random.normal(jax.random.key(seed), (n, d))}


def teacher(apply):
    return lambda x, t, labels=None: apply(x, t, labels)[0]


def test_scd_tangent_is_zero_for_exact_consistency_function():
    opts = scm.SCMOptions(distill=True, warmup_steps=0, tangent_norm="none", adaptive_weight=False)
    loss, m = scm.scm_loss(F_cons(S), F_cons(S), gaussian_batch(), jax.random.key(1), jnp.array(0), opts,
                           teacher_fn=teacher(F_vel(S)))
    sct_opts = scm.SCMOptions(warmup_steps=0, tangent_norm="none", adaptive_weight=False)
    _, m_sct = scm.scm_loss(F_cons(S), F_cons(S), gaussian_batch(), jax.random.key(1), jnp.array(0), sct_opts)
    assert float(m["g_rms"]) < 2e-5 * float(m_sct["g_rms"]) + 1e-6
    assert float(loss) < 1e-9


def test_jvp_matches_float64_finite_difference():
    apply, params = tiny_mlp()
    x_in = jax.random.normal(jax.random.key(0), (5, 4))
    t = jnp.array([0.05, 0.3, 0.8, 1.2, 1.5])
    dxt_dt = jax.random.normal(jax.random.key(1), (5, 4))
    opts = scm.SCMOptions()
    F_fn = lambda x, tt: apply(params)(x, tt)[0]
    _, jvp_out = scm.tangent_F(F_fn, x_in, t, dxt_dt, opts)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        F64 = lambda x, tt: apply(p64)(x, tt)[0]
        x64, t64, d64 = (a.astype(jnp.float64) for a in (x_in, t, dxt_dt))
        cs = jnp.cos(t64) * jnp.sin(t64)
        tx, tt = cs[:, None] * d64, cs * trigflow.SIGMA_D
        h = 1e-6
        fd = (F64(x64 + h * tx, t64 + h * tt) - F64(x64 - h * tx, t64 - h * tt)) / (2 * h)
        fd = np.asarray(fd)
    np.testing.assert_allclose(np.asarray(jvp_out), fd, rtol=1e-4, atol=1e-6)


def test_finite_difference_jvp_option_agrees_with_exact():
    apply, params = tiny_mlp()
    F_fn = lambda x, tt: apply(params)(x, tt)[0]
    x_in, t = jax.random.normal(jax.random.key(0), (5, 4)), jnp.linspace(0.1, 1.5, 5)
    dxt_dt = jax.random.normal(jax.random.key(1), (5, 4))
    _, exact = scm.tangent_F(F_fn, x_in, t, dxt_dt, scm.SCMOptions())
    _, fd = scm.tangent_F(F_fn, x_in, t, dxt_dt, scm.SCMOptions(jvp="finite_difference", fd_delta=1e-2))
    np.testing.assert_allclose(fd, exact, atol=2e-3)


def test_gradient_identity_discrete_consistency_loss():
    """grad_theta ||f_theta(x_t,t) - f_sg(x_t - dt dxt_dt, t - dt)||^2 / dt
    -> sigma_d tan t grad ||F - sg(F) - g||^2."""
    with jax.enable_x64(True):
        apply, params = tiny_mlp(dim=3)
        assert_gradient_identity(apply, jax.tree.map(lambda a: a.astype(jnp.float64), params), t=0.7, s=0.0)


def test_tangent_warmup_is_traced_no_retrace():
    apply, params = tiny_mlp()
    batch = {"x0": jax.random.normal(jax.random.key(0), (8, 4))}
    opts = scm.SCMOptions(warmup_steps=10)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss_at(params, step, key):
        return scm.scm_loss(apply(params), apply(jax.lax.stop_gradient(params)), batch, key, step, opts)[1]["r"]

    rs = [float(loss_at(params, jnp.array(s), jax.random.key(s))) for s in (0, 5, 10, 20)]
    assert rs == [0.0, 0.5, 1.0, 1.0]


def test_tangent_normalisations():
    g = jnp.full((2, 4), 3.0)
    np.testing.assert_allclose(scm.normalize_tangent(g, "l2", 0.1), 3.0 / (6.0 + 0.1))
    np.testing.assert_allclose(scm.normalize_tangent(g, "rms", 0.1), 3.0 / (3.0 + 0.1))
    np.testing.assert_allclose(scm.normalize_tangent(g, "clip", 1.0), 1.0)
    np.testing.assert_allclose(scm.normalize_tangent(g, "none", 0.1), 3.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"tangent_c": -0.1}, "tangent_c"),
    ({"tangent_norm": "l1"}, "tangent_norm"),
    ({"jvp": "fwd"}, "jvp"),
    ({"guidance": (2.0, 1.0)}, "guidance"),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scm.SCMOptions(**kwargs)


def test_scd_without_teacher_raises():
    with pytest.raises(ValueError, match="teacher_fn"):
        scm.scm_loss(F_cons(S), F_cons(S), gaussian_batch(8), jax.random.key(0), jnp.array(0),
                     scm.SCMOptions(distill=True))


def test_scd_guidance_scale_is_sampled_and_fed_to_student():
    seen = {}

    def student(x_in, t, labels, guidance, dropout_key=None):
        seen["labels"], seen["guidance"] = labels, guidance
        return jnp.zeros_like(x_in), jnp.zeros(t.shape)

    cond_teacher = lambda x, t, labels: x * (labels[:, None] == 10)  # F_u = x_in, F_c = 0
    batch = {"x0": jnp.ones((64, 2)), "label": jnp.arange(64) % 10}
    opts = scm.SCMOptions(distill=True, guidance=(1.0, 2.0), num_classes=10)
    scm.scm_loss(student, student, batch, jax.random.key(0), jnp.array(0), opts, teacher_fn=cond_teacher)
    s = seen["guidance"]
    assert s.shape == (64,) and float(s.min()) >= 1.0 and float(s.max()) <= 2.0 and float(jnp.std(s)) > 0.1
    np.testing.assert_array_equal(seen["labels"], batch["label"])


def test_diffusion_loss_is_minimised_by_exact_velocity():
    batch = gaussian_batch(n=50_000, d=1)
    opts = DiffusionOptions(adaptive_weight=False)

    def loss_at(a):
        fn = lambda *args: (lambda F, w: (a * F, w))(*F_vel(S)(*args[:2]))
        return diffusion_loss(fn, batch, jax.random.key(0), jnp.array(0), opts)[0]

    assert abs(float(jax.grad(loss_at)(1.0))) < 0.05 * float(loss_at(1.0))
    assert float(loss_at(1.0)) < float(loss_at(0.8)) and float(loss_at(1.0)) < float(loss_at(1.2))
